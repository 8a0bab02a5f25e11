"""Logging set-up: text or one JSON object per line, with contact details masked.

Names, ids and reasons are fine to log; emails and phone numbers are not, so a filter masks any
that slip into a message (for example inside an upstream error text).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time

_EMAIL = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+\.[A-Za-z]{2,})")
# E.164 numbers (+6591234567, "+65 9123 4567") and bare 8-digit Singapore numbers; never a run
# of digits inside a word, so hex job ids, UUIDs and timestamps stay searchable.
_PHONE = re.compile(r"(?<![\w-])(?:\+\d[\d \-]{6,}|\d{6})(\d{2})(?![\w-])")


def mask_contact_details(text: str) -> str:
    text = _EMAIL.sub(r"\1***@\2", text)
    return _PHONE.sub(r"***\1", text)


class ContactDetailsFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_contact_details(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str = "INFO", fmt: str = "text", *, process: str = "") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContactDetailsFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        prefix = f"{process} " if process else ""
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)s {prefix}%(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Per-request lines from HTTP clients would drown the pipeline's own log, and urllib3's
    # name the full URL, whose query may hold a customer's email or phone number (contact
    # search). Huey logs three INFO lines per task; the pipeline logs what matters about each job.
    for noisy in ("httpx", "httpx2", "httpcore", "httpcore2", "urllib3", "openai", "huey"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))

"""Logging set-up: text or one JSON object per line, contact details masked, lines unforgeable.

Names, ids and reasons are fine to log; emails and phone numbers are not, so every message and
every traceback is masked (an upstream error text or an exception's message may carry them).

Logged values come from outside (an operator's reason, a customer's name, an upstream error), so
a newline in one must not start what looks like a log line of its own: control characters in a
message are escaped (`\\n`, `\\x1b`, `\\u2028`), and the lines of a traceback are indented, so
every line that starts at column 0 is a record of ours.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any, TextIO

_EMAIL = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+\.[A-Za-z]{2,})")
# Phone numbers as people and forms write them, the last two digits kept for support:
# Singapore's with or without the country code ("+65 9123 4567", "(+65) 9123-4567",
# "65.9123.4567", "6591234567", URL-encoded "%2B65%209123%204567"), local ones ("9123 4567"), any
# other international number written with its "+", and any bare run of 8 digits. Never digits
# inside a word, so hex job ids, UUIDs, dates and timestamps stay searchable.
_SEPARATOR = r"(?:[ .\-]|%20)"
_PHONE = re.compile(
    r"(?<![\w%.-])"
    r"(?:"
    rf"(?:\+|%2[Bb]|00)?\(?\+?65\)?{_SEPARATOR}?[3689]\d{{3}}{_SEPARATOR}?\d{{2}}"
    r"|\+\d[\d .\-()]{6,}"
    rf"|[3689]\d{{3}}{_SEPARATOR}\d{{2}}"
    r"|\d{6}"
    r")"
    r"(\d{2})(?![\w-])"
)
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED_CONTROLS = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def mask_contact_details(text: str) -> str:
    text = _EMAIL.sub(r"\1***@\2", text)
    return _PHONE.sub(r"***\1", text)


def escape_controls(text: str) -> str:
    """`text` on one line: every control character written as its escape."""
    return _CONTROL.sub(_escape_control, text)


def _escape_control(match: re.Match[str]) -> str:
    char = match.group()
    return _NAMED_CONTROLS.get(char) or (
        f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"
    )


class ContactDetailsFilter(logging.Filter):
    """Masks contact details in, and escapes control characters out of, every message."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = escape_controls(mask_contact_details(message))
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


class TextFormatter(logging.Formatter):
    def formatException(self, ei: Any) -> str:
        lines = mask_contact_details(super().formatException(ei)).splitlines()
        return "\n".join(f"    {escape_controls(line)}" for line in lines)


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
            entry["exception"] = mask_contact_details(self.formatException(record.exc_info))
        # json.dumps escapes C0 controls; U+2028/2029 too, for readers that split lines there.
        line = json.dumps(entry, ensure_ascii=False)
        return line.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def configure_logging(
    level: str = "INFO", fmt: str = "text", *, process: str = "", stream: TextIO | None = None
) -> None:
    """Every logger to `stream` (standard error by default), masked and escaped."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(ContactDetailsFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        prefix = f"{process} " if process else ""
        handler.setFormatter(
            TextFormatter(f"%(asctime)s %(levelname)s {prefix}%(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Per-request lines from HTTP clients would drown the pipeline's own log, and urllib3's
    # name the full URL, whose query may hold a customer's email or phone number (contact
    # search). Huey logs three INFO lines per task; the pipeline logs what matters about each job.
    for noisy in ("httpx", "httpx2", "httpcore", "httpcore2", "urllib3", "openai", "huey"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))

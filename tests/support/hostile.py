"""What the hostile-input tests share: the credentials that let a request reach the parsers,
and a fingerprint of the store that shows whether a request changed it."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from app.domain.webhook_auth import sign

SECRET = "hostile-webhook-secret"
FORM_TOKEN = "hostile-form-token"
ADMIN_TOKEN = "hostile-admin-token"


def webhook_headers(body: bytes) -> dict[str, str]:
    """A correct signature over exactly `body`."""
    timestamp = str(int(time.time()))
    return {
        "Content-Type": "application/json",
        "X-Chatwoot-Timestamp": timestamp,
        "X-Chatwoot-Signature": "sha256=" + sign(SECRET, timestamp, body),
    }


class StoreFingerprint:
    """What a request could have changed in the ledger: row counts and the latest update of
    every table but the buffered counters and heartbeats, and the whole of the small ones."""

    SMALL = ("ai_brokers", "rollout_state", "circuit_breakers")
    SKIP = ("metric_counters", "worker_heartbeats", "schema_meta")

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        self._tables = [
            (name, {row[1] for row in self._db.execute(f"PRAGMA table_info({name})")})
            for (name,) in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if name not in self.SKIP and not name.startswith("sqlite_")
        ]

    def take(self) -> tuple[Any, ...]:
        shot: list[Any] = []
        for name, columns in self._tables:
            if name in self.SMALL:
                shot.append(self._db.execute(f"SELECT * FROM {name} ORDER BY 1").fetchall())
                continue
            latest = "total(updated_at)" if "updated_at" in columns else "0"
            shot.append(self._db.execute(f"SELECT count(*), {latest} FROM {name}").fetchone())
        return tuple(shot)

"""The baseline for the receiver benchmark: a minimal Flask + gunicorn + Redis LPUSH endpoint.

    REDIS_URL=redis://127.0.0.1:6380/0 HOST=127.0.0.1 PORT=8001 WEB_CONCURRENCY=2 \\
        .venv/bin/python bench/minimal_endpoint.py

`POST /webhooks/chatwoot` LPUSHes the raw request body onto one Redis list and answers 200 with
a small JSON object; `GET /healthz` answers 200. Nothing else: no signature check, no JSON
parsing, no classification, no store, no counters, no logging per request.

It is served by the receiver's own gunicorn set-up: `MinimalServer` is
`app.web.server.ReceiverServer` with only `load()` changed, so the worker class (our gevent
worker, `CONNECTIONS_PER_PROCESS` connections per process), process count (`WEB_CONCURRENCY`),
keep-alive (5 s), timeouts, log level and the absent access log are exactly ours.
Each forked worker opens its own Redis pool.

`BENCH_WORKER_MODEL=gthread` serves it the way the receiver was served before its evented
worker (gunicorn gthread, 8 threads per process), so one run can compare both models.
"""

# ruff: noqa: E402 - the repository root goes on sys.path before the project imports.

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import os

GTHREAD = os.environ.get("BENCH_WORKER_MODEL") == "gthread"
GTHREAD_THREADS = 8
if not GTHREAD:
    from app.cli import prepare_gevent_process

    prepare_gevent_process()  # as `ai-broker web` does, before anything opens a socket

import redis
from flask import Flask, request
from flask.typing import ResponseReturnValue

from app.config import Settings
from app.web.server import ReceiverServer

LIST_KEY = "minimal-endpoint:webhooks"


def create_minimal_app(redis_url: str) -> Flask:
    app = Flask(__name__)
    client = redis.Redis.from_url(redis_url)

    @app.post("/webhooks/chatwoot")
    def webhook() -> ResponseReturnValue:
        client.lpush(LIST_KEY, request.get_data())
        return {"status": "accepted"}, 200

    @app.get("/healthz")
    def healthz() -> ResponseReturnValue:
        return {"status": "ok"}, 200

    return app


class MinimalServer(ReceiverServer):
    """The receiver's gunicorn configuration, serving the minimal app instead of ours."""

    def __init__(self, settings: Settings, redis_url: str) -> None:
        self._redis_url = redis_url
        super().__init__(settings)

    def load_config(self) -> None:
        super().load_config()
        if GTHREAD:
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("threads", GTHREAD_THREADS)

    def load(self) -> Flask:
        return create_minimal_app(self._redis_url)


def main() -> None:
    redis_url = os.environ["REDIS_URL"]
    settings = Settings.from_env()
    MinimalServer(settings, redis_url).run()


if __name__ == "__main__":
    main()

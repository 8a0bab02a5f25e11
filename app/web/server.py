"""`ai-broker web`: the receiver under gunicorn (WEB_CONCURRENCY processes)."""

from __future__ import annotations

import gc
import logging
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication
from gunicorn.workers.ggevent import GeventWorker

from app.bootstrap import build_services, prepare_store
from app.config import Settings

log = logging.getLogger(__name__)

# Connections each process holds at once. An idle or slow connection costs a greenlet, not a
# thread, so a client that opens sockets and sends nothing cannot starve the others.
CONNECTIONS_PER_PROCESS = 1000


class ReceiverWorker(GeventWorker):
    """gunicorn's gevent worker with the worker process's patching (`ai-broker web` applied it
    before anything was imported; gunicorn's own patch_all would also patch select)."""

    def patch(self) -> None:
        pass


class ReceiverServer(BaseApplication):
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        super().__init__()

    def load_config(self) -> None:
        settings = self._settings
        options: dict[str, Any] = {
            "bind": f"{settings.host}:{settings.port}",
            "workers": settings.web_concurrency,
            # Evented: every connection is a greenlet, so idle sockets, slow headers and slow
            # bodies wait without holding anything (with 8 threads per process, 40 idle
            # connections held /healthz for 8 s); a slow lead form or n8n forward likewise.
            "worker_class": ReceiverWorker,
            "worker_connections": CONNECTIONS_PER_PROCESS,
            "timeout": 30,
            "graceful_timeout": 10,
            "keepalive": 5,
            "accesslog": None,
            "loglevel": settings.log_level.lower(),
            "proc_name": "ai-broker-web",
            "post_worker_init": _freeze_startup_objects,
            # gunicorn 25+ opens a control socket at one path per user, shared by every
            # instance: one receiver stopping removed another's. Nothing here uses it.
            "control_socket_disable": True,
        }
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        # Imported here so each forked worker builds its own store connections and clients.
        from app.web import create_app

        return create_app(self._settings)


def _freeze_startup_objects(_worker: object) -> None:
    """Keep what the worker built at start-up (modules, the app, clients) out of the garbage
    collector's full passes, which otherwise walk all of it every so often in the middle of a
    request: a pause of tens of milliseconds in the acknowledgement tail."""
    gc.freeze()


def run_web(settings: Settings) -> None:
    settings.require_webhook_auth()
    settings.require_lead_form_auth()
    if not settings.form_token:
        log.warning(
            "the lead form is open to anyone (ALLOW_OPEN_LEAD_FORM=true): set FORM_TOKEN "
            "before this receiver faces the internet"
        )
    services = build_services(settings)
    prepare_store(services.store)
    services.store.close()
    log.info(
        "receiver on http://%s:%s (%d processes)",
        settings.host,
        settings.port,
        settings.web_concurrency,
    )
    ReceiverServer(settings).run()

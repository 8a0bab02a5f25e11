"""Webhook delivery: signed, from background threads, with Chatwoot's agent-bot retry rules."""

from __future__ import annotations

import itertools
import json
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app.sandbox.chatwoot.records import Webhook
from app.sandbox.chatwoot.webhook_http import WebhookHttp, WebhookHttpError
from app.sandbox.chatwoot.wire import iso, webhook_headers

logger = logging.getLogger(__name__)

RETRYABLE_AGENT_BOT_STATUSES = frozenset({429, 500})
AGENT_BOT_ATTEMPTS = 3
CLOSE_WAIT_S = 1.0


@dataclass
class WebhookDelivery:
    """One event for one webhook; `attempt` grows across agent-bot retries, the id does not."""

    webhook: Webhook
    event: str
    body: bytes
    delivery_id: str
    generation: int
    conversation_id: int | None
    message_id: int | None
    attempt: int = 1


class WebhookDispatcher:
    """Sends webhooks from background threads, as Chatwoot's jobs do, and records every attempt.

    Agent bots get `AgentBots::WebhookJob` semantics: a 429 or 500 is retried `retry_wait_s` later,
    3 attempts in all, with the same delivery id and a fresh timestamp and signature. Anything else,
    including timeouts and refused connections, is final. Account webhooks are tried once.
    """

    def __init__(
        self,
        *,
        timeout_s: float,
        retry_wait_s: float,
        workers: int,
        on_final_failure: Callable[[WebhookDelivery], None],
    ) -> None:
        self._timeout_s = timeout_s
        self._retry_wait_s = retry_wait_s
        self._worker_count = workers
        self._on_final_failure = on_final_failure
        self._queue: queue.SimpleQueue[WebhookDelivery | None] = queue.SimpleQueue()
        self._cond = threading.Condition()
        self._records: list[dict[str, Any]] = []
        self._outstanding = 0
        self._generation = 0
        self._retry_timers: dict[int, threading.Timer] = {}
        self._timer_ids = itertools.count(1)
        self._workers: list[threading.Thread] = []

    def enqueue(self, webhook: Webhook, event: str, body: bytes, payload: dict[str, Any]) -> None:
        """Queue one delivery; returns at once (the API answers before the webhook is sent).

        `payload` is the event `body` encodes; it is only read here, never kept.
        """
        conversation_id, message_id = _delivery_subjects(event, payload)
        with self._cond:
            self._start_workers()
            delivery = WebhookDelivery(
                webhook=webhook,
                event=event,
                body=body,
                delivery_id=str(uuid.uuid4()),
                generation=self._generation,
                conversation_id=conversation_id,
                message_id=message_id,
            )
            self._outstanding += 1
        self._queue.put(delivery)

    def records(self) -> list[dict[str, Any]]:
        """Every attempt; `payload` is the body sent, decoded afresh for each caller."""
        with self._cond:
            records = list(self._records)
        # Decoded here rather than on every delivery: most runs never read their records.
        return [record | {"payload": json.loads(record["payload"])} for record in records]

    def wait_idle(self, timeout_s: float) -> bool:
        """Block until nothing is queued, in flight or waiting to be retried."""
        with self._cond:
            return self._cond.wait_for(lambda: self._outstanding == 0, timeout=timeout_s)

    def reset(self) -> None:
        """Forget the records and drop queued deliveries and pending retries."""
        with self._cond:
            self._drop_pending()
            self._records.clear()

    def close(self) -> None:
        """Drop pending work and stop the workers (records stay); a later enqueue restarts."""
        with self._cond:
            self._drop_pending()
            workers, self._workers = self._workers, []
        for _ in workers:
            self._queue.put(None)
        # A worker still waiting on a slow receiver is a daemon and will drop its result as stale;
        # each worker closes its own connections when it stops.
        deadline = time.monotonic() + CLOSE_WAIT_S
        for worker in workers:
            worker.join(timeout=max(0.0, deadline - time.monotonic()))

    def _drop_pending(self) -> None:
        """Make queued and in-flight deliveries stale and cancel retries (caller holds _cond)."""
        self._generation += 1
        for timer in self._retry_timers.values():
            timer.cancel()
        self._outstanding -= len(self._retry_timers)
        self._retry_timers.clear()
        self._cond.notify_all()

    def _start_workers(self) -> None:
        if self._workers:
            return
        self._workers = [
            threading.Thread(target=self._work, name=f"chatwoot-webhooks-{n}", daemon=True)
            for n in range(self._worker_count)
        ]
        for worker in self._workers:
            worker.start()

    def _work(self) -> None:
        transport = WebhookHttp(self._timeout_s)
        try:
            while (delivery := self._queue.get()) is not None:
                retrying = False
                try:
                    retrying = self._attempt(delivery, transport)
                except Exception:
                    logger.exception("webhook delivery %s crashed", delivery.delivery_id)
                finally:
                    if not retrying:
                        self._finish()
        finally:
            transport.close()

    def _finish(self) -> None:
        with self._cond:
            self._outstanding -= 1
            self._cond.notify_all()

    def _attempt(self, delivery: WebhookDelivery, transport: WebhookHttp) -> bool:
        """Try one delivery; True when a retry was scheduled (the delivery is not finished)."""
        with self._cond:
            if delivery.generation != self._generation:
                return False
        timestamp = int(time.time())
        headers = webhook_headers(
            delivery.delivery_id, delivery.body, delivery.webhook.secret, timestamp
        )
        started = time.monotonic()
        status: int | None = None
        error: str | None = None
        try:
            status = transport.post(delivery.webhook.url, delivery.body, headers)
        except (OSError, WebhookHttpError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        self._record(delivery, status, error, (time.monotonic() - started) * 1000)
        if status is not None and 200 <= status < 300:
            return False
        if (
            delivery.webhook.kind == "agent_bot"
            and status in RETRYABLE_AGENT_BOT_STATUSES
            and delivery.attempt < AGENT_BOT_ATTEMPTS
        ):
            self._schedule_retry(delivery)
            return True
        logger.info(
            "webhook %s %s to %s failed for good: %s",
            delivery.event,
            delivery.delivery_id,
            delivery.webhook.url,
            status or error,
        )
        if delivery.webhook.kind == "agent_bot":
            self._on_final_failure(delivery)
        return False

    def _record(
        self, delivery: WebhookDelivery, status: int | None, error: str | None, duration_ms: float
    ) -> None:
        record = {
            "url": delivery.webhook.url,
            "kind": delivery.webhook.kind,
            "event": delivery.event,
            "delivery_id": delivery.delivery_id,
            "attempt": delivery.attempt,
            "status": status,
            "error": error,
            "duration_ms": round(duration_ms, 1),
            "at": iso(time.time()),
            "conversation_id": delivery.conversation_id,
            "message_id": delivery.message_id,
            "payload": delivery.body,
        }
        with self._cond:
            if delivery.generation == self._generation:
                self._records.append(record)

    def _schedule_retry(self, delivery: WebhookDelivery) -> None:
        delivery.attempt += 1
        with self._cond:
            timer_id = next(self._timer_ids)
            timer = threading.Timer(self._retry_wait_s, self._requeue, args=(timer_id, delivery))
            timer.daemon = True
            self._retry_timers[timer_id] = timer
        timer.start()

    def _requeue(self, timer_id: int, delivery: WebhookDelivery) -> None:
        with self._cond:
            # A reset cancels timers and settles their count; one that fired anyway must not run.
            if self._retry_timers.pop(timer_id, None) is None:
                return
        self._queue.put(delivery)


def _delivery_subjects(event: str, payload: dict[str, Any]) -> tuple[int | None, int | None]:
    """(conversation display id, message id) of a webhook body, for the delivery records."""
    if event.startswith("message_"):
        return payload.get("conversation", {}).get("id"), payload.get("id")
    if event.startswith("conversation_typing"):
        return payload.get("conversation", {}).get("id"), None
    if event.startswith("conversation_"):
        return payload.get("id"), None
    return None, None

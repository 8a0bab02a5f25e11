"""A traffic generator: scripted customers submitting the lead form and chatting, concurrently.

It drives the Chatwoot sandbox (in-process or over HTTP) the way real leads drive Chatwoot: a
conversation starts from the website's lead form (or directly in the sandbox when no form URL is
given), then the customer writes each scripted turn with a human-looking pause between turns.
The demo runs it to make the console move; load tests run it to measure the pipeline.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from app.sandbox.chatwoot import ChatwootApiError
from app.sandbox.scripts import SCRIPTS, ConversationScript

logger = logging.getLogger(__name__)

MAX_ERROR_DETAILS = 50


class ChatwootDriver(Protocol):
    """What the generator needs from Chatwoot: `ChatwootSandbox` and its HTTP control both fit."""

    def create_lead_conversation(
        self, name: str, email: str, phone: str
    ) -> tuple[dict[str, Any], dict[str, Any]]: ...

    def customer_message(self, conversation_id: int, content: str) -> dict[str, Any]: ...


@dataclass
class TrafficReport:
    """What a run did. `errors` counts failed steps; `error_details` keeps the first few."""

    conversations_started: int = 0
    messages_sent: int = 0
    errors: int = 0
    error_details: list[str] = field(default_factory=list)
    conversation_ids: list[int] = field(default_factory=list)
    duration_s: float = 0.0


@dataclass(frozen=True)
class _Visit:
    """One customer's run, drawn up front so that a seed reproduces the whole run."""

    number: int
    script: ConversationScript
    email: str
    phone: str
    pauses_s: tuple[float, ...]


class TrafficGenerator:
    """Plays scripted conversations against Chatwoot, several at a time."""

    def __init__(
        self,
        chatwoot: ChatwootDriver,
        *,
        lead_form_url: str | None = None,
        form_token: str | None = None,
        rng_seed: int | None = None,
        max_concurrency: int = 32,
        http_timeout_s: float = 30.0,
    ) -> None:
        self.chatwoot = chatwoot
        self.lead_form_url = lead_form_url
        self.form_token = form_token
        self.max_concurrency = max_concurrency
        self.http_timeout_s = http_timeout_s
        self._rng = random.Random(rng_seed)
        self._stop = threading.Event()
        self._report_lock = threading.Lock()

    def stop(self) -> None:
        """Ask a running `run()` to finish: no new turns or conversations start."""
        self._stop.set()

    def run(
        self,
        conversations: int,
        *,
        pace_s: tuple[float, float] = (2.0, 8.0),
        stop_event: threading.Event | None = None,
    ) -> TrafficReport:
        """Play `conversations` scripted customers concurrently and wait for them to finish.

        `pace_s` bounds the pause before each customer turn. Setting `stop_event` (or calling
        `stop()`) ends the run early; turns already sent stay sent.
        """
        stop = stop_event or self._stop
        visits = self._plan(conversations, pace_s)
        report = TrafficReport()
        started = time.monotonic()
        workers = max(1, min(conversations, self.max_concurrency))
        with (
            httpx.Client(timeout=self.http_timeout_s) as http,
            ThreadPoolExecutor(max_workers=workers, thread_name_prefix="traffic") as pool,
        ):
            futures = [pool.submit(self._play, visit, http, report, stop) for visit in visits]
            for future in futures:
                future.result()
        report.duration_s = round(time.monotonic() - started, 3)
        logger.info(
            "traffic run done: %d conversations, %d messages, %d errors in %.1fs",
            report.conversations_started,
            report.messages_sent,
            report.errors,
            report.duration_s,
        )
        return report

    def _plan(self, conversations: int, pace_s: tuple[float, float]) -> list[_Visit]:
        low, high = pace_s
        if low < 0 or high < low:
            raise ValueError(f"pace_s must be (low, high) with 0 <= low <= high, got {pace_s!r}")
        run_tag = f"{self._rng.getrandbits(24):06x}"
        order = self._rng.sample(SCRIPTS, len(SCRIPTS))  # every script once before any repeats
        visits = []
        for number in range(conversations):
            script = order[number % len(order)]
            local, _, domain = script.email.partition("@")
            visits.append(
                _Visit(
                    number=number,
                    script=script,
                    # Unique per visit, or the lead form would reuse one contact's conversation.
                    email=f"{local}+{run_tag}{number}@{domain}",
                    phone=f"+65{self._rng.choice('89')}{self._rng.randrange(10**7):07d}",
                    pauses_s=tuple(self._rng.uniform(low, high) for _ in script.turns),
                )
            )
        return visits

    def _play(
        self, visit: _Visit, http: httpx.Client, report: TrafficReport, stop: threading.Event
    ) -> None:
        if stop.is_set():
            return
        try:
            conversation_id = self._start(visit, http)
        except (httpx.HTTPError, ChatwootApiError, KeyError, ValueError) as exc:
            self._failed(
                report, f"visit {visit.number} ({visit.script.key}) could not start: {exc}"
            )
            return
        with self._report_lock:
            report.conversations_started += 1
            report.conversation_ids.append(conversation_id)
        logger.debug(
            "visit %d: %s in conversation %s", visit.number, visit.script.key, conversation_id
        )
        for turn, pause in zip(visit.script.turns, visit.pauses_s, strict=True):
            if stop.wait(pause):
                return
            try:
                self.chatwoot.customer_message(conversation_id, turn)
            except (httpx.HTTPError, ChatwootApiError) as exc:
                self._failed(report, f"conversation {conversation_id}: message failed: {exc}")
                continue
            with self._report_lock:
                report.messages_sent += 1

    def _start(self, visit: _Visit, http: httpx.Client) -> int:
        """Open the conversation through the lead form when there is one, else in the sandbox."""
        script = visit.script
        if self.lead_form_url is None:
            _, conversation = self.chatwoot.create_lead_conversation(
                script.name, visit.email, visit.phone
            )
            return int(conversation["id"])
        headers = {"Authorization": f"Bearer {self.form_token}"} if self.form_token else {}
        response = http.post(
            self.lead_form_url,
            json=script.lead_form(email=visit.email, phone=visit.phone),
            headers=headers,
        )
        if response.status_code != 201:
            raise ValueError(f"lead form answered {response.status_code}: {response.text[:200]}")
        return int(response.json()["conversation_id"])

    def _failed(self, report: TrafficReport, detail: str) -> None:
        logger.warning("traffic: %s", detail)
        with self._report_lock:
            report.errors += 1
            if len(report.error_details) < MAX_ERROR_DETAILS:
                report.error_details.append(detail)

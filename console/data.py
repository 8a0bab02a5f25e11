"""The console's one data-access module: everything a page shows or changes goes through here.

- `st.cache_resource` holds one backend per configuration: the Services (store, queue, rollout
  and the SQL aggregates, `Analytics`: SQLite's or PostgreSQL's, whichever store is configured).
  Store calls run on the backend's own small thread pool: Streamlit starts a new thread for every
  script run, and the SQLite aggregates keep one connection per thread, so calling them from
  script threads would open a connection per rerun.
- `st.cache_data(ttl=...)` holds the aggregates (charts, tables) for a few seconds; every action
  clears them, so an operator sees the effect of their own change at once.
- Actions take the operator's identity and go through the operations service
  (app/services/operations.py), the same one the admin API and the command line use, so each
  leaves the same audit row whoever asked for it.

Pure rules (alerts, filters) live here too, as plain functions the tests call directly.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal, TypeVar

import redis
import streamlit as st
from streamlit import config

from app.adapters.redis_intake import Claimed, RedisIntake
from app.bootstrap import Services, build_services, prepare_store
from app.config import Settings
from app.domain.circuit import Circuit, CircuitPosition
from app.domain.health import (
    BACKLOG_WARNING,
    PipelineHealth,
    ThresholdBreach,
    guard_verdict,
    recommendations,
    unguarded_breaches,
)
from app.domain.jobs import JobState
from app.domain.rollout import RolloutChange, RolloutState, describe
from app.logs import configure_logging
from app.services.guard import HEARTBEAT_STALE_S, pipeline_health
from app.services.operations import ActionResult
from app.services.rollout import RollbackResult
from app.store.analytics import (
    Analytics,
    BrokerReplies,
    Buckets,
    ComparisonFilter,
    ComparisonPage,
    ComparisonSummary,
    JobDetail,
    JobFilter,
    JobPage,
    LatencyBucket,
    N8nShare,
    OperatorAction,
    OutcomeBucket,
    PercentageStep,
    TrafficBucket,
    WindowStats,
    WorkerStatus,
    WorkloadSample,
)
from app.store.models import AuditEntry, Comparison, Verdict

log = logging.getLogger(__name__)

REFRESH_S = 10  # the Overview's live fragment
AGGREGATE_TTL_S = 10
STATUS_TTL_S = 2
EXPORT_TTL_S = 60
DB_THREADS = 4
JOBS_EXPORT_LIMIT = 10_000
RETRYABLE_STATES = frozenset({JobState.FAILED.value, JobState.CANCELLED.value})
CANCELLABLE_STATES = frozenset({JobState.QUEUED.value, JobState.WAITING.value})
PARKED_SHOWN = 50  # the oldest parked intake messages the Overview lists
PROBLEM_MAX_CHARS = 200
# Receipt times outside this range cannot come from a receiver (and would break the clock).
_PLAUSIBLE_RECEIPT = (1_000_000_000.0, 4_102_444_800.0)  # 2001 to 2100

T = TypeVar("T")


@dataclass(frozen=True)
class Window:
    label: str
    span_s: int
    bucket_s: int


WINDOWS: tuple[Window, ...] = (
    Window("1 h", 3600, 60),
    Window("6 h", 6 * 3600, 5 * 60),
    Window("24 h", 24 * 3600, 15 * 60),
    Window("7 days", 7 * 86400, 2 * 3600),
)
DEFAULT_WINDOW = WINDOWS[2]


def window_by_label(label: str) -> Window:
    return next((w for w in WINDOWS if w.label == label), DEFAULT_WINDOW)


# -- the backend (cached resources) ------------------------------------------------------------
class Backend:
    """One configuration's store, queue, rollout service and aggregates, and the threads that
    talk to them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pool = ThreadPoolExecutor(DB_THREADS, thread_name_prefix="console-db")
        self.services: Services = self._pool.submit(self._build, settings).result()
        self.analytics: Analytics = self.services.analytics

    @staticmethod
    def _build(settings: Settings) -> Services:
        services = build_services(settings)
        try:
            prepare_store(services.store)
        except Exception:
            # The next run builds a new backend: this one's connections must not linger.
            services.store.close()
            raise
        return services

    def run(self, call: Callable[[], T]) -> T:
        return self._pool.submit(call).result()

    def close(self) -> None:
        self._pool.submit(self.analytics.close).result()
        self._pool.submit(self.services.store.close).result()
        self._pool.shutdown(wait=True)


def settings() -> Settings:
    """Read on every run (cheap): tests and operators may change the environment."""
    return Settings.from_env()


def start(current: Settings) -> None:
    """Once per process: the log set-up of the other ai-broker processes."""
    if not config.get_option("global.appTest"):  # under AppTest, pytest owns the logging
        _configure_logging(current.log_level, current.log_format)


@st.cache_resource(show_spinner=False)
def _configure_logging(level: str, fmt: str) -> bool:
    configure_logging(level, fmt, process="console")
    return True


def backend() -> Backend:
    current = settings()
    return _backend(repr(current), current)


def _close_backend(value: Backend) -> None:
    value.close()


@st.cache_resource(show_spinner=False, on_release=_close_backend)
def _backend(key: str, _settings: Settings) -> Backend:
    log.info("opening the store: %s", _settings.store_description)
    return Backend(_settings)


def key() -> str:
    """The cache key of this configuration's aggregates: every cached function takes it first,
    so two stores (tests, a demo next to production) never share cached figures."""
    return repr(settings())


def _analytics() -> tuple[Backend, Analytics]:
    wired = backend()
    return wired, wired.analytics


def invalidate() -> None:
    """After an action: drop the cached aggregates so every page shows the change."""
    st.cache_data.clear()


# -- status (Overview, Rollout) ----------------------------------------------------------------
@dataclass(frozen=True)
class QueueDepth:
    pending: int | None  # Huey: tasks ready to run, plus messages waiting in the intake buffer
    scheduled: int | None  # Huey: delayed tasks (replies waiting for their delay, retries)
    error: str | None = None


@dataclass(frozen=True)
class ParkedMessage:
    """A customer message a worker parked, as an operator may see it: what identifies it,
    never its content or the customer's contact details. `problem` says why an entry cannot be
    read; its ids and time are then unknown."""

    conversation_id: int | None
    message_id: int | None
    received_at: float | None
    size: int  # bytes: the entry's header and the webhook body
    problem: str | None = None


@dataclass(frozen=True)
class ParkedIntake:
    """What the Redis intake buffer holds for an operator (only when REDIS_URL is set)."""

    count: int | None  # None: Redis did not answer
    oldest: tuple[ParkedMessage, ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class Status:
    """What /api/admin/migration-status reports, for the console."""

    now: float
    rollout: RolloutState
    description: str
    recommendations: tuple[str, ...]
    n8n_configured: bool
    circuit: Circuit | None
    health: PipelineHealth
    guard_verdict: str | None
    depth: QueueDepth
    states: dict[str, int]
    overdue: int
    workers: tuple[WorkerStatus, ...]
    parked: ParkedIntake | None = None  # None: no intake buffer (no REDIS_URL)

    @property
    def alive_workers(self) -> tuple[WorkerStatus, ...]:
        return tuple(w for w in self.workers if self.now - w.seen_at <= HEARTBEAT_STALE_S)

    @property
    def unsent(self) -> int:
        return sum(self.states.get(s, 0) for s in ("queued", "waiting", "running"))


def status() -> Status:
    """Cached for two seconds only (the sidebar and the page share it); every action clears it,
    so the rollout never looks stale."""
    return _cached_status(key())


@st.cache_data(ttl=STATUS_TTL_S, show_spinner=False)
def _cached_status(key: str) -> Status:
    wired = backend()
    return wired.run(lambda: _status(wired))


def _status(wired: Backend) -> Status:
    services = wired.services
    now = time.time()
    state = services.rollout.current(fresh=True)
    configured = services.rollout.n8n_configured
    health = pipeline_health(services.store, window_s=state.guard.window_s, now=now)
    raw: dict[str, int] = {}
    try:
        raw = services.queue.depth()
        # Messages a receiver buffered in Redis are waiting for a worker just like ready tasks.
        depth = QueueDepth(raw["pending"] + raw.get("intake", 0), raw.get("scheduled"))
    except Exception as exc:  # noqa: BLE001 - the rest of the status still helps
        log.warning("queue depth unavailable: %s", exc)
        depth = QueueDepth(None, None, error=f"{type(exc).__name__}: {exc}")
    return Status(
        now=now,
        rollout=state,
        description=describe(state, n8n_configured=configured),
        recommendations=tuple(recommendations(state, health, n8n_configured=configured)),
        n8n_configured=configured,
        circuit=services.forwarder.breaker.state() if services.forwarder else None,
        health=health,
        guard_verdict=guard_verdict(state.guard, health) if state.percentage > 0 else None,
        depth=depth,
        states=wired.analytics.state_counts(),
        overdue=wired.analytics.overdue(now=now),
        workers=tuple(wired.analytics.workers()),
        parked=None
        if services.intake_buffer is None
        else parked_intake(services.intake_buffer, count=raw.get("intake_parked")),
    )


def parked_intake(
    buffer: RedisIntake, *, count: int | None = None, limit: int = PARKED_SHOWN
) -> ParkedIntake:
    """The parked count (read here unless the queue depth already gave it) and the oldest
    entries; a Redis failure becomes a message, since the rest of the status still helps."""
    try:
        if count is None:
            count = buffer.rejected()
        oldest = buffer.parked(limit) if count else []
    except redis.RedisError as exc:
        log.warning("parked intake messages unavailable: %s", exc)
        return ParkedIntake(None, error=f"{type(exc).__name__}: {exc}")
    return ParkedIntake(count, tuple(parked_message(item) for item in oldest))


def parked_message(item: Claimed) -> ParkedMessage:
    """Only the identifying fields of a parked entry. A header that decodes but holds values no
    receiver writes (another version, a hand-edited entry) is listed as unreadable too."""
    size = len(item.raw)
    if item.entry is None:
        return ParkedMessage(None, None, None, size, _problem(item.error or "unreadable entry"))
    message, received_at = item.entry.message, item.entry.received_at
    ids = (message.conversation_id, message.message_id)
    if not all(_is_id(value) for value in ids) or not _plausible_receipt(received_at):
        return ParkedMessage(None, None, None, size, "unreadable entry: unexpected header values")
    return ParkedMessage(message.conversation_id, message.message_id, received_at, size)


# -- alerts (pure) -----------------------------------------------------------------------------
AlertLevel = Literal["critical", "warning", "info"]
_LEVEL_ORDER: dict[AlertLevel, int] = {"critical": 0, "warning": 1, "info": 2}


@dataclass(frozen=True)
class Alert:
    level: AlertLevel
    title: str
    detail: str


def alerts(current: Status, brokers: Sequence[BrokerRow] = ()) -> list[Alert]:
    """What needs an operator now, most urgent first."""
    found: list[Alert] = []
    if current.guard_verdict:
        found.append(
            Alert(
                "critical",
                "The rollback guard is about to trip",
                f"{current.guard_verdict}. The worker rolls back to n8n within seconds unless "
                "this recovers.",
            )
        )
    if not current.alive_workers:
        if current.unsent or current.overdue:
            found.append(
                Alert(
                    "critical",
                    "No worker is alive and replies are waiting",
                    f"{current.unsent:,} replies are queued, waiting or running and nothing "
                    "processes them: start `ai-broker worker`.",
                )
            )
        else:
            found.append(
                Alert(
                    "warning",
                    "No worker is alive",
                    "Nothing would answer a new message: start `ai-broker worker`.",
                )
            )
    found.extend(parked_alerts(current.parked))
    if current.overdue > BACKLOG_WARNING:
        found.append(
            Alert(
                "warning",
                f"{current.overdue:,} replies are overdue",
                "They are past their reply time by more than 30 s: add workers or raise "
                "WORKER_CONCURRENCY before increasing traffic.",
            )
        )
    if current.circuit is not None and current.circuit.position is not CircuitPosition.CLOSED:
        found.append(
            Alert(
                "warning",
                f"The n8n circuit is {current.circuit.position.value.replace('_', '-')}",
                f"{current.circuit.consecutive_failures} forwards failed in a row: messages "
                "meant for n8n are answered by the new pipeline until n8n recovers.",
            )
        )
    if current.rollout.queue_paused:
        found.append(
            Alert(
                "warning",
                "Reply processing is paused",
                f"Paused by {current.rollout.updated_by}. Customers get no reply from the new "
                "pipeline until it is resumed (Jobs page).",
            )
        )
    health = current.health
    breaches = unguarded_breaches(current.rollout.guard, health)
    found.extend(_breach_alert(breach) for breach in breaches)
    worrying = current.rollout.guard.max_failure_rate / 2
    if (
        health.failed >= 3
        and health.failure_rate >= worrying
        and not current.guard_verdict
        and not any(b.metric == "failure" for b in breaches)
    ):
        found.append(
            Alert(
                "warning",
                f"Failure rate {health.failure_rate:.1%} in the last "
                f"{health.window_s / 60:.0f} min",
                f"{health.failed} of {health.finished} replies failed: see failed jobs on the "
                "Jobs page.",
            )
        )
    full = [b for b in brokers if b.at_capacity]
    if full:
        names = ", ".join(b.name for b in full)
        found.append(
            Alert(
                "info",
                f"At capacity: {names}",
                "New conversations go to the other brokers until a slot frees up.",
            )
        )
    return sorted(found, key=lambda alert: _LEVEL_ORDER[alert.level])  # stable: rules' order


_BREACH_ADVICE = {
    "failure": "see failed jobs on the Jobs page before routing more traffic.",
    "fallback": "the LLM is failing or refusing; check OPENAI_API_KEY and the provider's status "
    "before routing more traffic.",
}


def _breach_alert(breach: ThresholdBreach) -> Alert:
    return Alert(
        "warning",
        f"{breach.metric.capitalize()} rate {breach.rate:.0%} over {breach.replies:,} "
        f"repl{'y' if breach.replies == 1 else 'ies'}",
        f"Above the guard's {breach.threshold:.0%} threshold, but {breach.reason}: "
        + _BREACH_ADVICE[breach.metric],
    )


def parked_alerts(parked: ParkedIntake | None) -> list[Alert]:
    """Parked intake messages get no reply until an operator acts, hence critical. Nothing
    at all without an intake buffer."""
    if parked is None:
        return []
    if parked.error is not None:
        return [
            Alert(
                "warning",
                "The intake buffer cannot be read",
                f"Redis did not answer ({parked.error}), so parked customer messages cannot be "
                "counted. Check that Redis is up and REDIS_URL is right; see the runbook "
                "(docs/runbook.md, Intake buffer).",
            )
        ]
    if not parked.count:
        return []
    many = parked.count != 1
    return [
        Alert(
            "critical",
            f"{parked.count:,} customer message{'s are' if many else ' is'} parked in the "
            "intake buffer",
            f"A worker could not record {'them' if many else 'it'} (a bug, or receivers and "
            "workers of different versions during a deploy), so "
            f"{'they get' if many else 'it gets'} no reply. Find the cause in the worker log "
            "(`intake: … parked for an operator`) as the runbook says (docs/runbook.md, Intake "
            "buffer); once the fixed workers run, use **Put parked messages back** below (or "
            "`ai-broker intake replay`).",
        )
    ]


# -- charts and tiles (cached aggregates) ------------------------------------------------------
def buckets(window: Window) -> Buckets:
    return Buckets.ending_at(time.time(), span_s=window.span_s, size_s=window.bucket_s)


@st.cache_data(ttl=AGGREGATE_TTL_S, show_spinner=False)
def outcomes(key: str, window: Window) -> list[OutcomeBucket]:
    wired, analytics = _analytics()
    return wired.run(lambda: analytics.outcomes(buckets(window)))


@st.cache_data(ttl=AGGREGATE_TTL_S, show_spinner=False)
def latencies(key: str, window: Window) -> list[LatencyBucket]:
    wired, analytics = _analytics()
    return wired.run(lambda: analytics.latencies(buckets(window)))


@st.cache_data(ttl=AGGREGATE_TTL_S, show_spinner=False)
def window_stats(key: str, span_s: int) -> tuple[WindowStats, WindowStats]:
    """This window and the one before it (for the tiles' deltas)."""
    wired, analytics = _analytics()
    now = time.time()
    return wired.run(
        lambda: (
            analytics.window_stats(since=now - span_s, until=now),
            analytics.window_stats(since=now - 2 * span_s, until=now - span_s),
        )
    )


@st.cache_data(ttl=AGGREGATE_TTL_S, show_spinner=False)
def n8n_share(key: str, span_s: int) -> tuple[N8nShare, WindowStats]:
    """n8n's messages in the window, and the new pipeline's replies beside them."""
    wired, analytics = _analytics()
    now = time.time()
    return wired.run(
        lambda: (
            analytics.n8n_share(since=now - span_s, until=now),
            analytics.window_stats(since=now - span_s, until=now),
        )
    )


@st.cache_data(ttl=AGGREGATE_TTL_S, show_spinner=False)
def traffic(key: str, window: Window) -> tuple[list[TrafficBucket], list[PercentageStep]]:
    wired, analytics = _analytics()
    cut = buckets(window)
    return wired.run(lambda: (analytics.traffic(cut), analytics.percentage_steps(since=cut.start)))


# -- brokers -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class BrokerRow:
    id: str
    name: str
    title: str
    persona_type: str
    is_active: bool
    workload: int
    capacity: int
    conversations: int  # all time
    active_conversations: int  # the bot answers them
    handed_off: int
    with_human: int
    messages_handled: int  # all time
    handoffs: int  # all time
    replies: int  # in the window
    window_handoffs: int
    failures: int
    fallbacks: int

    @property
    def load(self) -> float:
        return self.workload / self.capacity if self.capacity else 0.0

    @property
    def at_capacity(self) -> bool:
        return self.workload >= self.capacity

    @property
    def handoff_rate(self) -> float | None:
        return self.handoffs / self.messages_handled if self.messages_handled else None


@st.cache_data(ttl=AGGREGATE_TTL_S, show_spinner=False)
def broker_rows(key: str, span_s: int) -> list[BrokerRow]:
    wired, analytics = _analytics()
    now = time.time()

    def load() -> list[BrokerRow]:
        brokers = wired.services.store.list_brokers()
        activity = {
            a.broker_id: a for a in analytics.broker_activity(since=now - span_s, until=now)
        }
        talks = {c.broker_id: c for c in analytics.broker_conversations()}
        rows = []
        for broker in brokers:
            act, conv = activity.get(broker.id), talks.get(broker.id)
            rows.append(
                BrokerRow(
                    id=broker.id,
                    name=broker.name,
                    title=broker.title,
                    persona_type=broker.persona_type,
                    is_active=broker.is_active,
                    workload=broker.current_workload,
                    capacity=broker.max_concurrent_chats,
                    conversations=broker.total_conversations,
                    active_conversations=conv.bot if conv else 0,
                    handed_off=conv.handed_off if conv else 0,
                    with_human=conv.human if conv else 0,
                    messages_handled=broker.messages_handled,
                    handoffs=broker.handoffs,
                    replies=act.replies if act else 0,
                    window_handoffs=act.handoffs if act else 0,
                    failures=act.failures if act else 0,
                    fallbacks=act.fallbacks if act else 0,
                )
            )
        return rows

    return wired.run(load)


@st.cache_data(ttl=AGGREGATE_TTL_S, show_spinner=False)
def workload_history(key: str, span_s: int) -> list[WorkloadSample]:
    wired, analytics = _analytics()
    since = time.time() - span_s
    return wired.run(lambda: analytics.workload_history(since=since))


@st.cache_data(ttl=AGGREGATE_TTL_S, show_spinner=False)
def broker_replies(key: str, window: Window) -> list[BrokerReplies]:
    wired, analytics = _analytics()
    return wired.run(lambda: analytics.broker_replies(buckets(window)))


def broker_names() -> dict[str, str]:
    wired = backend()
    return {b.id: b.name for b in wired.run(wired.services.store.list_brokers)}


# -- comparisons -------------------------------------------------------------------------------
@st.cache_data(ttl=AGGREGATE_TTL_S, show_spinner=False)
def comparison_page(key: str, query: ComparisonFilter, page: int, size: int) -> ComparisonPage:
    wired, analytics = _analytics()
    return wired.run(lambda: analytics.comparisons(query, offset=(page - 1) * size, limit=size))


@st.cache_data(ttl=AGGREGATE_TTL_S, show_spinner=False)
def comparison_summary(key: str, query: ComparisonFilter) -> ComparisonSummary:
    wired, analytics = _analytics()
    return wired.run(lambda: analytics.comparison_summary(query))


@st.cache_data(ttl=AGGREGATE_TTL_S, show_spinner=False)
def comparison_bounds(key: str) -> tuple[float, float] | None:
    wired, analytics = _analytics()
    return wired.run(analytics.comparison_bounds)


@st.cache_data(ttl=EXPORT_TTL_S, show_spinner=False)
def comparisons_csv(key: str, query: ComparisonFilter) -> bytes:
    wired, analytics = _analytics()
    rows = wired.run(lambda: analytics.export_comparisons(query))
    return comparisons_to_csv(rows)


def comparisons_to_csv(rows: Sequence[Comparison]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        [
            "id",
            "received_at_utc",
            "conversation_id",
            "broker_id",
            "customer_message",
            "n8n_reply",
            "n8n_latency_ms",
            "new_reply",
            "new_latency_ms",
            "new_used_fallback",
            "similarity",
            "verdict",
            "verdict_note",
            "verdict_by",
        ]
    )
    for c in rows:
        writer.writerow(
            [
                c.id,
                time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(c.received_at)),
                c.conversation_id,
                _csv_text(c.broker_id),
                _csv_text(c.customer_message),
                _csv_text(c.n8n_reply),
                _round(c.n8n_latency_ms),
                _csv_text(c.shadow_reply),
                _round(c.shadow_latency_ms),
                "" if c.shadow_used_fallback is None else int(c.shadow_used_fallback),
                "" if c.similarity is None else f"{c.similarity:.4f}",
                c.verdict.value if c.verdict else "",
                _csv_text(c.verdict_note),
                _csv_text(c.verdict_by),
            ]
        )
    return out.getvalue().encode("utf-8")


def set_verdict(actor: str, comparison_id: int, verdict: Verdict, note: str) -> bool:
    wired = backend()
    stored = wired.run(
        lambda: wired.services.operations.set_verdict(
            actor=actor, comparison_id=comparison_id, verdict=verdict, note=note
        )
    )
    invalidate()
    return stored


# -- rollout -----------------------------------------------------------------------------------
def change_rollout(actor: str, change: RolloutChange, reason: str) -> RolloutState:
    """Raises RolloutError when the change breaks a rule (the message says why)."""
    wired = backend()
    operations = wired.services.operations
    state = wired.run(lambda: operations.change_rollout(actor=actor, change=change, reason=reason))
    invalidate()
    return state


def rollback(actor: str, reason: str) -> RollbackResult:
    """Raises RolloutError when there is no n8n to roll back to."""
    wired = backend()
    result = wired.run(lambda: wired.services.operations.rollback(actor=actor, reason=reason))
    invalidate()
    return result


def set_paused(actor: str, paused: bool, reason: str) -> RolloutState:
    wired = backend()
    operations = wired.services.operations
    state = wired.run(lambda: operations.set_paused(actor=actor, paused=paused, reason=reason))
    invalidate()
    return state


def audit_log(limit: int = 200) -> list[AuditEntry]:
    wired = backend()
    return wired.run(lambda: wired.services.store.audit_log(limit=limit))


def unsent_replies() -> int:
    wired = backend()
    return wired.run(wired.analytics.unsent_replies)


def audit_change(entry: AuditEntry) -> str:
    """'25 % → 50 %, shadow on' — what an audit entry changed, in words."""
    parts: list[str] = []
    before, after = entry.before, entry.after
    if before.get("percentage") != after.get("percentage"):
        parts.append(f"{before.get('percentage')} % → {after.get('percentage')} %")
    for name, label in (("shadow", "shadow"), ("n8n_enabled", "n8n"), ("queue_paused", "paused")):
        if before.get(name) != after.get(name):
            parts.append(f"{label} {'on' if after.get(name) else 'off'}")
    if before.get("guard") != after.get("guard"):
        parts.append("guard thresholds")
    return ", ".join(parts) or "no change"


# -- jobs --------------------------------------------------------------------------------------
@st.cache_data(ttl=AGGREGATE_TTL_S, show_spinner=False)
def search_jobs(key: str, query: JobFilter, page: int, size: int) -> JobPage:
    wired, analytics = _analytics()
    return wired.run(lambda: analytics.search_jobs(query, offset=(page - 1) * size, limit=size))


@st.cache_data(ttl=EXPORT_TTL_S, show_spinner=False)
def jobs_csv(key: str, query: JobFilter) -> bytes:
    wired, analytics = _analytics()
    page = wired.run(lambda: analytics.search_jobs(query, limit=JOBS_EXPORT_LIMIT))
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        [
            "id",
            "kind",
            "state",
            "route",
            "conversation_id",
            "broker_id",
            "attempts",
            "received_at_utc",
            "latency_s",
            "message",
            "error",
        ]
    )
    for row in page.rows:
        writer.writerow(
            [
                row.id,
                row.kind,
                row.state,
                row.route,
                row.conversation_id,
                _csv_text(row.broker_id),
                row.attempts,
                time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(row.received_at)),
                _round(row.latency_s, 3),
                _csv_text(row.message),
                _csv_text(row.error),
            ]
        )
    return out.getvalue().encode("utf-8")


def job_detail(job_id: str) -> JobDetail | None:
    wired = backend()
    return wired.run(lambda: wired.analytics.job_detail(job_id.strip()))


def operator_actions(target: str | None = None, limit: int = 50) -> list[OperatorAction]:
    wired = backend()
    return wired.run(lambda: wired.analytics.operator_actions(target=target, limit=limit))


def retry_job(actor: str, job_id: str, reason: str) -> ActionResult:
    """A failed or cancelled job back to queued with fresh attempts, and on the queue."""
    wired = backend()
    operations = wired.services.operations
    result = wired.run(lambda: operations.retry_job(actor=actor, job_id=job_id, reason=reason))
    invalidate()
    return result


def cancel_job(actor: str, job_id: str, reason: str) -> ActionResult:
    wired = backend()
    operations = wired.services.operations
    result = wired.run(lambda: operations.cancel_job(actor=actor, job_id=job_id, reason=reason))
    invalidate()
    return result


def job_filter(
    *,
    states: Sequence[str] = (),
    kinds: Sequence[str] = (),
    routes: Sequence[str] = (),
    conversation: str = "",
    text: str = "",
    since_s: int | None = None,
    now: float | None = None,
) -> JobFilter:
    """The ledger filter from the page's inputs; a conversation that is not a number is
    treated as search text."""
    conversation = conversation.strip().lstrip("#")
    conversation_id = int(conversation) if conversation.isdigit() else None
    words = " ".join(
        part for part in (text.strip(), "" if conversation_id else conversation) if part
    )
    now = time.time() if now is None else now
    return JobFilter(
        states=tuple(states),
        kinds=tuple(kinds),
        routes=tuple(routes),
        conversation_id=conversation_id,
        text=words or None,
        # Rounded so the cached search is shared between reruns within the same minute.
        since=None if since_s is None else float(int(now - since_s) // 60 * 60),
    )


# -- intake buffer (Redis) ---------------------------------------------------------------------
def replay_parked(actor: str, reason: str) -> ActionResult:
    """Every parked intake message back in the buffer, for the workers to record again."""
    wired = backend()
    result = wired.run(lambda: wired.services.operations.replay_parked(actor=actor, reason=reason))
    invalidate()
    return result


# -- helpers -----------------------------------------------------------------------------------
def _csv_text(value: str | None) -> str:
    """Text for a spreadsheet: a leading = + - @ (also after spaces, which spreadsheets skip)
    would be run as a formula; tab and CR start one in some."""
    if not value:
        return ""
    return f"'{value}" if value.lstrip(" ")[:1] in tuple("=+-@\t\r") else value


def _round(value: float | None, digits: int = 0) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _is_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _plausible_receipt(value: object) -> bool:
    low, high = _PLAUSIBLE_RECEIPT
    return isinstance(value, float) and math.isfinite(value) and low <= value <= high


def _problem(error: str) -> str:
    return error if len(error) <= PROBLEM_MAX_CHARS else error[: PROBLEM_MAX_CHARS - 1] + "…"

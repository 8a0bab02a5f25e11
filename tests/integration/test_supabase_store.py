"""The Supabase store's wire: the requests supabase-py makes for it, checked against recorded
PostgREST exchanges (tests/fixtures/postgrest), and the answers it parses from them; then its
schema: the migrations and what they must agree on with the domain.

The exchanges are replayed through an httpx MockTransport handed to supabase-py as its HTTP
client (ClientOptions.httpx_client), so the request building under test is supabase-py's own.
The behaviour against a live PostgREST-compatible server is the contract suite's
(test_store_contract.py, "supabase" backend).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from supabase import ClientOptions, create_client

from app.domain.events import InboundMessage
from app.domain.jobs import JobKind, JobState, ReplyJob
from app.domain.personas import PERSONAS
from app.domain.rollout import Route
from app.sandbox.postgrest import PostgrestSandbox
from app.store.base import Store, StoreError
from app.store.models import ClaimStatus, InboundStatus, Verdict
from app.store.postgres import LeaseClock, PostgresStore
from app.store.postgres_migrations import (
    SCHEMA_VERSION,
    apply_migrations,
    migration_sql,
    migrations,
)
from app.store.sqlite import SqliteStore
from app.store.supabase import PostgrestRpc, create_supabase_store
from tests.support.postgres import (
    SupabaseBed,
    service_key,
    shared_supabase_bed,
    temporary_database,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "postgrest"
URL = "https://abcdefghijklmnop.supabase.co"
KEY = service_key()
ANY = "$ANY"


# -- replaying recorded exchanges -----------------------------------------------------------
class Replay:
    """An httpx handler that expects the recorded requests, in order, and plays the responses."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.exchanges: list[dict[str, Any]] = json.loads((FIXTURES / name).read_text())[
            "exchanges"
        ]
        self.served = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert self.served < len(self.exchanges), f"{self.name}: unexpected {request.method}"
        exchange = self.exchanges[self.served]
        self.served += 1
        expect_request(request, exchange["request"])
        response = exchange["response"]
        if "body" in response:
            content = json.dumps(response["body"]).encode()
        else:
            content = response.get("body_text", "").encode()
        return httpx.Response(response["status"], headers=response["headers"], content=content)

    def done(self) -> None:
        assert self.served == len(self.exchanges), f"{self.name}: requests missing"


def expect_request(request: httpx.Request, expected: dict[str, Any]) -> None:
    assert request.method == expected["method"]
    assert request.url.path == expected["path"]
    query = dict(request.url.params.multi_items())
    assert len(query) == len(request.url.params.multi_items()), "a repeated query parameter"
    wanted = dict(expected["query"])
    if "columns" in wanted:
        # supabase-py builds `columns` from a set: the order is not part of the contract.
        assert set(query.pop("columns").split(",")) == set(wanted.pop("columns").split(","))
    assert query == wanted
    for name, value in expected.get("headers", {}).items():
        assert request.headers.get(name) == value.replace("$SERVICE_KEY", KEY), name
    assert request.headers["x-client-info"].startswith("supabase-py/")
    if "json" in expected:
        assert matches(json.loads(request.content), expected["json"])


def matches(actual: Any, expected: Any) -> bool:
    if expected == ANY:
        return True
    if isinstance(expected, dict):
        return (
            isinstance(actual, dict)
            and actual.keys() == expected.keys()
            and all(matches(actual[k], v) for k, v in expected.items())
        )
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(expected)
            and all(matches(a, e) for a, e in zip(actual, expected, strict=True))
        )
    if isinstance(expected, bool) or isinstance(actual, bool):
        return actual is expected  # JSON true is not 1
    return bool(actual == expected)


@pytest.fixture
def replay(request: pytest.FixtureRequest) -> Iterator[tuple[PostgresStore, Replay]]:
    handler = Replay(request.param)
    http = httpx.Client(transport=httpx.MockTransport(handler))
    # The recordings pass `p_now`: the caller's clock, as the recorded build did.
    store = PostgresStore(
        PostgrestRpc(create_client(URL, KEY, ClientOptions(httpx_client=http))),
        lease_clock=LeaseClock.CALLER,
    )
    try:
        yield store, handler
    finally:
        store.close()
    handler.done()


def recorded(name: str) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("replay", [name], indirect=True)


def message(message_id: int, conversation_id: int, content: str) -> InboundMessage:
    return InboundMessage(
        message_id=message_id,
        conversation_id=conversation_id,
        account_id=1,
        inbox_id=1,
        content=content,
        created_at=None,
        contact_id=None,
        contact_name=None,
    )


@recorded("rpc_hold_capacity.json")
def test_hold_capacity_is_one_rpc(replay: tuple[PostgresStore, Replay]) -> None:
    store, _ = replay
    assert store.hold_capacity("9f1c2e7a4b5d4c3e8f6a0b1c2d3e4f50", "sarah-wong", now=1700000002.5)


@recorded("rpc_release_capacity.json")
def test_release_capacity_takes_a_void_answer(replay: tuple[PostgresStore, Replay]) -> None:
    store, _ = replay
    store.release_capacity("9f1c2e7a4b5d4c3e8f6a0b1c2d3e4f50", now=1700000009.25)


@recorded("rpc_record_inbound_recorded.json")
def test_record_inbound_parses_the_new_job(replay: tuple[PostgresStore, Replay]) -> None:
    store, _ = replay
    outcome = store.record_inbound(
        message(3, 9, "Is the 2.6% fixed package still available?"),
        delivery_id="a1b2c3d4-0003",
        now=1700000002,
    )
    assert outcome.status is InboundStatus.RECORDED
    assert outcome.reason == "customer_message"
    job = outcome.job
    assert job is not None
    assert (job.id, job.seq, job.kind, job.state) == (
        "9f1c2e7a4b5d4c3e8f6a0b1c2d3e4f50",
        42,
        JobKind.REPLY,
        JobState.QUEUED,
    )
    assert job.received_at == 1700000002.0 and isinstance(job.received_at, float)
    assert job.inbound_message_id == 3 and job.delivery_id == "a1b2c3d4-0003"
    assert job.capacity_held is False and job.due_at is None and job.route == "new"


@recorded("rpc_record_inbound_duplicate.json")
def test_record_inbound_parses_a_duplicate(replay: tuple[PostgresStore, Replay]) -> None:
    store, _ = replay
    outcome = store.record_inbound(
        message(3, 9, "Is the 2.6% fixed package still available?"),
        delivery_id="a1b2c3d4-0003",
        now=1700000003.5,
    )
    assert outcome.status is InboundStatus.DUPLICATE
    assert outcome.reason == "delivery_already_received"
    assert outcome.job is None


@recorded("rpc_claim_job_claimed.json")
def test_claim_job_parses_the_claim_and_its_batch(replay: tuple[PostgresStore, Replay]) -> None:
    store, _ = replay
    claim = store.claim_job(
        "b2", owner="worker-1:4242", lease_s=30.0, coalesce_window_s=10.0, now=1700000004
    )
    assert claim.status is ClaimStatus.CLAIMED
    assert claim.reason == ""
    assert claim.job is not None
    assert claim.job.lease_owner == "worker-1:4242"
    assert claim.job.lease_expires_at == 1700000034.0
    assert claim.job.delay_s == 2.5 and claim.job.attempts == 1
    assert [(j.id, j.state) for j in claim.batch] == [
        ("b1", JobState.MERGED),
        ("b2", JobState.RUNNING),
    ]
    assert claim.batch[0].merged_into == "b2"
    assert claim.batch[-1] == claim.job
    assert claim.conversation is not None
    assert (claim.conversation.broker_id, claim.conversation.message_count) == ("grace-lim", 3)
    assert claim.conversation.assigned_at == 1700000000.0


@recorded("rpc_prepare_job_not_queued.json")
def test_prepare_job_reads_null_as_none(replay: tuple[PostgresStore, Replay]) -> None:
    store, _ = replay
    assert (
        store.prepare_job(
            "b1", broker_id="grace-lim", delay_s=4.5, escalation_reason=None, now=1700000002
        )
        is None
    )


@recorded("rpc_reply_latency_histogram.json")
def test_the_latency_histogram_comes_from_sql(replay: tuple[PostgresStore, Replay]) -> None:
    store, _ = replay
    histogram = store.reply_latency_histogram(since=1700000000, bounds_s=(1, 5, 10))
    assert (histogram.cumulative, histogram.count, histogram.sum_s) == ((0, 1, 2), 2, 8.25)


@recorded("rpc_job_state_counts.json")
def test_job_state_counts(replay: tuple[PostgresStore, Replay]) -> None:
    store, _ = replay
    assert store.job_state_counts() == {"queued": 2, "running": 1}


@recorded("rpc_get_job.json")
def test_get_job_is_one_function(replay: tuple[PostgresStore, Replay]) -> None:
    store, _ = replay
    job = store.get_job("c3")
    assert job is not None
    assert job.state is JobState.SENT
    assert job.reply_message_id == 777 and job.reply_latency_s == 4.25
    assert job.used_fallback is True and job.fallback_reason == "llm_timeout"
    assert job.send_started_at == 1700000013.5 and job.inbound_payload == '{"id": 11}'


@recorded("rpc_list_jobs_filtered.json")
def test_list_jobs_passes_the_filters_as_arguments(replay: tuple[PostgresStore, Replay]) -> None:
    store, _ = replay
    assert (
        store.list_jobs(states=[JobState.QUEUED, JobState.WAITING], conversation_id=5, limit=2)
        == []
    )


@recorded("rpc_seed_brokers.json")
def test_seed_brokers_counts_the_rows_inserted(replay: tuple[PostgresStore, Replay]) -> None:
    store, _ = replay
    assert store.seed_brokers(PERSONAS[:2], max_concurrent_chats=3) == 1


@recorded("rpc_prune_batch.json")
def test_prune_repeats_batches_until_nothing_changes(replay: tuple[PostgresStore, Replay]) -> None:
    store, _ = replay
    assert store.prune(now=1700000000.0) == 1003


@recorded("rpc_set_verdict.json")
def test_set_verdict_reports_whether_the_row_existed(replay: tuple[PostgresStore, Replay]) -> None:
    store, _ = replay
    assert store.set_verdict(
        7, Verdict.BETTER, note="clearer rates", actor="ops:alice", now=1700000100
    )
    assert not store.set_verdict(8, Verdict.WORSE, note="", actor="ops:alice", now=1700000101)


# -- errors ---------------------------------------------------------------------------------
@recorded("error_function_missing.json")
def test_a_missing_function_says_to_run_db_init(replay: tuple[PostgresStore, Replay]) -> None:
    store, _ = replay
    with pytest.raises(StoreError, match=r"PGRST202.*ai-broker db init"):
        store.hold_capacity("x", "sarah-wong", now=1700000000)


@recorded("error_unknown_job.json")
def test_an_unknown_job_is_a_store_error(replay: tuple[PostgresStore, Replay]) -> None:
    store, _ = replay
    with pytest.raises(StoreError, match=r"no reply job no-such-job \(code PT404\)"):
        store.hold_capacity("no-such-job", "sarah-wong", now=1700000000)


@recorded("error_no_brokers.json")
def test_a_raised_exception_keeps_its_message(replay: tuple[PostgresStore, Replay]) -> None:
    store, _ = replay
    with pytest.raises(StoreError, match="no active brokers: run `ai-broker brokers seed`"):
        store.assign_broker(1, "sarah-wong", now=1700000000)


@recorded("error_invalid_api_key.json")
def test_a_refused_key_names_the_setting(replay: tuple[PostgresStore, Replay]) -> None:
    store, _ = replay
    with pytest.raises(StoreError, match=r"Invalid API key.*SUPABASE_SERVICE_ROLE_KEY"):
        store.list_brokers()


@recorded("error_bad_gateway.json")
def test_a_gateway_error_page_is_a_store_error(replay: tuple[PostgresStore, Replay]) -> None:
    store, _ = replay
    with pytest.raises(StoreError, match=r"Bad Gateway \(code 502\)"):
        store.claim_job(
            "b2", owner="worker-1:4242", lease_s=30.0, coalesce_window_s=10.0, now=1700000004
        )


def test_an_unreachable_supabase_is_a_store_error() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    http = httpx.Client(transport=httpx.MockTransport(refuse))
    store = PostgresStore(PostgrestRpc(create_client(URL, KEY, ClientOptions(httpx_client=http))))
    with pytest.raises(StoreError, match="Supabase is unreachable"):
        store.release_capacity("x", now=1700000000)


# -- the protocol ---------------------------------------------------------------------------
def test_the_store_implements_the_whole_protocol() -> None:
    # The protocol grows with the product: a method missing here fails now, not in production.
    for name, method in inspect.getmembers(Store, predicate=inspect.isfunction):
        if name.startswith("_"):
            continue
        implemented = getattr(PostgresStore, name, None)
        assert implemented is not None, f"PostgresStore.{name} is missing"
        assert inspect.signature(implemented) == inspect.signature(method), name


# -- the schema -----------------------------------------------------------------------------
@pytest.fixture
def bed(request: pytest.FixtureRequest) -> SupabaseBed:
    bed = shared_supabase_bed(request.config)
    bed.reset()
    return bed


def test_schema_version_is_the_newest_migration() -> None:
    versions = [version for version, _ in migrations()]
    assert versions == sorted(versions) and versions[-1] == SCHEMA_VERSION
    script = migration_sql()
    assert all(f"-- migration {version}" in script for version in versions)


def test_schema_knows_every_job_kind_and_state(bed: SupabaseBed) -> None:
    with psycopg.connect(bed.dsn) as connection:
        for state in JobState:
            row = connection.execute("SELECT ai_broker_is_terminal(%s)", (state.value,)).fetchone()
            assert row == (state.is_terminal,), state
        checks = dict(
            connection.execute(
                "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conname IN ('reply_jobs_state', 'reply_jobs_kind')"
            ).fetchall()
        )
    assert all(f"'{state.value}'" in checks["reply_jobs_state"] for state in JobState)
    assert all(f"'{kind.value}'" in checks["reply_jobs_kind"] for kind in JobKind)


def test_apply_migrations_is_idempotent_and_records_the_version() -> None:
    with temporary_database(migrated=False) as dsn:
        every = [version for version, _ in migrations()]
        assert every[-1] == SCHEMA_VERSION
        assert apply_migrations(dsn) == every
        assert apply_migrations(dsn) == []
        with psycopg.connect(dsn) as connection:
            versions = connection.execute(
                "SELECT version FROM schema_migrations ORDER BY version"
            ).fetchall()
            meta = connection.execute(
                "SELECT value FROM schema_meta WHERE key = 'schema_version'"
            ).fetchone()
        assert versions == [(version,) for version in every]
        assert meta == (SCHEMA_VERSION,)


def test_the_printed_script_runs_on_a_fresh_database_and_again() -> None:
    # What `ai-broker db init` prints for the Supabase SQL editor (or psql).
    with temporary_database(migrated=False) as dsn, psycopg.connect(dsn, autocommit=True) as db:
        db.execute(migration_sql().encode())
        db.execute(migration_sql().encode())
        assert db.execute("SELECT count(*) FROM schema_migrations").fetchone() == (
            len(migrations()),
        )


def test_apply_migrations_reports_an_unreachable_database() -> None:
    with pytest.raises(StoreError, match="could not apply the store migrations"):
        apply_migrations("postgresql://postgres@127.0.0.1:1/none?connect_timeout=2")


def test_init_schema_asks_for_db_init_on_an_empty_database() -> None:
    with temporary_database(migrated=False) as dsn, PostgrestSandbox(dsn, service_key=KEY) as api:
        store = create_supabase_store(api.url, KEY)
        try:
            with pytest.raises(StoreError, match="run `ai-broker db init`"):
                store.init_schema()
            with pytest.raises(StoreError, match="run `ai-broker db init`"):
                store.ping()
        finally:
            store.close()


def test_create_supabase_store_talks_to_the_api(bed: SupabaseBed) -> None:
    store = create_supabase_store(bed.sandbox.url, bed.key, timeout_s=5.0)
    try:
        store.init_schema()
        assert store.seed_brokers(PERSONAS, max_concurrent_chats=2) == 5
        assert [b.id for b in store.list_brokers()] == [p.slug for p in PERSONAS]
    finally:
        store.close()


# -- both stores, same answers --------------------------------------------------------------
# Protocol methods the contract suite does not cover yet: each scenario runs on a fresh SQLite
# store and on the Supabase store, and both must give the same answers (job ids, random in
# both, are compared by their seq).
T0 = 1_700_000_000.0


def _seqs(store: Store, job_ids: list[str]) -> list[int]:
    return [_job(store, job_id).seq for job_id in job_ids]


def _job(store: Store, job_id: str) -> ReplyJob:
    found = store.get_job(job_id)
    assert found is not None
    return found


def _running(store: Store, message_id: int, owner: str, *, now: float = T0) -> ReplyJob:
    recorded = store.record_inbound(
        message(message_id, message_id, "hi"), delivery_id=None, now=now
    )
    assert recorded.job is not None
    store.prepare_job(
        recorded.job.id, broker_id="sarah-wong", delay_s=0, escalation_reason=None, now=now
    )
    claim = store.claim_job(recorded.job.id, owner=owner, lease_s=30, coalesce_window_s=0, now=now)
    assert claim.job is not None
    return claim.job


def hand_back_scenario(store: Store) -> object:
    mine = [_running(store, 1, "host-1:11:a"), _running(store, 2, "host-1:11:b")]
    other = _running(store, 3, "host-1:111:a")
    handed = store.hand_back(owner_prefix="host-1:11:", now=T0 + 5)
    after = [_job(store, j.id) for j in [*mine, other]]
    return (
        sorted(_seqs(store, handed)),
        [(j.state, j.due_at, j.lease_owner, j.lease_expires_at, j.updated_at) for j in after],
    )


def reap_forwarding_scenario(store: Store) -> object:
    outcome = store.record_inbound(
        message(1, 1, "hi"), delivery_id="d-1", now=T0, route=Route.N8N, route_reason="bucket"
    )
    assert outcome.job is not None
    reaped = store.reap(now=T0 + 100, stale_after_s=60)
    job = _job(store, outcome.job.id)
    return (
        [(_job(store, r.job_id).seq, r.action, r.due_at) for r in reaped],
        (job.state, job.route, job.route_reason, job.updated_at),
        store.reap(now=T0 + 101, stale_after_s=60),
    )


def retry_min_attempts_scenario(store: Store) -> object:
    job = _running(store, 1, "w1")
    assert store.retry_job(
        job.id, owner="w1", due_at=T0 + 2, error="x", error_detail=None, now=T0 + 1, min_attempts=3
    )
    retried = _job(store, job.id).attempts
    claim = store.claim_job(job.id, owner="w2", lease_s=30, coalesce_window_s=0, now=T0 + 2)
    assert claim.job is not None
    return retried, claim.job.attempts


def full_broker_scenario(store: Store) -> object:
    store.seed_brokers(PERSONAS, max_concurrent_chats=1)
    first = store.record_inbound(message(1, 1, "a"), delivery_id=None, now=T0).job
    second = store.record_inbound(message(2, 2, "b"), delivery_id=None, now=T0).job
    assert first is not None and second is not None
    held = [
        store.hold_capacity(first.id, "sarah-wong", now=T0 + 1),
        store.hold_capacity(second.id, "sarah-wong", now=T0 + 50),
    ]
    # The job waiting for room was touched, so the reaper does not take it for lost.
    reaped = store.reap(now=T0 + 100, stale_after_s=60)
    return held, _job(store, second.id).updated_at, [_job(store, r.job_id).seq for r in reaped]


def forward_outcome_scenario(store: Store) -> object:
    outcome = store.record_inbound(
        message(1, 1, "hi"), delivery_id=None, now=T0, route=Route.N8N, route_reason="bucket"
    )
    assert outcome.job is not None
    forwarded = store.forward_outcome(outcome.job.id, accepted=True, reason="n8n_200", now=T0 + 1)
    assert forwarded is not None
    return forwarded.state, forwarded.route, forwarded.route_reason, forwarded.finished_at


@pytest.mark.parametrize(
    "scenario",
    [
        hand_back_scenario,
        reap_forwarding_scenario,
        retry_min_attempts_scenario,
        full_broker_scenario,
        forward_outcome_scenario,
    ],
)
def test_both_stores_give_the_same_answers(
    scenario: Callable[[Store], object], bed: SupabaseBed, tmp_path: Path
) -> None:
    sqlite = SqliteStore(tmp_path / "store.db")
    sqlite.init_schema()
    supabase = bed.store()
    try:
        expected = scenario(sqlite)
        assert scenario(supabase) == expected
    finally:
        sqlite.close()
        supabase.close()

"""Pipeline benchmark for the embedded default (SQLite ledger, SqliteHuey queue).

    .venv/bin/python bench/pipeline_bench.py [--quick]

Starts the real system the way the e2e tests do (tests/support/system.py): the Chatwoot and LLM
sandboxes in this process, `ai-broker web` (gunicorn, WEB_CONCURRENCY=2) and `ai-broker worker` as
child processes on a temporary DATA_DIR. All traffic stays on 127.0.0.1. Four measurements:

1. Webhook acknowledgement. A separate load-generator process (bench/loadgen.py, threads with
   keep-alive httpx clients) posts signed, distinct `message_created` webhooks (built from the
   Chatwoot fixture, one per pre-created sandbox conversation) at concurrency 8, then 32, while the
   worker answers them (RESPONSE_DELAY_SCALE=0, instant LLM, QUEUE_RATE_LIMIT=1000, default
   WORKER_CONCURRENCY). Reports ack latency percentiles and requests/s; "drained" is how long
   after the first request the worker had replied to every one of them.
2. Webhook-to-reply overhead. Zero delay, instant LLM; customer messages created in the Chatwoot
   sandbox at a steady rate, which sends the signed webhook as Chatwoot does. End to end is
   customer message created -> broker reply created, both on the sandbox's clock (time.time(), the
   same clock the ledger uses). The ledger rows (store.db) split it: delivery (sandbox -> ledger
   `received_at`), pickup (-> `started_at`, i.e. queue and prepare), reads + LLM (->
   `send_started_at`), post + finish (-> `finished_at`).
3. Conversations in flight. Real 1-6 s delays (RESPONSE_DELAY_SCALE=1), LLM latency 1,000 ms,
   QUEUE_RATE_LIMIT=1000, WORKER_CONCURRENCY=256: one customer message to each of N fresh
   conversations as fast as possible; wall time until every conversation has a reply, then (after a
   settle) a count of conversations with two or more (must be 0). Worker and receiver RSS are
   sampled from /proc every 0.2 s; CPU seconds per process are reported to show who used the two
   cores. The ledger splits each reply's time into the planned delay and what the system added;
   the LLM sandbox's own handler time sits beside it, to tell a slow sandbox from a busy worker,
   and the last reply's breakdown shows what set the wall time.
4. Reference design. bench/reference_design.py (the plan's worker: 3 threads, sleeping the delay
   inside the task) in its own process against fresh sandboxes with the same 1 s LLM, on a smaller
   sample. Throughput is compared in conversations per minute.

Targets are printed beside the numbers with PASS/MISS; a miss does not fail the script
(benchmarks inform, tests assert). Results also go to bench/results/pipeline-<date>.json
(`-quick` suffix for --quick). `--quick` shrinks every sample for a smoke run.

How to read it: ack latency is what Chatwoot waits on (it gives up at 5 s); the overhead table is
the system's own cost per reply when nothing is meant to wait; the in-flight wall time cannot go
below the longest planned delay + LLM latency + the scheduler's 1 s tick (about 8 s). Everything,
sandboxes included, shares this machine's cores: the load average printed at the top says how
much else was running, and a busy machine makes every number worse. `--quick` samples are too
small for the throughput ratio (both sides are bound by their delays).
"""

# ruff: noqa: E402 - the repository root goes on sys.path before the project imports.

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import argparse
import copy
import datetime as dt
import itertools
import json
import math
import os
import platform
import signal
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from app.domain.events import JOB_MARKER_KEY
from app.domain.jobs import JobKind, ReplyJob
from app.domain.personas import PERSONAS
from app.domain.urgency import escalation_reason
from app.sandbox.chatwoot import encode_webhook_body
from app.sandbox.llm import LLMSandbox
from bench.measure import ProcessGroup, ReplyClockSandbox, ResourceSampler, summary
from bench.reference_design import PLAN_WORKER_CONCURRENCY, build_queue
from tests.support.fixtures import chatwoot_fixture
from tests.support.system import WEBHOOK_SECRET, RunningSystem, free_port, system_env

RESULTS_DIR = REPO / "bench" / "results"

ACK_CONCURRENCY = (8, 32)
IN_FLIGHT_WORKER_CONCURRENCY = 256
IN_FLIGHT_LLM_MS = 1000
QUEUE_RATE_LIMIT = "1000"

TARGET_IN_FLIGHT_S = 10.0
FLOOR_IN_FLIGHT_S = 8.0
TARGET_RATIO = 50.0
TARGET_WORKER_RSS_MB = 150.0

# Customer messages without escalation triggers, short to long, so delays span the 1-6 s band.
MESSAGES = (
    "Hi, can I refinance my HDB loan to a bank loan this year?",
    "What's the lowest fixed rate for a 4-room resale HDB right now?",
    "We are buying a condo in Bishan for 1.8 million. How much can we borrow on a combined "
    "income of 14k a month, and should we take a fixed or a floating package?",
    "Is a 30-year tenure possible at 45?",
    "Need an IPA urgently, my OTP expires on Friday.",
    "Can I use CPF for the downpayment on an EC?",
    "My current package reprices next month. The outstanding loan is about 620k with 22 years "
    "left and I am on 3M SORA plus 0.8%. Would switching to a 2-year fixed save money after the "
    "clawback and the legal fees?",
    "What is TDSR and how does it affect me?",
    "Could you compare DBS and OCBC packages for a new launch?",
    "Some background first: my wife and I own a 5-room HDB flat in Sengkang with about 180k left "
    "on the HDB loan, and we have found a resale condo in Hougang that we like. We would sell the "
    "flat after we collect the keys. Can we take a bank loan for the condo before the flat is "
    "sold, and how does the ABSD remission work for us?",
    "How long does a bank valuation usually take?",
)


@dataclass(frozen=True)
class Sizes:
    webhooks: int  # measured webhooks per ack concurrency level
    warmup: int  # unmeasured webhooks sent first at each level
    overhead_messages: int
    overhead_rate_per_s: float
    in_flight: int
    reference_conversations: int


FULL = Sizes(2000, 50, 200, 20.0, 500, 30)
QUICK = Sizes(200, 20, 50, 20.0, 50, 6)


def log(text: str) -> None:
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {text}\n")
    sys.stderr.flush()


# -- the system under test -------------------------------------------------------------------------


@dataclass
class Bench:
    system: RunningSystem
    chatwoot: ReplyClockSandbox
    llm: LLMSandbox

    def receive_webhooks(self) -> None:
        """Make the receiver the inbox's agent bot: the sandbox now sends it webhooks.

        Replaces any earlier registration: a measurement that runs several times on one system
        (receiver_bench's rates) must not register the bot again, or every event would be
        delivered once more per run, as if the inbox had several bots."""
        self.chatwoot.set_webhooks(
            [
                {
                    "url": f"{self.system.url}/webhooks/chatwoot",
                    "secret": WEBHOOK_SECRET,
                    "kind": "agent_bot",
                }
            ]
        )

    def jobs(self, conversation_ids: Sequence[int]) -> list[ReplyJob]:
        wanted = set(conversation_ids)
        store = self.system.store()
        try:
            jobs = store.list_jobs(limit=10**7)
        finally:
            store.close()
        return [j for j in jobs if j.conversation_id in wanted and j.kind is JobKind.REPLY]

    def groups(self) -> list[ProcessGroup]:
        first, *others = (
            process.pid
            for name, process in self.system.processes.items()
            if name.startswith("worker")
        )
        return [
            WorkerProcesses("worker", first, others=tuple(others)),
            ProcessGroup("receiver", self.system.processes["web"].pid, with_children=True),
        ]


@dataclass
class WorkerProcesses(ProcessGroup):
    """Every worker process, counted as one role."""

    others: tuple[int, ...] = ()

    def refresh(self) -> None:
        super().refresh()
        self.pids += self.others


@contextmanager
def running_system(
    workdir: Path, name: str, *, llm_latency_ms: float, workers: int = 1, **env: str
) -> Iterator[Bench]:
    data_dir = workdir / name
    data_dir.mkdir(parents=True)
    port = free_port()
    with ReplyClockSandbox() as chatwoot, LLMSandbox(latency_ms=llm_latency_ms) as llm:
        system = RunningSystem(
            data_dir=data_dir,
            port=port,
            chatwoot=chatwoot,
            llm=llm,
            env=system_env(data_dir, port, chatwoot, llm, **env),
        )
        system.start("web", "worker")
        for n in range(2, workers + 1):
            system.start_as(f"worker-{n}", "worker")
        try:
            system.wait_ready(timeout=60)
            log(f"{name}: web and worker ready on {system.url} ({_env_summary(env)})")
            yield Bench(system, chatwoot, llm)
        finally:
            system.stop_all()


# Tuning knobs only: never tokens, secrets or keys in the benchmark's log.
_SHOWN_SETTINGS = (
    "RESPONSE_DELAY_SCALE",
    "WORKER_CONCURRENCY",
    "WEB_CONCURRENCY",
    "QUEUE_RATE_LIMIT",
    "REDIS_URL",
)


def _env_summary(env: dict[str, str]) -> str:
    return ", ".join(f"{key}={env[key]}" for key in _SHOWN_SETTINGS if key in env)


_contacts = itertools.count(1)


def create_conversations(chatwoot: ReplyClockSandbox, count: int) -> list[int]:
    ids = []
    for _ in range(count):
        n = next(_contacts)
        _, conversation = chatwoot.create_lead_conversation(
            f"Bench Customer {n}", f"bench{n}@example.com", f"+659{n:07d}"
        )
        ids.append(int(conversation["id"]))
    return ids


def first_reply_delays(
    chatwoot: ReplyClockSandbox, conversation_ids: Sequence[int]
) -> dict[int, tuple[float, float]]:
    """conversation -> (first customer message created, first broker reply created)."""
    customers, replies = chatwoot.customer_times(), chatwoot.reply_times()
    return {
        cid: (customers[cid][0], replies[cid][0])
        for cid in conversation_ids
        if customers.get(cid) and replies.get(cid)
    }


def broker_reply_counts(chatwoot: ReplyClockSandbox, conversation_ids: Sequence[int]) -> Counter:
    """How many public broker replies each conversation holds, read through the sandbox's API."""
    return Counter(
        {
            cid: sum(
                1
                for m in chatwoot.messages(cid)
                if m["message_type"] == 1
                and not m["private"]
                and JOB_MARKER_KEY in (m.get("content_attributes") or {})
            )
            for cid in conversation_ids
        }
    )


@dataclass(frozen=True)
class Timeline:
    """One sent reply's ledger timestamps (time.time() seconds), all present."""

    conversation_id: int
    received: float  # the receiver recorded the webhook
    delay: float  # the planned human-like delay
    due: float  # prepare's "now" + delay: when the reply may go out
    claimed: float  # respond claimed the job
    send_started: float  # about to post to Chatwoot
    finished: float

    @property
    def prepared(self) -> float:
        return self.due - self.delay

    @classmethod
    def of(cls, job: ReplyJob) -> Timeline | None:
        stamps = (job.delay_s, job.due_at, job.started_at, job.send_started_at, job.finished_at)
        if job.reply_message_id is None or any(stamp is None for stamp in stamps):
            return None
        delay, due, claimed, send_started, finished = (float(stamp or 0.0) for stamp in stamps)
        return cls(
            job.conversation_id, job.received_at, delay, due, claimed, send_started, finished
        )


# -- 1. webhook acknowledgement --------------------------------------------------------------------

_message_ids = itertools.count(700_000_000)


def webhook_body(fixture: dict[str, Any], conversation_id: int, content: str) -> str:
    message_id = next(_message_ids)
    payload = copy.deepcopy(fixture)
    payload["id"] = message_id
    payload["content"] = content
    conversation = payload["conversation"]
    conversation["id"] = conversation_id
    for message in conversation["messages"]:
        message.update(
            id=message_id,
            conversation_id=conversation_id,
            content=content,
            processed_message_content=content,
        )
    return encode_webhook_body(payload).decode()


def measure_acks(bench: Bench, sizes: Sizes, workdir: Path) -> list[dict[str, Any]]:
    fixture = chatwoot_fixture("message_created.incoming_contact.json")
    rows = []
    for level in ACK_CONCURRENCY:
        started = time.monotonic()
        conversation_ids = create_conversations(bench.chatwoot, sizes.warmup + sizes.webhooks)
        log(
            f"ack c={level}: {len(conversation_ids)} sandbox conversations created in "
            f"{time.monotonic() - started:.1f}s"
        )
        bodies = workdir / f"bodies-{level}.jsonl"
        bodies.write_text(
            "".join(
                webhook_body(fixture, cid, MESSAGES[i % len(MESSAGES)]) + "\n"
                for i, cid in enumerate(conversation_ids)
            )
        )
        spec = workdir / f"load-{level}.json"
        spec.write_text(
            json.dumps(
                {
                    "url": f"{bench.system.url}/webhooks/chatwoot",
                    "secret": WEBHOOK_SECRET,
                    "bodies": str(bodies),
                    "concurrency": level,
                    "warmup": sizes.warmup,
                }
            )
        )
        with ResourceSampler(bench.groups()) as sampler:
            load_started = time.time()
            done = subprocess.run(
                [sys.executable, str(REPO / "bench" / "loadgen.py"), str(spec)],
                capture_output=True,
                check=False,
                timeout=900,
                cwd=REPO,
            )
        if done.returncode != 0:
            raise RuntimeError(f"load generator failed:\n{done.stderr.decode()[-2000:]}")
        result = json.loads(done.stdout)
        drained = bench.chatwoot.wait_answered(conversation_ids, timeout_s=30 + sizes.webhooks / 5)
        replies = bench.chatwoot.reply_times()
        answered = [replies[cid][0] for cid in conversation_ids if replies.get(cid)]
        last_reply = max(answered, default=math.nan)
        row = {
            "concurrency": level,
            "sent": result["sent"],
            "statuses": result["statuses"],
            "ack_ms": summary(result["latencies_ms"]),
            "requests_per_s": result["sent"] / result["wall_s"],
            "wall_s": result["wall_s"],
            "answered": len(answered),
            "all_answered": drained,
            "drained_s": last_reply - load_started,
            "cpu_s": {**sampler.cpu_s, "load generator": result["cpu_s"]},
            "peak_rss_mb": sampler.peak_mb,
        }
        log(
            f"ack c={level}: p50 {row['ack_ms']['p50']:.1f} ms, p99 {row['ack_ms']['p99']:.1f} ms, "
            f"{row['requests_per_s']:.0f} req/s; worker drained in {row['drained_s']:.1f}s"
        )
        rows.append(row)
    return rows


# -- 2. webhook-to-reply overhead ------------------------------------------------------------------


def measure_overhead(bench: Bench, sizes: Sizes) -> dict[str, Any]:
    bench.receive_webhooks()
    conversation_ids = create_conversations(bench.chatwoot, sizes.overhead_messages)
    started = time.monotonic()
    for i, cid in enumerate(conversation_ids):
        pause = started + i / sizes.overhead_rate_per_s - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        bench.chatwoot.customer_message(cid, MESSAGES[i % len(MESSAGES)])
    all_answered = bench.chatwoot.wait_answered(conversation_ids, timeout_s=60)
    bench.chatwoot.wait_for_deliveries(timeout_s=10)
    times = first_reply_delays(bench.chatwoot, conversation_ids)
    customer_at = {cid: created for cid, (created, _) in times.items()}
    sent = [t for t in map(Timeline.of, bench.jobs(conversation_ids)) if t is not None]
    parts = {
        "end to end (sandbox: message -> reply)": [r - c for c, r in times.values()],
        "delivery (message -> ledger received)": [
            t.received - customer_at[t.conversation_id] for t in sent if t.conversation_id in times
        ],
        "ledger (received -> finished)": [t.finished - t.received for t in sent],
        "  pickup + prepare (-> claimed)": [t.claimed - t.received for t in sent],
        "  reads + LLM (-> send started)": [t.send_started - t.claimed for t in sent],
        "  post + finish (-> finished)": [t.finished - t.send_started for t in sent],
    }
    result: dict[str, Any] = {
        "messages": len(conversation_ids),
        "rate_per_s": sizes.overhead_rate_per_s,
        "answered": len(times),
        "all_answered": all_answered,
        "ms": {name: summary(values, 1000) for name, values in parts.items()},
    }
    e2e = result["ms"]["end to end (sandbox: message -> reply)"]
    log(f"overhead: end to end p50 {e2e['p50']:.0f} ms, p99 {e2e['p99']:.0f} ms")
    return result


# -- 3. conversations in flight --------------------------------------------------------------------


def measure_in_flight(bench: Bench, sizes: Sizes) -> dict[str, Any]:
    bench.receive_webhooks()
    conversation_ids = create_conversations(bench.chatwoot, sizes.in_flight)
    timeout_s = 60 + sizes.in_flight / 5
    with ResourceSampler(bench.groups()) as sampler:
        started = time.time()
        for i, cid in enumerate(conversation_ids):
            bench.chatwoot.customer_message(cid, MESSAGES[i % len(MESSAGES)])
        fired_s = time.time() - started
        all_answered = bench.chatwoot.wait_answered(conversation_ids, timeout_s=timeout_s)
    times = first_reply_delays(bench.chatwoot, conversation_ids)
    finished_at = [reply for _, reply in times.values()]
    wall_s = (max(finished_at) - started) if finished_at else math.nan
    log(f"in flight: {len(times)}/{len(conversation_ids)} answered, wall {wall_s:.2f}s; settling")
    bench.chatwoot.wait_for_deliveries(timeout_s=15)
    time.sleep(3.0)
    counts = broker_reply_counts(bench.chatwoot, conversation_ids)
    jobs = bench.jobs(conversation_ids)
    sent = [t for t in map(Timeline.of, jobs) if t is not None]
    customer_at = {cid: created for cid, (created, _) in times.items()}
    breakdown = {
        "reply after customer message": [r - c for c, r in times.values()],
        "planned delay": [t.delay for t in sent],
        "added beyond the delay": [t.finished - t.received - t.delay for t in sent],
        "  ingest (sandbox -> ledger)": [
            t.received - customer_at[t.conversation_id] for t in sent if t.conversation_id in times
        ],
        "  prepare lag (received -> delay starts)": [t.prepared - t.received for t in sent],
        "  respond pickup (due -> claimed)": [t.claimed - t.due for t in sent],
        "  reads + LLM (claimed -> send)": [t.send_started - t.claimed for t in sent],
        "    of which LLM sandbox (server side)": [
            call["latency_ms"] / 1000 for call in bench.llm.calls() if call["status"] == 200
        ],
        "  post + finish (send -> finished)": [t.finished - t.send_started for t in sent],
    }
    completion = [t - started for t in finished_at]
    last = max(sent, key=lambda t: t.finished, default=None)
    return {
        "conversations": len(conversation_ids),
        "worker_concurrency": IN_FLIGHT_WORKER_CONCURRENCY,
        "llm_latency_ms": IN_FLIGHT_LLM_MS,
        "fired_s": fired_s,
        "wall_s": wall_s,
        "all_answered": all_answered,
        "answered": sum(1 for n in counts.values() if n >= 1),
        "duplicates": sum(1 for n in counts.values() if n > 1),
        "missing": sum(1 for n in counts.values() if n == 0),
        "job_states": dict(Counter(j.state.value for j in jobs)),
        "fallback_replies": sum(1 for j in jobs if j.used_fallback),
        "retried_jobs": sum(1 for j in jobs if j.attempts > 1),
        "completion_s": {
            "p50": summary(completion)["p50"],
            "p90": summary(completion)["p90"],
            "max": summary(completion)["max"],
        },
        "s": {name: summary(values) for name, values in breakdown.items()},
        "last_reply": None if last is None else _breakdown(last, customer_at, started),
        "peak_rss_mb": sampler.peak_mb,
        "rss_samples": sampler.samples,
        "cpu_s": sampler.cpu_s,
        "phase_wall_s": sampler.wall_s,
    }


def _breakdown(t: Timeline, customer_at: dict[int, float], started: float) -> dict[str, float]:
    """Where one reply's time went, in seconds; `message` and `done` count from the first send."""
    message_at = customer_at.get(t.conversation_id, started)
    return {
        "message": message_at - started,
        "ingest": t.received - message_at,
        "prepare lag": t.prepared - t.received,
        "delay": t.delay,
        "pickup": t.claimed - t.due,
        "reads + LLM": t.send_started - t.claimed,
        "post + finish": t.finished - t.send_started,
        "done": t.finished - started,
    }


# -- 4. the reference design -----------------------------------------------------------------------


def measure_reference(workdir: Path, sizes: Sizes) -> dict[str, Any]:
    count = sizes.reference_conversations
    directory = workdir / "reference"
    directory.mkdir()
    queue_path, ready = directory / "queue.db", directory / "ready"
    with ReplyClockSandbox() as chatwoot, LLMSandbox(latency_ms=IN_FLIGHT_LLM_MS) as llm:
        conversation_ids = create_conversations(chatwoot, count)
        with (directory / "consumer.log").open("ab") as consumer_log:
            consumer = subprocess.Popen(
                [
                    sys.executable,
                    str(REPO / "bench" / "reference_design.py"),
                    f"--queue={queue_path}",
                    f"--chatwoot-url={chatwoot.url}",
                    f"--account-id={chatwoot.account_id}",
                    f"--llm-url={llm.url}/v1",
                    f"--ready={ready}",
                ],
                stdout=consumer_log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )
        try:
            deadline = time.monotonic() + 30
            while not ready.exists():
                if consumer.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"reference consumer did not start; see {directory}")
                time.sleep(0.05)
            time.sleep(0.5)  # let its worker threads start polling
            _, process_conversation_job = build_queue(queue_path)
            started = time.time()
            for i, cid in enumerate(conversation_ids):
                message = MESSAGES[i % len(MESSAGES)]
                chatwoot.customer_message(cid, message)
                process_conversation_job(
                    {
                        "job_id": f"reference-{i}",
                        "conversation_id": cid,
                        "message": message,
                        "broker_id": PERSONAS[i % len(PERSONAS)].slug,
                    }
                )
            all_answered = chatwoot.wait_answered(conversation_ids, timeout_s=60 + count * 3)
        finally:
            consumer.send_signal(signal.SIGTERM)
            try:
                consumer.wait(timeout=15)
            except subprocess.TimeoutExpired:
                consumer.kill()
                consumer.wait()
        times = first_reply_delays(chatwoot, conversation_ids)
    finished = [reply for _, reply in times.values()]
    wall_s = (max(finished) - started) if finished else math.nan
    return {
        "conversations": count,
        "worker_concurrency": PLAN_WORKER_CONCURRENCY,
        "llm_latency_ms": IN_FLIGHT_LLM_MS,
        "answered": len(times),
        "all_answered": all_answered,
        "wall_s": wall_s,
        "per_minute": len(times) / wall_s * 60 if finished else 0.0,
        "reply_after_message_s": summary([r - c for c, r in times.values()]),
    }


# -- report ----------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def render(results: dict[str, Any]) -> str:
    out: list[str] = []
    meta = results["meta"]
    quick = meta["mode"] == "quick"
    out.append(
        f"ai-broker pipeline benchmark, embedded default (SQLite) - {meta['date']} - "
        f"{meta['mode']} - {meta['cpus']} CPUs - Python {meta['python']} - commit {meta['commit']}"
        f" + {meta['uncommitted_changes']} changed files - total {meta['total_s']:.0f}s"
    )
    out.append(
        "load average (1/5/15 min) at start "
        + " ".join(f"{x:.1f}" for x in meta["load_average_at_start"])
        + ", at end "
        + " ".join(f"{x:.1f}" for x in meta["load_average_at_end"])
        + " - anything else running on these cores shows up in every number below"
    )
    out.append("")
    out.append(
        "1. Webhook acknowledgement (WEB_CONCURRENCY=2 x 8 threads; worker running with "
        "WORKER_CONCURRENCY=32, RESPONSE_DELAY_SCALE=0, LLM 0 ms)"
    )
    out.append(
        f"   {'conc':>4} {'sent':>6} {'non-200':>7} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} "
        f"{'max ms':>7} {'req/s':>7} {'drained':>8}  cpu s (worker / receiver / loadgen / bench)"
    )
    for row in results["acks"]:
        ack = row["ack_ms"]
        non_200 = row["sent"] - row["statuses"].get("200", 0)
        cpu = row["cpu_s"]
        out.append(
            f"   {row['concurrency']:>4} {row['sent']:>6} {non_200:>7} {ack['p50']:>7.1f} "
            f"{ack['p90']:>7.1f} {ack['p99']:>7.1f} {ack['max']:>7.1f} "
            f"{row['requests_per_s']:>7.0f} {row['drained_s']:>7.1f}s  "
            f"{cpu['worker']:.1f} / {cpu['receiver']:.1f} / {cpu['load generator']:.1f} / "
            f"{cpu['bench (sandboxes, load)']:.1f}"
        )
    overhead = results["overhead"]
    out.append("")
    out.append(
        f"2. Webhook-to-reply overhead ({overhead['messages']} messages at "
        f"{overhead['rate_per_s']:.0f}/s, RESPONSE_DELAY_SCALE=0, LLM 0 ms; "
        f"answered {overhead['answered']}/{overhead['messages']})"
    )
    out.append(f"   {'':42} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} {'max ms':>7}")
    for name, s in overhead["ms"].items():
        out.append(
            f"   {name:42} {s['p50']:>7.1f} {s['p90']:>7.1f} {s['p99']:>7.1f} {s['max']:>7.1f}"
        )
    flight, reference = results["in_flight"], results["reference"]
    ours_per_min = flight["answered"] / flight["wall_s"] * 60 if flight["wall_s"] else 0.0
    ratio = ours_per_min / reference["per_minute"] if reference["per_minute"] else math.inf
    out.append("")
    out.append(
        f"3. {flight['conversations']} conversations in flight (RESPONSE_DELAY_SCALE=1, LLM "
        f"{flight['llm_latency_ms']} ms, WORKER_CONCURRENCY={flight['worker_concurrency']}, "
        f"QUEUE_RATE_LIMIT={QUEUE_RATE_LIMIT})"
    )
    rss = flight["peak_rss_mb"]
    rows = [
        (
            "wall time to all replied",
            f"{flight['wall_s']:.2f} s",
            f"<= {TARGET_IN_FLIGHT_S:.0f} s (floor ~{FLOOR_IN_FLIGHT_S:.0f} s)",
            verdict(flight["all_answered"] and flight["wall_s"] <= TARGET_IN_FLIGHT_S),
        ),
        (
            "answered / missing / duplicates",
            f"{flight['answered']} / {flight['missing']} / {flight['duplicates']}",
            "duplicates = 0, missing = 0",
            verdict(flight["duplicates"] == 0 and flight["missing"] == 0),
        ),
        (
            "throughput ours vs reference",
            f"{ours_per_min:.0f} vs {reference['per_minute']:.1f} /min = {ratio:.0f}x",
            f">= {TARGET_RATIO:.0f}x" + (" (quick: samples too small)" if quick else ""),
            verdict(ratio >= TARGET_RATIO),
        ),
        (
            "worker peak RSS",
            f"{rss['worker']:.0f} MB",
            f"< {TARGET_WORKER_RSS_MB:.0f} MB",
            verdict(rss["worker"] < TARGET_WORKER_RSS_MB),
        ),
        ("receiver peak RSS (arbiter + 2 workers)", f"{rss['receiver']:.0f} MB", "", ""),
    ]
    for name, value, target, result in rows:
        out.append(f"   {name:40} {value:>30}   {target:34} {result}")
    out.append(
        f"   messages fired in {flight['fired_s'] * 1000:.0f} ms; "
        f"job states {flight['job_states']}; fallback replies {flight['fallback_replies']}; "
        f"retried jobs {flight['retried_jobs']}"
    )
    completion = flight["completion_s"]
    out.append(
        f"   replies done after: p50 {completion['p50']:.2f} s, p90 {completion['p90']:.2f} s, "
        f"last {completion['max']:.2f} s"
    )
    cpu = flight["cpu_s"]
    out.append(
        f"   CPU over {flight['phase_wall_s']:.1f} s wall: "
        + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in cpu.items())
        + f" (2 cores = {2 * flight['phase_wall_s']:.1f} CPU-s available)"
    )
    if flight["last_reply"]:
        out.append(
            "   last reply (sets the wall time), s: "
            + ", ".join(f"{name} {value:.2f}" for name, value in flight["last_reply"].items())
        )
    out.append(
        f"   {'per reply (from the ledger)':42} {'p50 s':>7} {'p90 s':>7} {'p99 s':>7} {'max s':>7}"
    )
    for name, s in flight["s"].items():
        out.append(
            f"   {name:42} {s['p50']:>7.2f} {s['p90']:>7.2f} {s['p99']:>7.2f} {s['max']:>7.2f}"
        )
    out.append("")
    out.append(
        f"4. Reference design (plan's worker: {reference['worker_concurrency']} threads sleeping "
        f"the delay, LLM {reference['llm_latency_ms']} ms): {reference['answered']}/"
        f"{reference['conversations']} conversations in {reference['wall_s']:.1f} s = "
        f"{reference['per_minute']:.1f} conversations/min; reply after message p50 "
        f"{reference['reply_after_message_s']['p50']:.1f} s, max "
        f"{reference['reply_after_message_s']['max']:.1f} s"
    )
    return "\n".join(out)


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], capture_output=True, text=True, cwd=REPO, check=False, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def environment(mode: str) -> dict[str, Any]:
    commit = _git("rev-parse", "--short", "HEAD")
    changed = len(_git("status", "--porcelain", "--untracked-files=no").splitlines())
    return {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "mode": mode,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "commit": commit,
        "uncommitted_changes": changed,  # tracked files differing from the commit
        "load_average_at_start": os.getloadavg(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small samples, for a smoke run")
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    mode = "quick" if args.quick else "full"
    for message in MESSAGES:
        if escalation_reason(message) is not None:
            raise SystemExit(f"benchmark message would hand off to a human: {message!r}")
    started = time.monotonic()
    results: dict[str, Any] = {"meta": environment(mode), "sizes": sizes.__dict__}
    load = results["meta"]["load_average_at_start"][0]
    if load > 0.5 * (os.cpu_count() or 1):
        log(f"warning: load average {load:.1f} before starting; the numbers will be pessimistic")
    with tempfile.TemporaryDirectory(prefix="ai-broker-bench-") as tmp:
        workdir = Path(tmp)
        common = {"QUEUE_RATE_LIMIT": QUEUE_RATE_LIMIT, "LLM_TIMEOUT_S": "20"}
        with running_system(
            workdir, "zero-delay", llm_latency_ms=0, RESPONSE_DELAY_SCALE="0", **common
        ) as bench:
            results["acks"] = measure_acks(bench, sizes, workdir)
            results["overhead"] = measure_overhead(bench, sizes)
        with running_system(
            workdir,
            "in-flight",
            llm_latency_ms=IN_FLIGHT_LLM_MS,
            RESPONSE_DELAY_SCALE="1",
            WORKER_CONCURRENCY=str(IN_FLIGHT_WORKER_CONCURRENCY),
            **common,
        ) as bench:
            results["in_flight"] = measure_in_flight(bench, sizes)
        log(f"reference design: {sizes.reference_conversations} conversations")
        results["reference"] = measure_reference(workdir, sizes)
    results["meta"]["total_s"] = time.monotonic() - started
    results["meta"]["load_average_at_end"] = os.getloadavg()
    report = render(results)
    sys.stdout.write(report + "\n")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    suffix = "-quick" if args.quick else ""
    path = RESULTS_DIR / f"pipeline-{dt.date.today().isoformat()}{suffix}.json"
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    log(f"results written to {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How much the rollout routing decision adds to the webhook path.

Measures, in one run on the embedded default (SQLite store in a temp dir):
1. `bucket()` alone (murmur3 of "reply-pipeline:<id>");
2. `RolloutService.route_for()` as the receiver calls it: the cached state (re-read from the
   store at most once a second) plus the bucket — including the cache refresh, amortised;
3. the worst case, a cache miss: `route_for()` right after the cache expired (one store read);
4. the whole webhook acknowledgement in-process (Flask test client, signed body) with routing
   (n8n configured, 100 % on the new pipeline, so the message takes the same path) against the
   same receiver with no n8n configured (no routing decision at all) — the difference is what
   routing adds end to end.
Run: .venv/bin/python bench/routing_bench.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from app.bootstrap import build_services, prepare_store
from app.config import Settings
from app.domain.rollout import RolloutChange, bucket
from app.domain.webhook_auth import sign
from app.services.rollout import CACHE_TTL_S
from app.web import create_app

FIXTURE = (
    Path(__file__).resolve().parents[1]
    / "tests/fixtures/chatwoot/message_created.incoming_contact.json"
)
SECRET = "bench-secret"


def per_call_us(fn: Callable[[int], object], calls: int) -> float:
    started = time.perf_counter()
    for index in range(calls):
        fn(index)
    return (time.perf_counter() - started) / calls * 1e6


def webhook_latencies_ms(settings: Settings, count: int, *, percentage: int) -> list[float]:
    services = build_services(settings)
    prepare_store(services.store)
    if services.forwarder is not None:
        services.rollout.change(
            RolloutChange(percentage=percentage), actor="bench", reason="routing bench"
        )
    client = create_app(services=services).test_client()
    template = json.loads(FIXTURE.read_text())
    latencies = []
    for index in range(count):
        payload = dict(template, id=10_000_000 + index)
        payload["conversation"] = dict(template["conversation"], id=50_000 + index)
        body = json.dumps(payload, separators=(",", ":")).encode()
        stamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "X-Chatwoot-Timestamp": stamp,
            "X-Chatwoot-Signature": "sha256=" + sign(SECRET, stamp, body),
        }
        started = time.perf_counter()
        response = client.post("/webhooks/chatwoot", data=body, headers=headers)
        latencies.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.get_data(as_text=True)
    services.counters.flush()
    services.store.close()
    return latencies


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    p99 = ordered[max(0, int(len(ordered) * 0.99) - 1)]
    return f"p50 {statistics.median(ordered):.3f} ms  p99 {p99:.3f} ms  (n={len(ordered)})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    calls = 20_000 if args.quick else 200_000
    webhooks = 300 if args.quick else 2_000

    with tempfile.TemporaryDirectory() as tmp:
        base = Settings(data_dir=Path(tmp) / "plain", chatwoot_webhook_secret=SECRET)
        routed = Settings(
            data_dir=Path(tmp) / "routed",
            chatwoot_webhook_secret=SECRET,
            n8n_webhook_url="http://127.0.0.1:9/never-called",
        )
        services = build_services(routed)
        prepare_store(services.store)
        rollout = services.rollout
        bucket_us = per_call_us(bucket, calls)
        rollout.current(fresh=True)
        cached_us = per_call_us(rollout.route_for, calls)
        misses = []
        for index in range(200 if args.quick else 1_000):
            rollout._cached_at = 0.0
            started = time.perf_counter()
            rollout.route_for(index)
            misses.append((time.perf_counter() - started) * 1000)
        services.store.close()

        plain = webhook_latencies_ms(base, webhooks, percentage=100)
        with_routing = webhook_latencies_ms(routed, webhooks, percentage=100)

    p50_delta = statistics.median(with_routing) - statistics.median(plain)
    print("routing decision on the webhook path (embedded SQLite store)")
    print(f"  bucket() (murmur3)                  {bucket_us:8.2f} µs per call")
    print(
        f"  route_for(), cached state           {cached_us:8.2f} µs per call "
        f"(state re-read at most every {CACHE_TTL_S:g} s)"
    )
    print(f"  route_for(), cache miss (store read) {summary(misses)}")
    print(f"  webhook ack, no routing             {summary(plain)}")
    print(f"  webhook ack, with routing (100 %)   {summary(with_routing)}")
    print(
        f"  added by routing, p50               {p50_delta:+.3f} ms   target < 1 ms: "
        f"{'PASS' if p50_delta < 1.0 and statistics.median(misses) < 1.0 else 'MISS'}"
    )


if __name__ == "__main__":
    main()

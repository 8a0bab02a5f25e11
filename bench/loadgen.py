"""Webhook load generator, run by the benchmark as its own process (so that its threads do not
share a GIL with the sandboxes the worker is talking to).

    python bench/loadgen.py SPEC.json

SPEC: {"url", "secret", "bodies": path of a JSON-lines file of webhook bodies, "concurrency",
"warmup": how many of the first bodies to send unmeasured}. Each body is signed the way Chatwoot
signs it (`X-Chatwoot-Signature` over `"<timestamp>.<body>"`) just before it is sent, with a fresh
`X-Chatwoot-Delivery` id. Threads each keep one keep-alive connection and take the next body until
none is left. Prints one JSON object: per-request latencies (ms), status counts, wall time, CPU.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from app.webhook_auth import sign

REQUEST_TIMEOUT_S = 30.0


def run(spec: dict[str, Any]) -> dict[str, Any]:
    bodies = [line.encode() for line in Path(spec["bodies"]).read_text().splitlines() if line]
    warmup = int(spec.get("warmup", 0))
    concurrency = int(spec["concurrency"])
    _send_all(spec["url"], spec["secret"], bodies[:warmup], concurrency)
    cpu_before = os.times()
    started = time.perf_counter()
    latencies, statuses = _send_all(spec["url"], spec["secret"], bodies[warmup:], concurrency)
    wall_s = time.perf_counter() - started
    cpu_after = os.times()
    return {
        "concurrency": concurrency,
        "sent": len(latencies),
        "statuses": dict(statuses),
        "latencies_ms": latencies,
        "wall_s": wall_s,
        "cpu_s": (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system),
    }


def _send_all(
    url: str, secret: str, bodies: list[bytes], concurrency: int
) -> tuple[list[float], Counter[str]]:
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    lock = threading.Lock()
    next_index = iter(range(len(bodies)))

    def take() -> int | None:
        with lock:
            return next(next_index, None)

    def worker() -> None:
        mine: list[float] = []
        seen: Counter[str] = Counter()
        with httpx.Client(timeout=REQUEST_TIMEOUT_S) as client:
            while (index := take()) is not None:
                body = bodies[index]
                timestamp = str(int(time.time()))
                headers = {
                    "Content-Type": "application/json",
                    "X-Chatwoot-Delivery": str(uuid.uuid4()),
                    "X-Chatwoot-Timestamp": timestamp,
                    "X-Chatwoot-Signature": "sha256=" + sign(secret, timestamp, body),
                }
                sent = time.perf_counter()
                try:
                    status = str(client.post(url, content=body, headers=headers).status_code)
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                mine.append((time.perf_counter() - sent) * 1000)
                seen[status] += 1
        with lock:
            latencies.extend(mine)
            statuses.update(seen)

    threads = [threading.Thread(target=worker, name=f"load-{n}") for n in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, statuses


if __name__ == "__main__":
    result = run(json.loads(Path(sys.argv[1]).read_text()))
    sys.stdout.write(json.dumps(result))

"""The PostgreSQL store inside a worker process: queries must not stop the other greenlets.

The worker patches gevent with `select=False` (app/cli.py); psycopg's own C wait would then
block the hub, and ten greenlets' 0.2 s queries would take 2 s, one after the other. The check
runs in a fresh interpreter prepared exactly as `ai-broker worker` prepares itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import psycopg

from tests.support.postgres import temporary_database

GREENLETS = 10
QUERY_S = 0.2

_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    from app.cli import prepare_gevent_process
    prepare_gevent_process()
    import gevent
    from app.store.psycopg_rpc import create_postgres_rpc

    dsn, greenlets, query_s = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    rpc = create_postgres_rpc(dsn, pool_size=greenlets)
    rpc.call("sleep", {"p_s": 0.0})  # connect and look the function up first
    started = time.monotonic()
    gevent.joinall(
        [gevent.spawn(rpc.call, "sleep", {"p_s": query_s}) for _ in range(greenlets)],
        raise_error=True,
    )
    elapsed = time.monotonic() - started
    rpc.close()
    print(json.dumps({"elapsed_s": elapsed}))
    """
)


def test_concurrent_queries_overlap_in_a_worker_process() -> None:
    with temporary_database() as dsn:
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(
                "CREATE FUNCTION ai_broker_sleep(p_s double precision) RETURNS void "
                "LANGUAGE sql AS 'SELECT pg_sleep(p_s)'"
            )
        result = subprocess.run(
            [sys.executable, "-c", _SCRIPT, dsn, str(GREENLETS), str(QUERY_S)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
    elapsed = json.loads(result.stdout.strip().splitlines()[-1])["elapsed_s"]
    print(f"{GREENLETS} concurrent {QUERY_S} s queries took {elapsed:.3f} s")
    # One after the other they take GREENLETS * QUERY_S = 2 s; overlapping, one query's time.
    assert elapsed < GREENLETS * QUERY_S / 2

"""`ai-broker doctor` on Redis services that will not show their persistence settings.

Managed Redis (ElastiCache, Upstash, Redis Cloud) refuses CONFIG GET: it renames the command
away or denies it to the user. Doctor cannot check the fsync policy there, so it must say so and
what to verify by hand, as a warning, and still run every other check. Against real redis-servers
of the tests' own: one with CONFIG renamed away, one with an ACL user denied it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from app.adapters.redis_intake import RedisIntake
from app.config import Settings
from app.doctor import run_doctor
from tests.support.redis_server import RedisServer

CHECKS = ("store", "queue", "intake", "chatwoot", "openai", "webhooks", "n8n", "slack")
UNCHECKED = (
    r"^\[warn\] intake\s+could not check Redis's persistence \(CONFIG GET refused: {reason}.*\); "
    r"verify by hand, in the Redis service's settings, that it persists append-only with fsync "
    r"always \(appendonly yes, appendfsync always\), or a Redis crash can lose accepted messages"
)


@pytest.fixture(scope="module")
def config_renamed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis-no-config"), refuse_config=True)
    server.start()
    yield server
    server.stop()


def doctor(tmp_path: Path, redis_url: str) -> tuple[int, str]:
    lines: list[str] = []
    code = run_doctor(Settings(data_dir=tmp_path, redis_url=redis_url), out=lines.append)
    return code, "".join(lines)


def assert_every_check_ran(report: str) -> None:
    names = re.findall(r"^\[(?:ok  |warn|FAIL)\] (\w+)", report, re.MULTILINE)
    assert tuple(names) == CHECKS, report
    # The queue lives on the same Redis and needs no CONFIG: it is checked as usual.
    assert re.search(r"^\[ok  \] queue\s+Redis redis://127\.0\.0\.1:\d+/0", report, re.M), report


def test_a_renamed_config_is_a_warning_with_what_to_verify(
    tmp_path: Path, config_renamed: RedisServer
) -> None:
    with redis.Redis.from_url(config_renamed.url) as client, pytest.raises(redis.ResponseError):
        client.config_get("appendfsync")  # the server really refuses it
    _, report = doctor(tmp_path, config_renamed.url)
    assert re.search(
        UNCHECKED.format(reason=re.escape("unknown command 'CONFIG'")), report, re.M
    ), report
    assert re.search(r"^\[warn\] intake .*\(0 waiting, 0 parked\)$", report, re.M), report
    assert_every_check_ran(report)


def test_config_denied_to_the_user_is_a_warning_and_parked_messages_still_show(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    admin = redis.Redis.from_url(redis_server.url)
    # This server answers CONFIG GET for its default user: the intake check passes.
    _, report = doctor(tmp_path, redis_server.url)
    assert re.search(r"^\[ok  \] intake\s+Redis append-only, fsync always", report, re.M), report
    admin.acl_setuser(
        "broker", enabled=True, passwords=["+secret"], keys=["*"], commands=["+@all", "-config"]
    )
    parked = RedisIntake(admin).rejected_key
    admin.lpush(parked, b"an entry a worker could not record")
    try:
        url = redis_server.url.replace("redis://", "redis://broker:secret@")
        _, report = doctor(tmp_path, url)
    finally:
        admin.delete(parked)
        admin.acl_deluser("broker")
        admin.close()
    assert re.search(UNCHECKED.format(reason="this user has no permissions"), report, re.M), report
    parked_line = (
        r"; 1 message\(s\) parked for an operator: see docs/runbook.md, Intake buffer "
        r"\(0 waiting, 1 parked\)$"
    )
    assert re.search(parked_line, report, re.M), report
    assert_every_check_ran(report)


def test_n8n_without_its_sender_is_a_warning_that_says_what_to_set(tmp_path: Path) -> None:
    from app.domain.events import Sender
    from app.sandbox.n8n import WEBHOOK_PATH, N8nSandbox

    with N8nSandbox() as n8n:
        url = f"{n8n.url}{WEBHOOK_PATH}"
        missing, configured = [], []
        run_doctor(Settings(data_dir=tmp_path, n8n_webhook_url=url), out=missing.append)
        run_doctor(
            Settings(data_dir=tmp_path, n8n_webhook_url=url, n8n_sender=Sender("user", 31)),
            out=configured.append,
        )
    (warned,) = [line for line in missing if re.match(r"^\[(ok  |warn|FAIL)\] n8n ", line)]
    assert warned.startswith("[warn] n8n") and "N8N_SENDER is missing" in warned
    (fine,) = [line for line in configured if re.match(r"^\[(ok  |warn|FAIL)\] n8n ", line)]
    assert fine.startswith("[ok  ] n8n") and "replies from user:31 (N8N_SENDER)" in fine

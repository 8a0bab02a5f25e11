"""Fixtures shared by more than one test package."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator

import pytest

from tests.support.redis_server import RedisServer


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server of the module's own on a free port (append-only), stopped afterwards."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


REPORTED = "reported line"


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """A line on the terminal, past output capture: the figures a test prints. The lines travel
    with the test's report, so they reach the terminal from xdist workers too (which have none);
    they appear when the test ends."""

    def write(line: str) -> None:
        request.node.user_properties.append((REPORTED, line))

    return write


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # In the process that owns the terminal: the run itself, or xdist's controller.
    if report.when != "teardown":
        return
    lines = [str(value) for name, value in report.user_properties if name == REPORTED]
    if lines:
        sys.stdout.write("\n" + "\n".join(lines) + "\n")
        sys.stdout.flush()

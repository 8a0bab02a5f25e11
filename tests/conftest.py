"""Fixtures shared by more than one test package."""

from __future__ import annotations

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


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """A line on the terminal, past output capture: the figures a test prints."""
    plugins = request.config.pluginmanager
    reporter, capture = plugins.getplugin("terminalreporter"), plugins.getplugin("capturemanager")

    def write(line: str) -> None:
        if reporter is not None and capture is not None:
            with capture.global_and_fixture_disabled():
                reporter.write_line(line)

    return write

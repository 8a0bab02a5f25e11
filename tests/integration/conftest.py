"""Sandboxes shared by the integration tests: a Chatwoot sandbox, and an n8n workflow that posts
its replies into it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.sandbox.chatwoot import ChatwootSandbox
from app.sandbox.n8n import N8nSandbox


@pytest.fixture
def chatwoot() -> Iterator[ChatwootSandbox]:
    with ChatwootSandbox(webhook_retry_wait_s=0.05) as sandbox:
        yield sandbox


@pytest.fixture
def n8n(chatwoot: ChatwootSandbox) -> Iterator[N8nSandbox]:
    with N8nSandbox(chatwoot_url=chatwoot.url) as sandbox:
        yield sandbox

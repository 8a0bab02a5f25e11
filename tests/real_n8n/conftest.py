"""The real n8n and the sandboxes its workflow calls, shared by the tests against it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.sandbox.chatwoot import ChatwootSandbox
from app.sandbox.llm import LLMSandbox
from tests.support.migration import N8N_TOKEN, MigrationSystem, migration_system
from tests.support.real_n8n import (
    REFERENCE_PATH,
    SILENT_PATH,
    N8nNotInstalled,
    RealN8n,
    reference_workflow,
    silent_workflow,
)


@pytest.fixture(scope="session")
def chatwoot() -> Iterator[ChatwootSandbox]:
    with ChatwootSandbox(webhook_retry_wait_s=0.5) as sandbox:
        yield sandbox


@pytest.fixture(scope="session")
def llm() -> Iterator[LLMSandbox]:
    with LLMSandbox() as sandbox:
        yield sandbox


@pytest.fixture(scope="session")
def n8n(
    tmp_path_factory: pytest.TempPathFactory, chatwoot: ChatwootSandbox, llm: LLMSandbox
) -> Iterator[RealN8n]:
    """n8n with the reference workflow and its silent twin published, both webhooks live."""
    try:
        instance = RealN8n(
            tmp_path_factory.mktemp("n8n"),
            workflow_env={
                "OPENAI_BASE_URL": f"{llm.url}/v1",
                "OPENAI_API_KEY": "sandbox-key",
                "CHATWOOT_BASE_URL": chatwoot.url,
                "CHATWOOT_ACCOUNT_ID": str(chatwoot.account_id),
                "CHATWOOT_N8N_TOKEN": N8N_TOKEN,
            },
        )
    except N8nNotInstalled as exc:
        pytest.fail(str(exc))
    instance.install_workflow(reference_workflow())
    instance.install_workflow(silent_workflow())
    instance.start()
    try:
        instance.wait_ready(REFERENCE_PATH)
        instance.wait_ready(SILENT_PATH)
        yield instance
    finally:
        instance.stop()


@pytest.fixture(scope="module")
def system(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    chatwoot: ChatwootSandbox,
    llm: LLMSandbox,
    n8n: RealN8n,
) -> Iterator[MigrationSystem]:
    """web and worker forwarding n8n's share to the test module's WEBHOOK_PATH, with the
    module's SYSTEM_ENV over the migration system's settings."""
    module = request.module
    with migration_system(
        tmp_path_factory.mktemp(module.__name__.rsplit(".", 1)[-1]),
        chatwoot,
        llm,
        n8n_webhook_url=n8n.webhook_url(module.WEBHOOK_PATH),
        system_type=MigrationSystem,
        **getattr(module, "SYSTEM_ENV", {}),
    ) as running:
        yield running

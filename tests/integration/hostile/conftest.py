"""One receiver per module, wired to the embedded store and a Chatwoot sandbox, with every
credential set so that hostile requests get past authentication to the parsers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask.testing import FlaskClient

from app.bootstrap import Services, build_services, prepare_store
from app.config import Settings
from app.sandbox.chatwoot import ChatwootSandbox
from app.sandbox.n8n import WEBHOOK_PATH, N8nSandbox
from app.web import create_app
from tests.support.hostile import ADMIN_TOKEN, FORM_TOKEN, SECRET, StoreFingerprint


@pytest.fixture(scope="module")
def chatwoot() -> Iterator[ChatwootSandbox]:
    with ChatwootSandbox(webhook_retry_wait_s=0.05) as sandbox:
        yield sandbox


@pytest.fixture(scope="module")
def n8n(chatwoot: ChatwootSandbox) -> Iterator[N8nSandbox]:
    # With n8n configured a rollback has somewhere to go, so the fuzz can reach its success path.
    with N8nSandbox(chatwoot_url=chatwoot.url) as sandbox:
        yield sandbox


@pytest.fixture(scope="module")
def services(
    tmp_path_factory: pytest.TempPathFactory, chatwoot: ChatwootSandbox, n8n: N8nSandbox
) -> Iterator[Services]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("hostile"),
        chatwoot_webhook_secret=SECRET,
        chatwoot_base_url=chatwoot.url,
        chatwoot_account_id=chatwoot.account_id,
        chatwoot_inbox_id=chatwoot.inbox_id,
        chatwoot_api_token="sandbox-user-token",
        chatwoot_bot_token="sandbox-bot-token",
        form_token=FORM_TOKEN,
        admin_token=ADMIN_TOKEN,
        n8n_webhook_url=f"{n8n.url}{WEBHOOK_PATH}",
    )
    wired = build_services(settings)
    prepare_store(wired.store)
    yield wired
    wired.store.close()


@pytest.fixture(scope="module")
def client(services: Services) -> Iterator[FlaskClient]:
    with create_app(services=services).test_client() as test_client:
        yield test_client


@pytest.fixture(scope="module")
def fingerprint(services: Services) -> StoreFingerprint:
    return StoreFingerprint(services.settings.data_dir / "store.db")

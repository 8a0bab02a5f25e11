"""A running system set up for the migration: `ai-broker web` and `ai-broker worker` processes
with the Chatwoot, LLM and Slack sandboxes and an n8n workflow (the n8n sandbox, or the real n8n)
posting its replies into the Chatwoot sandbox as n8n's user."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx

from app.sandbox.chatwoot import ChatwootSandbox
from app.sandbox.chatwoot.records import AUTOMATION_USER_ID
from app.sandbox.llm import LLMSandbox
from app.sandbox.slack import SlackSandbox
from tests.support.system import (
    WEBHOOK_SECRET,
    RunningSystem,
    free_port,
    system_env,
    wait_until,
)

ADMIN_TOKEN = "e2e-admin"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
# Who the workflow posts as: the Chatwoot sandbox's automation user, whose token it is given.
N8N_SENDER = f"user:{AUTOMATION_USER_ID}"
N8N_TOKEN = "sandbox-n8n-token"


class MigrationSystem(RunningSystem):
    slack: SlackSandbox

    def admin(self, method: str, path: str, body: dict | None = None) -> httpx.Response:
        return httpx.request(
            method, f"{self.url}/api/admin/{path}", json=body, headers=ADMIN, timeout=60
        )

    def set_rollout(self, **body: Any) -> None:
        response = self.admin("PUT", "rollout", {"reason": "e2e", **body})
        assert response.status_code == 200, response.text
        time.sleep(1.2)  # every receiver process re-reads within its 1 s cache

    def circuit(self) -> str:
        return str(self.admin("GET", "migration-status").json()["n8n"]["circuit"]["position"])

    def answers(self, conversation_id: int) -> dict[str, int]:
        """Public replies in a conversation, by who sent them: the new pipeline (its marker),
        n8n (its user) or a human agent (any other user)."""
        counts = {"new": 0, "n8n": 0, "human": 0}
        for message in self.public_replies(conversation_id):
            if "broker_job_id" in (message.get("content_attributes") or {}):
                counts["new"] += 1
            elif message["sender_id"] == AUTOMATION_USER_ID:
                counts["n8n"] += 1
            else:
                counts["human"] += 1
        return counts

    def public_replies(self, conversation_id: int) -> list[dict[str, Any]]:
        return [
            m
            for m in self.chatwoot.messages(conversation_id)
            if m["message_type"] == 1 and not m["private"]
        ]

    def send_each(self, conversations: list[int], text: str) -> None:
        for conversation_id in conversations:
            self.chatwoot.customer_message(conversation_id, text)

    def wait_all_answered(
        self, conversations: list[int], *, count: int = 1, timeout: float = 90
    ) -> None:
        wait_until(
            lambda: all(sum(self.answers(c).values()) >= count for c in conversations),
            timeout=timeout,
            interval=0.5,
            what=f"every conversation answered {count} time(s)",
        )


System = TypeVar("System", bound=MigrationSystem)


@contextmanager
def migration_system(
    data_dir: Path,
    chatwoot: ChatwootSandbox,
    llm: LLMSandbox,
    *,
    n8n_webhook_url: str,
    system_type: type[System],
    **env: str,
) -> Iterator[System]:
    """web (two receiver processes) and worker, with n8n's sender set, a short circuit cooldown
    and no human-like delays; `env` over that."""
    port = free_port()
    webhooks_before = chatwoot.webhooks()
    with SlackSandbox() as slack:
        chatwoot.add_webhook(
            f"http://127.0.0.1:{port}/webhooks/chatwoot", secret=WEBHOOK_SECRET, kind="agent_bot"
        )
        settings = {
            "RESPONSE_DELAY_SCALE": "0",
            "N8N_AI_BROKER_WEBHOOK_URL": n8n_webhook_url,
            "N8N_SENDER": N8N_SENDER,
            "N8N_TIMEOUT_S": "2",
            # Seconds instead of the default 30: tests that open the circuit wait for it to
            # close again, and the cooldown is what they wait out.
            "N8N_CIRCUIT_COOLDOWN_S": "5",
            "ADMIN_TOKEN": ADMIN_TOKEN,
            "SLACK_WEBHOOK_URL": slack.webhook_url,
            "QUEUE_RATE_LIMIT": "500",
            "WORKER_CONCURRENCY": "64",
            "WEB_CONCURRENCY": "2",
            **env,
        }
        running = system_type(
            data_dir=data_dir,
            port=port,
            chatwoot=chatwoot,
            llm=llm,
            env=system_env(data_dir, port, chatwoot, llm, **settings),
        )
        running.slack = slack
        running.start("web", "worker")
        try:
            running.wait_ready()
            yield running
        finally:
            running.stop_all()
            chatwoot.set_webhooks(webhooks_before)

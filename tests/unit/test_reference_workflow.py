"""docs/n8n/chatwoot-ai-broker.json, the reference legacy workflow, stays what the docs and the
n8n sandbox say it is: its webhook on the sandbox's path, responding immediately, then the
customer-message filter, the chat completion and the post to Chatwoot, in that order."""

from __future__ import annotations

import json
from pathlib import Path

from app.sandbox.n8n import WEBHOOK_PATH

WORKFLOW = Path(__file__).resolve().parents[2] / "docs" / "n8n" / "chatwoot-ai-broker.json"


def test_the_reference_workflow_is_the_legacy_one() -> None:
    workflow = json.loads(WORKFLOW.read_text())
    nodes = {node["name"]: node for node in workflow["nodes"]}
    webhook = nodes["Chatwoot webhook"]
    assert webhook["type"] == "n8n-nodes-base.webhook"
    assert f"/webhook/{webhook['parameters']['path']}" == WEBHOOK_PATH
    assert webhook["parameters"]["responseMode"] == "onReceived"  # "Workflow was started"

    order, current = [], "Chatwoot webhook"
    while current in workflow["connections"]:
        (targets,) = workflow["connections"][current]["main"]
        current = targets[0]["node"]
        order.append(current)
    assert order == ["Customer messages only", "OpenAI reply", "Chatwoot reply"]
    assert "/chat/completions" in nodes["OpenAI reply"]["parameters"]["url"]
    post = nodes["Chatwoot reply"]["parameters"]
    assert post["url"].endswith("/messages") and "$env.CHATWOOT_N8N_TOKEN" in json.dumps(post)

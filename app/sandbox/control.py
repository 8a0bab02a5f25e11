"""HTTP clients for sandboxes running in another process (the demo, an e2e test's servers).

They mirror the sandboxes' Python helpers one for one, over the `/_sandbox/*` control routes, so a
test reads the same whether the sandbox runs in-process or elsewhere. Errors raise
`httpx.HTTPStatusError`: a control call that fails is a broken test set-up, never something to
carry on from.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self

import httpx


class SandboxControl:
    """Fault controls shared by every sandbox, and the plumbing of the subclasses."""

    def __init__(self, url: str, *, timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=timeout_s)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _call(
        self, method: str, path: str, body: Any = None, *, timeout_s: float | None = None
    ) -> Any:
        extra: dict[str, Any] = {} if timeout_s is None else {"timeout": timeout_s}
        response = self._http.request(method, path, json=body, **extra)
        response.raise_for_status()
        return response.json() if response.content else None

    def _object(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        answer = self._call(method, path, body)
        if not isinstance(answer, dict):
            raise TypeError(f"{method} {path} answered {type(answer).__name__}, not an object")
        return answer

    def _items(self, method: str, path: str, body: Any = None) -> list[dict[str, Any]]:
        answer = self._call(method, path, body)
        if not isinstance(answer, list):
            raise TypeError(f"{method} {path} answered {type(answer).__name__}, not a list")
        return answer

    def set_faults(self, **fields: Any) -> dict[str, Any]:
        """Replace the fault plan (fields not named take their defaults); returns the plan."""
        return self._object("PUT", "/_sandbox/faults", fields)

    def reset_faults(self) -> dict[str, Any]:
        return self._object("DELETE", "/_sandbox/faults")

    def faults(self) -> dict[str, Any]:
        return self._object("GET", "/_sandbox/faults")

    def reset(self) -> None:
        """Forget everything the sandbox recorded and clear its faults."""
        self._call("POST", "/_sandbox/reset")


class ChatwootSandboxControl(SandboxControl):
    """Drives a `ChatwootSandbox` over HTTP."""

    def info(self) -> dict[str, Any]:
        """Account, inbox, bot and agent ids, and the sandbox's tokens."""
        return self._object("GET", "/_sandbox/info")

    def set_webhooks(self, webhooks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Replace all registrations with `[{url, secret, kind, subscriptions}, …]`."""
        return self._items("PUT", "/_sandbox/webhooks", webhooks)

    def add_webhook(
        self,
        url: str,
        *,
        secret: str | None,
        kind: str,
        subscriptions: list[str] | None = None,
    ) -> list[dict[str, Any]]:
        body = {"url": url, "secret": secret, "kind": kind, "subscriptions": subscriptions}
        return self._items("POST", "/_sandbox/webhooks", body)

    def webhooks(self) -> list[dict[str, Any]]:
        return self._items("GET", "/_sandbox/webhooks")

    def create_lead_conversation(
        self,
        name: str,
        email: str,
        phone: str,
        *,
        custom_attributes: dict[str, Any] | None = None,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        body = {
            "name": name,
            "email": email,
            "phone": phone,
            "custom_attributes": custom_attributes,
        }
        created = self._call("POST", "/_sandbox/lead_conversations", body)
        return created["contact"], created["conversation"]

    def customer_message(self, conversation_id: int, content: str) -> dict[str, Any]:
        return self._act(conversation_id, "customer_message", {"content": content})

    def agent_reply(self, conversation_id: int, content: str) -> dict[str, Any]:
        return self._act(conversation_id, "agent_reply", {"content": content})

    def private_note(self, conversation_id: int, content: str) -> dict[str, Any]:
        return self._act(conversation_id, "private_note", {"content": content})

    def assign_human(self, conversation_id: int) -> dict[str, Any]:
        return self._act(conversation_id, "assign_human", {})

    def conversations(self) -> list[dict[str, Any]]:
        return self._items("GET", "/_sandbox/conversations")

    def conversation(self, conversation_id: int) -> dict[str, Any]:
        return self._object("GET", f"/_sandbox/conversations/{conversation_id}")

    def messages(self, conversation_id: int) -> list[dict[str, Any]]:
        return self._items("GET", f"/_sandbox/conversations/{conversation_id}/messages")

    def deliveries(self) -> list[dict[str, Any]]:
        return self._items("GET", "/_sandbox/deliveries")

    def wait_for_deliveries(self, timeout_s: float = 10.0) -> bool:
        """Wait until every queued webhook (retries included) was delivered or given up."""
        result = self._call(
            "POST", "/_sandbox/deliveries/wait", {"timeout_s": timeout_s}, timeout_s=timeout_s + 5
        )
        return bool(result["idle"])

    def requests(self) -> list[dict[str, Any]]:
        return self._items("GET", "/_sandbox/requests")

    def _act(self, conversation_id: int, action: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._object("POST", f"/_sandbox/conversations/{conversation_id}/{action}", body)


class LLMSandboxControl(SandboxControl):
    """Drives an `LLMSandbox` over HTTP."""

    def configure(self, **settings: Any) -> dict[str, Any]:
        """Change `latency_ms` and/or `fixed_reply` (None restores the persona replies)."""
        return self._object("PUT", "/_sandbox/config", settings)

    def config(self) -> dict[str, Any]:
        return self._object("GET", "/_sandbox/config")

    def calls(self) -> list[dict[str, Any]]:
        return self._items("GET", "/_sandbox/calls")


class N8nSandboxControl(SandboxControl):
    """Drives an `N8nSandbox` over HTTP."""

    def configure(self, **settings: Any) -> dict[str, Any]:
        """Change `reply_delay_ms`, `respond`, `state`, `post_replies`, `chatwoot_url`,
        `account_id` or `api_token`."""
        return self._object("PUT", "/_sandbox/config", settings)

    def config(self) -> dict[str, Any]:
        return self._object("GET", "/_sandbox/config")

    def received(self) -> list[dict[str, Any]]:
        return self._items("GET", "/_sandbox/received")

"""The Chatwoot port: what the services ask of Chatwoot, in the domain's values, and the errors
every implementation raises (docs/chatwoot-contract.md §4).

Every error is a `ChatwootError` whose `retryable` and `retry_after` tell the pipeline whether and
when to try again, and whose message is safe to log (never a token, a body or a query).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from app.domain.chatwoot import ChatMessage, Contact, RemoteConversation


class ChatwootError(Exception):
    """A Chatwoot call failed. The message is safe to log: it never contains a token or a body."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after


class ChatwootAuthError(ChatwootError):
    """401: bad token, bot token on a user-only endpoint, Pundit refusal or suspended account."""

    def __init__(self, message: str, *, status: int | None = 401) -> None:
        super().__init__(message, status=status, retryable=False)


class ChatwootNotFound(ChatwootError):
    """404: the contact, conversation or account does not exist (or is not visible to the token)."""

    def __init__(self, message: str, *, status: int | None = 404) -> None:
        super().__init__(message, status=status, retryable=False)


class ChatwootValidationError(ChatwootError):
    """422: a validation failure (`attributes` names the fields) or a rejected parameter.

    The message-flood 422 ("Too many messages") is the one retryable case: it clears in a minute.
    """

    def __init__(
        self,
        message: str,
        *,
        attributes: list[str] | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
        status: int | None = 422,
    ) -> None:
        super().__init__(message, status=status, retryable=retryable, retry_after=retry_after)
        self.attributes: list[str] = list(attributes or [])


class ChatwootRateLimited(ChatwootError):
    """429 from Rack::Attack (plain-text "Retry later"); `retry_after` from the header if sent."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message, status=429, retryable=True, retry_after=retry_after)


class ChatwootUnavailable(ChatwootError):
    """5xx, timeout, connection failure or a 2xx that is not JSON: worth retrying later."""

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, status=status, retryable=True, retry_after=retry_after)


class Conversations(Protocol):
    """A conversation and its messages, as the reply pipeline uses them."""

    def get_conversation(self, conversation_id: int) -> RemoteConversation: ...

    def merge_custom_attributes(self, conversation_id: int, changes: Mapping[str, Any]) -> None:
        """The conversation's custom attributes with `changes` on top (others kept)."""
        ...

    def toggle_status(self, conversation_id: int, status: str) -> None:
        """With the bot's token, pending → open is Chatwoot's bot handoff."""
        ...

    def list_messages(self, conversation_id: int) -> list[ChatMessage]:
        """The latest page of messages, oldest first."""
        ...

    def find_message_with_marker(
        self, conversation_id: int, key: str, value: str
    ) -> ChatMessage | None:
        """The newest message whose `content_attributes[key] == value` (an earlier send)."""
        ...

    def send_message(
        self,
        conversation_id: int,
        content: str,
        *,
        private: bool = False,
        content_attributes: Mapping[str, Any] | None = None,
    ) -> ChatMessage: ...


class Chatwoot(Conversations, Protocol):
    """One Chatwoot account: its conversations, and the contacts the lead form brings."""

    def find_or_create_contact(
        self,
        *,
        name: str,
        email: str | None,
        phone_number: str | None,
        inbox_id: int,
        custom_attributes: Mapping[str, Any] | None = None,
    ) -> Contact:
        """The contact with this e-mail (first) or phone number, created if neither is known."""
        ...

    def contact_conversations(self, contact_id: int) -> list[RemoteConversation]:
        """The contact's last 20 conversations, most recently active first."""
        ...

    def create_conversation(
        self, *, inbox_id: int, contact_id: int, custom_attributes: Mapping[str, Any]
    ) -> RemoteConversation: ...

"""The sandbox server itself: its state, Python controls and actors, operations and routes."""

from __future__ import annotations

import contextlib
import hmac
import itertools
import logging
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, Literal

from flask import Flask, Response, jsonify, request

from app.sandbox.chatwoot.presenters import ChatwootPresenter
from app.sandbox.chatwoot.records import (
    ACTIVITY,
    CONTENT_TYPES,
    CONVERSATION_STATUSES,
    INCOMING,
    MESSAGE_TYPE_NAMES,
    MESSAGE_TYPES,
    OUTGOING,
    PRIORITIES,
    TRACKED_KEYS,
    Actor,
    Contact,
    ContactInbox,
    Conversation,
    Installation,
    Message,
    Webhook,
    WebhookKind,
    make_webhook,
)
from app.sandbox.chatwoot.webhooks import WebhookDelivery, WebhookDispatcher
from app.sandbox.chatwoot.wire import (
    ChatwootApiError,
    encode_webhook_body,
    iso,
    iso_or_none,
    unprocessable,
)
from app.sandbox.faults import Fault
from app.sandbox.server import SandboxServer, json_object

logger = logging.getLogger(__name__)

# A REST handler: (actor, JSON body, **path ids) -> anything Flask can turn into a response.
ApiHandler = Callable[..., Any]
TokenKind = Literal["user", "bot", "invalid"]

CONTACTS_PER_PAGE = 15

NOT_FOUND = {"error": "Resource could not be found"}
INVALID_TOKEN = {"error": "Invalid Access Token"}
BOT_FORBIDDEN = {"error": "Access to this endpoint is not authorized for bots"}
# devise_token_auth's answer when no access token header is sent at all.
SIGN_IN_REQUIRED = {"errors": ["You need to sign in or sign up before continuing."]}
E164 = r"\+[1-9]\d{1,14}"
BOT_FAILURE_ACTIVITY = "Conversation was marked open by system due to an error with the agent bot."


class ChatwootSandbox(SandboxServer):
    """Chatwoot's REST API and webhooks for one account, one API inbox with an active agent bot.

    The inbox's bot is always active, so new conversations start `pending` and every registered
    agent-bot webhook receives every conversation's events. The user token belongs to the human
    agent (Priya by default); the bot token to the agent bot. All state sits behind one lock.
    """

    name = "chatwoot"

    def __init__(
        self,
        *,
        account_id: int = 3,
        inbox_id: int = 7,
        api_token: str = "sandbox-user-token",  # noqa: S107 - well-known sandbox tokens
        bot_token: str = "sandbox-bot-token",  # noqa: S107
        automation_token: str = "sandbox-n8n-token",  # noqa: S107 - n8n's user token
        bot_id: int = 12,
        bot_name: str = "Mortgage Broker AI",
        agent_id: int = 21,
        agent_name: str = "Priya Raman",
        port: int = 0,
        webhook_retry_wait_s: float = 3.0,
        webhook_timeout_s: float = 5.0,
        webhook_workers: int = 8,
        account_name: str = "Harbourline Mortgage Advisory",
        inbox_name: str = "Website Chat (API)",
        messages_per_minute_limit: int = 200,
        keep_pending_on_bot_failure: bool = False,
        first_conversation_id: int = 1000,
    ) -> None:
        super().__init__(port=port)
        self.installation = Installation(
            account_id=account_id,
            account_name=account_name,
            inbox_id=inbox_id,
            inbox_name=inbox_name,
            channel_id=4,
            bot_id=bot_id,
            bot_name=bot_name,
            agent_id=agent_id,
            agent_name=agent_name,
            created_at=time.time(),
        )
        self.api_token = api_token
        self.bot_token = bot_token
        self.automation_token = automation_token
        self.messages_per_minute_limit = messages_per_minute_limit
        self.keep_pending_on_bot_failure = keep_pending_on_bot_failure
        self._user = Actor(kind="user", id=agent_id, name=agent_name)
        self._bot = Actor(kind="bot", id=bot_id, name=bot_name)
        self._automation = Actor(
            kind="user",
            id=self.installation.automation_user_id,
            name=self.installation.automation_user_name,
        )
        self._lock = threading.RLock()
        self._webhooks: list[Webhook] = []
        self._contacts: dict[int, Contact] = {}
        self._contact_inboxes: dict[int, ContactInbox] = {}
        self._conversations: dict[int, Conversation] = {}
        self._requests: list[dict[str, Any]] = []
        # Ids keep growing across reset(), like database sequences: a system under test that
        # remembers ids (dedupe on message id) must never see an old id again.
        self._contact_ids = itertools.count(4600)
        self._contact_inbox_ids = itertools.count(5200)
        self._conversation_ids = itertools.count(first_conversation_id)
        self._message_ids = itertools.count(90300)
        self._present = ChatwootPresenter(self.installation, self._contacts, self._contact_inboxes)
        self._dispatcher = WebhookDispatcher(
            timeout_s=webhook_timeout_s,
            retry_wait_s=webhook_retry_wait_s,
            workers=webhook_workers,
            on_final_failure=self._on_bot_delivery_failed,
        )

    @property
    def account_id(self) -> int:
        return self.installation.account_id

    @property
    def inbox_id(self) -> int:
        return self.installation.inbox_id

    def _on_stop(self) -> None:
        self._dispatcher.close()

    # -- sandbox controls (Python) ---------------------------------------------------------------

    def add_webhook(
        self,
        url: str,
        *,
        secret: str | None,
        kind: WebhookKind,
        subscriptions: list[str] | None = None,
    ) -> None:
        """Register an agent bot's outgoing_url or an account webhook."""
        webhook = make_webhook(url, secret=secret, kind=kind, subscriptions=subscriptions)
        with self._lock:
            self._webhooks.append(webhook)

    def set_webhooks(self, webhooks: list[dict[str, Any]]) -> None:
        """Replace every registration with `[{url, secret, kind, subscriptions}, …]`."""
        parsed = [
            make_webhook(
                w.get("url", ""),
                secret=w.get("secret"),
                kind=w.get("kind", ""),
                subscriptions=w.get("subscriptions"),
            )
            for w in webhooks
        ]
        with self._lock:
            self._webhooks = parsed

    def webhooks(self) -> list[dict[str, Any]]:
        with self._lock:
            return [w.describe() for w in self._webhooks]

    def reset(self) -> None:
        """Forget contacts, conversations, deliveries, requests and faults; keep the webhooks."""
        with self._lock:
            for records in (self._contacts, self._contact_inboxes, self._conversations):
                records.clear()
            self._requests.clear()
        self._dispatcher.reset()
        self.faults.reset()

    def conversations(self) -> list[dict[str, Any]]:
        with self._lock:
            return [self._present.conversation_inspection(c) for c in self._conversations.values()]

    def conversation(self, conversation_id: int) -> dict[str, Any]:
        with self._lock:
            return self._present.conversation_inspection(self._find(conversation_id))

    def messages(self, conversation_id: int) -> list[dict[str, Any]]:
        """Every message of a conversation, private notes and activity included, oldest first."""
        with self._lock:
            conversation = self._find(conversation_id)
            return [self._present.message_push(m, conversation) for m in conversation.messages]

    def deliveries(self) -> list[dict[str, Any]]:
        """Every webhook delivery attempt so far."""
        return self._dispatcher.records()

    def wait_for_deliveries(self, timeout_s: float = 10.0) -> bool:
        """Wait until every queued webhook (retries included) has been delivered or given up."""
        return self._dispatcher.wait_idle(timeout_s)

    def requests(self) -> list[dict[str, Any]]:
        """Every API request received: method, path, token kind, JSON body and response status."""
        with self._lock:
            return [dict(r) for r in self._requests]

    # -- sandbox actors (Python) -----------------------------------------------------------------

    def customer_message(self, conversation_id: int, content: str) -> dict[str, Any]:
        """The contact writes in (what an API-inbox `message_type: incoming` post does)."""
        return self._sandbox_message(conversation_id, content, INCOMING, private=False)

    def agent_reply(self, conversation_id: int, content: str) -> dict[str, Any]:
        """The human agent answers the customer from the Chatwoot dashboard."""
        return self._sandbox_message(conversation_id, content, OUTGOING, private=False)

    def private_note(self, conversation_id: int, content: str) -> dict[str, Any]:
        """The human agent leaves a private note: delivered to webhooks, hidden from the contact."""
        return self._sandbox_message(conversation_id, content, OUTGOING, private=True)

    def assign_human(self, conversation_id: int) -> dict[str, Any]:
        """The human agent self-assigns the conversation (a handoff signal for the bot)."""
        with self._lock:
            conversation = self._find(conversation_id)
            conversation.agent_last_seen_at = conversation.assignee_last_seen_at = time.time()
            self._assign(conversation, self._user, user=True)
            return self._present.conversation_api(conversation)

    def create_lead_conversation(
        self,
        name: str,
        email: str,
        phone: str,
        *,
        custom_attributes: dict[str, Any] | None = None,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """A website lead: the contact (reused when its email or phone is known) and a new
        conversation, as the lead form of the product would create them."""
        with self._lock:
            contact = next(
                (
                    c
                    for c in self._contacts.values()
                    if c.email == email.strip().lower() or c.phone_number == phone
                ),
                None,
            )
            if contact is None:
                contact = self._create_contact(
                    {"name": name, "email": email, "phone_number": phone}
                )
            contact_inbox = self._contact_inbox_for(contact, source_id=None)
            conversation = self._create_conversation(
                contact, contact_inbox, {"custom_attributes": custom_attributes or {}}, self._user
            )
            return (
                self._present.contact_api(contact, with_inboxes=True),
                self._present.conversation_api(conversation),
            )

    # -- operations (call with the lock held) ----------------------------------------------------

    def _find(self, conversation_id: int) -> Conversation:
        conversation = self._conversations.get(conversation_id)
        if conversation is None:
            raise ChatwootApiError(404, NOT_FOUND)
        return conversation

    def _sandbox_message(
        self, conversation_id: int, content: str, message_type: int, *, private: bool
    ) -> dict[str, Any]:
        """A message from the contact (incoming) or from the human agent (outgoing)."""
        with self._lock:
            conversation = self._find(conversation_id)
            incoming = message_type == INCOMING
            message = self._add_message(
                conversation,
                content=content,
                message_type=message_type,
                private=private,
                sender_type="Contact" if incoming else "User",
                sender_id=conversation.contact_id if incoming else self.installation.agent_id,
            )
            return self._present.message_api(message)

    def _emit(self, event: str, payload: dict[str, Any]) -> None:
        """Hand one event to every webhook that receives it; the body bytes are shared by all."""
        targets = [w for w in self._webhooks if w.wants(event)]
        if not targets:
            return
        body = encode_webhook_body(payload)
        for webhook in targets:
            self._dispatcher.enqueue(webhook, event, body, payload)

    def _create_contact(self, params: dict[str, Any]) -> Contact:
        email = params.get("email") or None
        phone = params.get("phone_number") or None
        identifier = params.get("identifier") or None
        errors: list[tuple[str, str]] = []
        if email is not None:
            email = str(email).strip().lower()
            if "@" not in email or " " in email:
                errors.append(("email", "Email is invalid"))
            elif any(c.email == email for c in self._contacts.values()):
                errors.append(("email", "Email has already been taken"))
        if phone is not None:
            if not re.fullmatch(E164, str(phone)):
                errors.append(("phone_number", "Phone number should be in e164 format"))
            elif any(c.phone_number == phone for c in self._contacts.values()):
                errors.append(("phone_number", "Phone number has already been taken"))
        if identifier is not None and any(
            c.identifier == identifier for c in self._contacts.values()
        ):
            errors.append(("identifier", "Identifier has already been taken"))
        for key in ("additional_attributes", "custom_attributes"):
            if not isinstance(params.get(key, {}), dict):
                raise unprocessable(f"{key} must be an object")
        if errors:
            raise ChatwootApiError(
                422,
                {"message": ", ".join(m for _, m in errors), "attributes": [a for a, _ in errors]},
            )
        contact = Contact(
            id=next(self._contact_ids),
            name=str(params.get("name") or ""),
            email=email,
            phone_number=phone,
            identifier=identifier,
            additional_attributes=dict(params.get("additional_attributes") or {}),
            custom_attributes=dict(params.get("custom_attributes") or {}),
            created_at=time.time(),
            blocked=bool(params.get("blocked", False)),
        )
        self._contacts[contact.id] = contact
        self._emit(
            "contact_created", self._present.contact_webhook(contact) | {"event": "contact_created"}
        )
        return contact

    def _contact_inbox_for(self, contact: Contact, source_id: str | None) -> ContactInbox:
        """The contact's contact-inbox, created with a UUID source id on first use (API inbox)."""
        for ci in self._contact_inboxes.values():
            if ci.contact_id == contact.id and (source_id is None or ci.source_id == source_id):
                return ci
        ci = ContactInbox(
            id=next(self._contact_inbox_ids),
            contact_id=contact.id,
            inbox_id=self.inbox_id,
            source_id=source_id or str(uuid.uuid4()),
            created_at=time.time(),
            pubsub_token=secrets.token_urlsafe(18)[:24],
        )
        self._contact_inboxes[ci.id] = ci
        return ci

    def _create_conversation(
        self,
        contact: Contact,
        contact_inbox: ContactInbox,
        params: dict[str, Any],
        actor: Actor,
    ) -> Conversation:
        for key in ("custom_attributes", "additional_attributes"):
            if not isinstance(params.get(key) or {}, dict):
                raise unprocessable(f"{key} must be an object")
        now = time.time()
        conversation = Conversation(
            display_id=next(self._conversation_ids),
            uuid=str(uuid.uuid4()),
            contact_id=contact.id,
            contact_inbox_id=contact_inbox.id,
            # The inbox has an active bot, so Chatwoot forces pending whatever the caller asked.
            status="pending",
            created_at=now,
            updated_at=now,
            last_activity_at=now,
            waiting_since=now,
            custom_attributes=dict(params.get("custom_attributes") or {}),
            additional_attributes=dict(params.get("additional_attributes") or {}),
        )
        if params.get("assignee_id") == self.installation.agent_id:
            conversation.assignee_id = self.installation.agent_id
        self._conversations[conversation.display_id] = conversation
        self._emit_conversation("conversation_created", conversation)
        message = params.get("message")
        if isinstance(message, dict):
            self._create_message_from_params(conversation, message, actor)
        return conversation

    def _create_message_from_params(
        self, conversation: Conversation, params: dict[str, Any], actor: Actor
    ) -> Message:
        """`Messages::MessageBuilder`, including its trap: any message_type but the string
        "outgoing" (an integer 1 too) makes the contact the sender."""
        raw_type = params.get("message_type")
        if raw_type is None:
            raw_type = "outgoing"  # Ruby's `|| 'outgoing'`: an integer 0 stays 0
        if isinstance(raw_type, bool) or not isinstance(raw_type, (str, int)):
            raise unprocessable(f"'{raw_type}' is not a valid message_type")
        if isinstance(raw_type, int):
            if raw_type not in MESSAGE_TYPE_NAMES:
                raise unprocessable(f"'{raw_type}' is not a valid message_type")
            message_type = raw_type
        elif raw_type in MESSAGE_TYPES:
            message_type = MESSAGE_TYPES[raw_type]
        else:
            raise unprocessable(f"'{raw_type}' is not a valid message_type")
        content = params.get("content")
        if content is not None and not isinstance(content, str):
            content = str(content)
        if not content or not content.strip():
            raise unprocessable("Validation failed: Content can't be blank")
        content_type = params.get("content_type") or "text"
        if content_type not in CONTENT_TYPES:
            raise unprocessable(f"'{content_type}' is not a valid content_type")
        content_attributes = params.get("content_attributes") or {}
        if not isinstance(content_attributes, dict):
            raise unprocessable("content_attributes must be an object")
        if raw_type == "outgoing":
            as_bot = (
                params.get("sender_type") == "AgentBot"
                and _as_int(params.get("sender_id")) == self.installation.bot_id
            )
            sender_type = "AgentBot" if as_bot else actor.sender_type
            sender_id = self.installation.bot_id if as_bot else actor.id
        else:
            sender_type, sender_id = "Contact", conversation.contact_id
        return self._add_message(
            conversation,
            content=content,
            message_type=message_type,
            private=params.get("private") in (True, "true", "1", 1),
            sender_type=sender_type,
            sender_id=sender_id,
            content_type=content_type,
            content_attributes=content_attributes,
            source_id=params.get("source_id"),
        )

    def _add_message(
        self,
        conversation: Conversation,
        *,
        content: str,
        message_type: int,
        private: bool,
        sender_type: str | None,
        sender_id: int | None,
        content_type: str = "text",
        content_attributes: dict[str, Any] | None = None,
        source_id: str | None = None,
    ) -> Message:
        """Store a message, apply its effects on the conversation and send its webhooks."""
        now = time.time()
        if message_type != ACTIVITY:
            recent = sum(1 for m in conversation.messages if m.created_at > now - 60)
            if recent >= self.messages_per_minute_limit:
                raise unprocessable("Validation failed: Too many messages")
        with self._tracking(conversation):
            message = Message(
                id=next(self._message_ids),
                conversation_id=conversation.display_id,
                content=content,
                message_type=message_type,
                private=private,
                sender_type=sender_type,
                sender_id=sender_id,
                created_at=now,
                content_type=content_type,
                source_id=source_id,
                content_attributes=dict(content_attributes or {}),
            )
            conversation.messages.append(message)
            conversation.last_activity_at = conversation.updated_at = now
            if message_type == INCOMING:
                self._contacts[conversation.contact_id].last_activity_at = now
                if conversation.waiting_since is None:
                    conversation.waiting_since = now
            elif message_type == OUTGOING and not private and sender_type in ("User", "AgentBot"):
                conversation.waiting_since = None
                if sender_type == "User" and conversation.first_reply_created_at is None:
                    conversation.first_reply_created_at = now
            if message_type != ACTIVITY:
                self._emit(
                    "message_created",
                    self._present.message_webhook(message, conversation, "message_created"),
                )
        return message

    def _activity(self, conversation: Conversation, content: str) -> None:
        """An activity message: visible in the REST history, never sent to any webhook."""
        self._add_message(
            conversation,
            content=content,
            message_type=ACTIVITY,
            private=False,
            sender_type=None,
            sender_id=None,
        )

    @contextlib.contextmanager
    def _tracking(self, conversation: Conversation) -> Iterator[None]:
        """Publish `conversation_*` events for whatever the block changed in `list_of_keys`."""
        before = conversation.tracked_state()
        updated_before = conversation.updated_at
        yield
        after = conversation.tracked_state()
        changed: list[dict[str, Any]] = [
            {key: {"previous_value": before[key], "current_value": after[key]}}
            for key in TRACKED_KEYS
            if before[key] != after[key]
        ]
        if not changed:
            return
        conversation.updated_at = max(time.time(), conversation.updated_at)
        changed.append(
            {
                "updated_at": {
                    "previous_value": iso(updated_before),
                    "current_value": iso(conversation.updated_at),
                }
            }
        )
        if before["status"] != after["status"]:
            # Rails has cleared the change by the after-commit callback: always null here.
            self._emit_conversation_change("conversation_status_changed", conversation, None)
            legacy = {"open": "conversation_opened", "resolved": "conversation_resolved"}
            if conversation.status in legacy:
                self._emit_conversation(legacy[conversation.status], conversation)
        self._emit_conversation_change("conversation_updated", conversation, changed)

    def _emit_conversation(self, event: str, conversation: Conversation) -> None:
        self._emit(event, self._present.conversation_webhook(conversation) | {"event": event})

    def _emit_conversation_change(
        self, event: str, conversation: Conversation, changed: list[dict[str, Any]] | None
    ) -> None:
        payload = self._present.conversation_webhook(conversation) | {"event": event}
        payload["changed_attributes"] = changed
        self._emit(event, payload)

    def _assign(self, conversation: Conversation, actor: Actor, *, user: bool) -> None:
        """Assign the human agent (`user=True`) or the bot; human assignment clears the bot."""
        with self._tracking(conversation):
            if user:
                conversation.assignee_id = self.installation.agent_id
                conversation.assignee_agent_bot_id = None
            else:
                conversation.assignee_agent_bot_id = self.installation.bot_id
                conversation.assignee_id = None
        if user and actor.kind == "user" and actor.id == self.installation.agent_id:
            self._activity(conversation, f"{actor.name} self-assigned this conversation")
        else:
            assignee = self.installation.agent_name if user else self.installation.bot_name
            self._activity(conversation, f"Assigned to {assignee} by {actor.name}")

    def _set_status(
        self,
        conversation: Conversation,
        status: str,
        actor_name: str,
        *,
        snoozed_until: float | None = None,
        activity: str | None = None,
        bot_handoff: bool = False,
    ) -> None:
        """Change the status and leave the activity line; `bot_handoff!` also sets waiting_since."""
        texts = {
            "open": f"Conversation was reopened by {actor_name}",
            "resolved": f"Conversation was marked resolved by {actor_name}",
            "pending": f"Conversation was marked as pending by {actor_name}",
            "snoozed": f"Conversation was snoozed by {actor_name}",
        }
        with self._tracking(conversation):
            conversation.status = status
            conversation.snoozed_until = snoozed_until if status == "snoozed" else None
            if bot_handoff:
                conversation.waiting_since = conversation.waiting_since or time.time()
        self._activity(conversation, activity or texts[status])

    def _on_bot_delivery_failed(self, delivery: WebhookDelivery) -> None:
        """`Webhooks::Trigger#handle_error` for bots: a pending conversation goes to humans."""
        if not delivery.event.startswith("message_") or self.keep_pending_on_bot_failure:
            return
        with self._lock:
            conversation = self._conversations.get(delivery.conversation_id or -1)
            if conversation is None or conversation.status != "pending":
                return
            logger.info(
                "agent bot failed on conversation %s: opening it for humans",
                conversation.display_id,
            )
            self._set_status(
                conversation,
                "open",
                "system",
                activity=BOT_FAILURE_ACTIVITY,
            )

    # -- HTTP ------------------------------------------------------------------------------------

    def _fault_response(self, fault: Fault) -> Response:
        if fault.kind == "rate_limit":
            # Rack::Attack's throttled answer is plain text, not JSON.
            return Response(
                "Retry later\n",
                status=429,
                content_type="text/plain",
                headers={"Retry-After": "1"},
            )
        phrase = {
            500: "Internal Server Error",
            502: "Bad Gateway",
            503: "Service Unavailable",
            504: "Gateway Timeout",
        }.get(fault.status, "Error")
        response = jsonify({"status": fault.status, "error": phrase})
        response.status_code = fault.status
        return response

    def _register_routes(self, app: Flask) -> None:
        api = "/api/v1/accounts/<int:account_id>"
        conv = f"{api}/conversations/<int:conversation_id>"
        routes: list[tuple[str, str, ApiHandler, bool]] = [
            # (rule, method, handler, allowed for the bot token: BOT_ACCESSIBLE_ENDPOINTS)
            (f"{api}/contacts", "POST", self._api_create_contact, False),
            (f"{api}/contacts/search", "GET", self._api_search_contacts, False),
            (
                f"{api}/contacts/<int:contact_id>/conversations",
                "GET",
                self._api_contact_conversations,
                False,
            ),
            (f"{api}/conversations", "POST", self._api_create_conversation, True),
            (conv, "GET", self._api_show_conversation, True),
            (f"{conv}/messages", "GET", self._api_list_messages, False),
            (f"{conv}/messages", "POST", self._api_create_message, True),
            (f"{conv}/custom_attributes", "POST", self._api_custom_attributes, True),
            (f"{conv}/toggle_status", "POST", self._api_toggle_status, True),
            (f"{conv}/toggle_priority", "POST", self._api_toggle_priority, True),
            (f"{conv}/toggle_typing_status", "POST", self._api_toggle_typing, True),
            (f"{conv}/assignments", "POST", self._api_assignments, True),
            (f"{conv}/labels", "GET", self._api_labels, True),
            (f"{conv}/labels", "POST", self._api_labels, True),
        ]
        for rule, method, handler, bot_allowed in routes:
            app.add_url_rule(
                rule,
                f"{handler.__name__}_{method.lower()}",
                self._api_view(handler, bot_allowed=bot_allowed),
                methods=[method],
            )
        control: list[tuple[str, list[str], Callable[..., Any]]] = [
            ("/_sandbox/info", ["GET"], self._ctl_info),
            ("/_sandbox/reset", ["POST"], self._ctl_reset),
            ("/_sandbox/webhooks", ["GET", "PUT", "POST"], self._ctl_webhooks),
            ("/_sandbox/lead_conversations", ["POST"], self._ctl_lead_conversation),
            ("/_sandbox/conversations", ["GET"], self._ctl_conversations),
            ("/_sandbox/conversations/<int:conversation_id>", ["GET"], self._ctl_conversation),
            ("/_sandbox/conversations/<int:conversation_id>/messages", ["GET"], self._ctl_messages),
            ("/_sandbox/conversations/<int:conversation_id>/<action>", ["POST"], self._ctl_act),
            ("/_sandbox/deliveries", ["GET"], self._ctl_deliveries),
            ("/_sandbox/deliveries/wait", ["POST"], self._ctl_wait_deliveries),
            ("/_sandbox/requests", ["GET"], self._ctl_requests),
        ]
        for rule, methods, view in control:
            app.add_url_rule(rule, view.__name__, view, methods=methods)
        app.register_error_handler(ChatwootApiError, _render_api_error)
        app.register_error_handler(404, _unknown_route)
        app.register_error_handler(405, _unknown_route)
        app.after_request(self._log_api_request)

    # plumbing

    def _api_view(self, handler: ApiHandler, *, bot_allowed: bool) -> Callable[..., Any]:
        """Authenticate like `AccessTokenAuthHelper`, check the account, run under the lock."""

        def view(account_id: int, **path: int) -> Any:
            actor = self._authenticate(bot_allowed=bot_allowed)
            if account_id != self.account_id:
                raise ChatwootApiError(404, NOT_FOUND)
            body = json_object()
            if body is None:
                raise ChatwootApiError(400, {"error": "The request body must be a JSON object"})
            with self._lock:
                return handler(actor, body, **path)

        return view

    @staticmethod
    def _access_token() -> str | None:
        return request.headers.get("api_access_token") or None

    def _token_kind(self) -> TokenKind:
        token = self._access_token() or ""
        if hmac.compare_digest(token.encode(), self.api_token.encode()):
            return "user"
        if hmac.compare_digest(token.encode(), self.bot_token.encode()):
            return "bot"
        if hmac.compare_digest(token.encode(), self.automation_token.encode()):
            return "user"
        return "invalid"

    def _authenticate(self, *, bot_allowed: bool) -> Actor:
        if self._access_token() is None:
            raise ChatwootApiError(401, SIGN_IN_REQUIRED)
        kind = self._token_kind()
        if kind == "invalid":
            raise ChatwootApiError(401, INVALID_TOKEN)
        if kind == "bot" and not bot_allowed:
            raise ChatwootApiError(401, BOT_FORBIDDEN)
        if kind == "bot":
            return self._bot
        token = self._access_token() or ""
        if hmac.compare_digest(token.encode(), self.automation_token.encode()):
            return self._automation
        return self._user

    def _log_api_request(self, response: Response) -> Response:
        if request.path.startswith("/api/"):
            entry = {
                "method": request.method,
                "path": request.path,
                "query": request.query_string.decode(),
                "token_kind": self._token_kind(),
                "json": request.get_json(silent=True, force=True),
                "status": response.status_code,
                "at": iso(time.time()),
            }
            with self._lock:
                self._requests.append(entry)
        return response

    # REST API (each runs under the lock; body is the JSON object sent, {} when none)

    def _api_create_contact(self, actor: Actor, body: dict[str, Any]) -> Any:
        inbox_id = _as_int(body.get("inbox_id"))
        if body.get("inbox_id") is not None and inbox_id != self.inbox_id:
            raise ChatwootApiError(404, NOT_FOUND)
        contact = self._create_contact(body)
        contact_inbox = (
            self._contact_inbox_for(contact, body.get("source_id") or None) if inbox_id else None
        )
        return {
            "payload": {
                "contact": self._present.contact_api(contact, with_inboxes=True),
                "contact_inbox": {
                    "inbox": self._present.inbox_record() if contact_inbox else None,
                    "source_id": contact_inbox.source_id if contact_inbox else None,
                },
            }
        }

    def _api_search_contacts(self, actor: Actor, body: dict[str, Any]) -> Any:
        q = request.args.get("q", "")
        if not q:
            raise unprocessable("Specify search string with parameter q")
        page = max(_as_int(request.args.get("page")) or 1, 1)
        with_inboxes = request.args.get("include_contact_inboxes", "true") == "true"
        needle = q.lower()
        matches = [
            c
            for c in self._contacts.values()
            if any(needle in (v or "").lower() for v in (c.name, c.email, c.phone_number))
            or q in (c.identifier or "")
        ]
        matches.sort(key=lambda c: (c.last_activity_at or 0, c.id), reverse=True)
        start = (page - 1) * CONTACTS_PER_PAGE
        shown = matches[start : start + CONTACTS_PER_PAGE]
        return {
            "meta": {
                "count": len(matches),
                "current_page": page,
                "has_more": start + CONTACTS_PER_PAGE < len(matches),
            },
            "payload": [self._present.contact_api(c, with_inboxes=with_inboxes) for c in shown],
        }

    def _api_contact_conversations(
        self, actor: Actor, body: dict[str, Any], contact_id: int
    ) -> Any:
        if contact_id not in self._contacts:
            raise ChatwootApiError(404, NOT_FOUND)
        mine = [c for c in self._conversations.values() if c.contact_id == contact_id]
        mine.sort(key=lambda c: (c.last_activity_at, c.display_id), reverse=True)
        return {"payload": [self._present.conversation_api(c) for c in mine[:20]]}

    def _api_create_conversation(self, actor: Actor, body: dict[str, Any]) -> Any:
        inbox_id = _as_int(body.get("inbox_id"))
        if body.get("inbox_id") is not None and inbox_id != self.inbox_id:
            raise ChatwootApiError(404, NOT_FOUND)
        source_id = body.get("source_id") or None
        contact_inbox = next(
            (
                ci
                for ci in self._contact_inboxes.values()
                if source_id and ci.source_id == source_id
            ),
            None,
        )
        if contact_inbox is None:
            contact_id = _as_int(body.get("contact_id"))
            if inbox_id is None or contact_id is None:
                raise unprocessable("Pass inbox_id and contact_id, or an existing source_id")
            if contact_id not in self._contacts:
                raise ChatwootApiError(404, NOT_FOUND)
            contact_inbox = self._contact_inbox_for(self._contacts[contact_id], source_id)
        contact = self._contacts[contact_inbox.contact_id]
        conversation = self._create_conversation(contact, contact_inbox, body, actor)
        return self._present.conversation_api(conversation)

    def _api_show_conversation(
        self, actor: Actor, body: dict[str, Any], conversation_id: int
    ) -> Any:
        return self._present.conversation_api(self._find(conversation_id))

    def _api_list_messages(self, actor: Actor, body: dict[str, Any], conversation_id: int) -> Any:
        """`MessageFinder`: latest 20, 20 before `before`, 100 after `after`, 1000 between."""
        conversation = self._find(conversation_id)
        messages = conversation.messages
        if request.args.get("filter_internal_messages") == "true":
            messages = [m for m in messages if not m.private and m.message_type != ACTIVITY]
        before = _as_int(request.args.get("before"))
        after = _as_int(request.args.get("after"))
        if before is not None and after is not None:
            shown = [m for m in messages if after < m.id < before][:1000]
        elif after is not None:
            shown = [m for m in messages if m.id > after][:100]
        elif before is not None:
            shown = [m for m in messages if m.id < before][-20:]
        else:
            shown = messages[-20:]
        return {
            "meta": self._present.messages_meta(conversation),
            "payload": [self._present.message_api(m) for m in shown],
        }

    def _api_create_message(self, actor: Actor, body: dict[str, Any], conversation_id: int) -> Any:
        conversation = self._find(conversation_id)
        message = self._create_message_from_params(conversation, body, actor)
        echo_id = body.get("echo_id")
        return self._present.message_api(message, None if echo_id is None else str(echo_id))

    def _api_custom_attributes(
        self, actor: Actor, body: dict[str, Any], conversation_id: int
    ) -> Any:
        """Replace semantics: the hash sent becomes the whole set."""
        conversation = self._find(conversation_id)
        attributes = body.get("custom_attributes")
        if not isinstance(attributes, dict):
            raise unprocessable("custom_attributes must be an object")
        with self._tracking(conversation):
            conversation.custom_attributes = dict(attributes)
        return {"custom_attributes": dict(conversation.custom_attributes)}

    def _api_toggle_status(self, actor: Actor, body: dict[str, Any], conversation_id: int) -> Any:
        conversation = self._find(conversation_id)
        status = body.get("status")
        if status is None:
            status = "resolved" if conversation.status == "open" else "open"
        elif status not in CONVERSATION_STATUSES:
            raise unprocessable(f"'{status}' is not a valid status")
        snoozed_until = body.get("snoozed_until")
        snoozed_ts = float(snoozed_until) if isinstance(snoozed_until, (int, float)) else None
        handoff = actor.kind == "bot" and conversation.status == "pending" and status == "open"
        moved = status != conversation.status
        if moved or snoozed_ts != conversation.snoozed_until:
            self._set_status(
                conversation, status, actor.name, snoozed_until=snoozed_ts, bot_handoff=handoff
            )
        if moved and actor.kind == "user" and status == "open" and conversation.assignee_id is None:
            self._assign(conversation, actor, user=True)  # a human opening it takes it
        return {
            "meta": {},
            "payload": {
                # `bot_handoff!` returns nothing, hence null on that path only.
                "success": None if handoff else True,
                "conversation_id": conversation.display_id,
                "current_status": conversation.status,
                "snoozed_until": iso_or_none(conversation.snoozed_until),
            },
        }

    def _api_toggle_priority(self, actor: Actor, body: dict[str, Any], conversation_id: int) -> Any:
        conversation = self._find(conversation_id)
        priority = body.get("priority")
        if priority is not None and priority not in PRIORITIES:
            raise unprocessable(f"'{priority}' is not a valid priority")
        if priority != conversation.priority:
            with self._tracking(conversation):
                conversation.priority = priority
            text = f"set the priority to {priority}" if priority else "removed the priority"
            self._activity(conversation, f"{actor.name} {text}")
        return Response(status=200)

    def _api_toggle_typing(self, actor: Actor, body: dict[str, Any], conversation_id: int) -> Any:
        """Typing events go to account webhooks only; agent bots never receive them."""
        conversation = self._find(conversation_id)
        on = body.get("typing_status") in ("on", "recording")
        event = "conversation_typing_on" if on else "conversation_typing_off"
        user = self._present.bot_push() if actor.kind == "bot" else self._present.user_push()
        self._emit(
            event,
            {
                "event": event,
                "user": user,
                "conversation": self._present.conversation_webhook(conversation),
                "is_private": bool(body.get("is_private", False)),
            },
        )
        return Response(status=200)

    def _api_assignments(self, actor: Actor, body: dict[str, Any], conversation_id: int) -> Any:
        conversation = self._find(conversation_id)
        if "assignee_id" not in body and "team_id" in body:
            raise ChatwootApiError(404, NOT_FOUND)  # the sandbox account has no teams
        assignee_id = body.get("assignee_id")
        if body.get("assignee_type") == "AgentBot":
            if _as_int(assignee_id) != self.installation.bot_id:
                raise ChatwootApiError(404, NOT_FOUND)
            self._assign(conversation, actor, user=False)
            return self._present.bot_slim()
        if assignee_id is None:
            if conversation.assignee_id or conversation.assignee_agent_bot_id:
                with self._tracking(conversation):
                    conversation.assignee_id = conversation.assignee_agent_bot_id = None
                self._activity(conversation, f"Conversation unassigned by {actor.name}")
            return Response("null", status=200, mimetype="application/json")
        if _as_int(assignee_id) != self.installation.agent_id:
            raise ChatwootApiError(404, NOT_FOUND)
        if conversation.assignee_id != self.installation.agent_id:
            self._assign(conversation, actor, user=True)
        return self._present.user_agent()

    def _api_labels(self, actor: Actor, body: dict[str, Any], conversation_id: int) -> Any:
        """GET lists, POST replaces the whole set (`Labelable#update_labels`)."""
        conversation = self._find(conversation_id)
        if request.method == "POST":
            labels = body.get("labels")
            if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
                raise unprocessable("labels must be a list of strings")
            wanted = list(dict.fromkeys(labels))
            added = [x for x in wanted if x not in conversation.labels]
            removed = [x for x in conversation.labels if x not in wanted]
            with self._tracking(conversation):
                conversation.labels = wanted
            if added:
                self._activity(conversation, f"{actor.name} added {', '.join(added)}")
            if removed:
                self._activity(conversation, f"{actor.name} removed {', '.join(removed)}")
        return {"payload": list(conversation.labels)}

    # sandbox control routes

    def _ctl_info(self) -> Any:
        inst = self.installation
        return {
            "account_id": inst.account_id,
            "inbox_id": inst.inbox_id,
            "bot_id": inst.bot_id,
            "bot_name": inst.bot_name,
            "agent_id": inst.agent_id,
            "agent_name": inst.agent_name,
            "api_token": self.api_token,
            "bot_token": self.bot_token,
            "automation_user_id": inst.automation_user_id,
            "automation_token": self.automation_token,
        }

    def _ctl_reset(self) -> Any:
        self.reset()
        return {"status": "reset"}

    def _ctl_webhooks(self) -> Any:
        body = request.get_json(silent=True, force=True)
        try:
            if request.method == "PUT":
                if not isinstance(body, list):
                    raise ValueError("send a JSON list of {url, secret, kind, subscriptions}")
                self.set_webhooks(body)
            elif request.method == "POST":
                if not isinstance(body, dict):
                    raise ValueError("send a JSON object {url, secret, kind, subscriptions}")
                self.add_webhook(
                    body.get("url", ""),
                    secret=body.get("secret"),
                    kind=body.get("kind", ""),
                    subscriptions=body.get("subscriptions"),
                )
        except ValueError as exc:
            return jsonify({"error": str(exc)}), 400
        return jsonify(self.webhooks())

    def _ctl_lead_conversation(self) -> Any:
        body = json_object() or {}
        missing = [key for key in ("name", "email", "phone") if not body.get(key)]
        if missing:
            return jsonify({"error": f"missing fields: {missing}"}), 400
        contact, conversation = self.create_lead_conversation(
            body["name"],
            body["email"],
            body["phone"],
            custom_attributes=body.get("custom_attributes"),
        )
        return {"contact": contact, "conversation": conversation}

    def _ctl_conversations(self) -> Any:
        return jsonify(self.conversations())

    def _ctl_conversation(self, conversation_id: int) -> Any:
        return self.conversation(conversation_id)

    def _ctl_messages(self, conversation_id: int) -> Any:
        return jsonify(self.messages(conversation_id))

    def _ctl_act(self, conversation_id: int, action: str) -> Any:
        """customer_message, agent_reply, private_note ({"content"}) and assign_human ({})."""
        body = json_object() or {}
        if action == "assign_human":
            return self.assign_human(conversation_id)
        acts: dict[str, Callable[[int, str], dict[str, Any]]] = {
            "customer_message": self.customer_message,
            "agent_reply": self.agent_reply,
            "private_note": self.private_note,
        }
        if action not in acts:
            return jsonify({"error": f"unknown action {action!r}; one of {sorted(acts)}"}), 404
        content = body.get("content")
        if not isinstance(content, str) or not content:
            return jsonify({"error": 'send {"content": "<text>"}'}), 400
        return acts[action](conversation_id, content)

    def _ctl_deliveries(self) -> Any:
        return jsonify(self.deliveries())

    def _ctl_wait_deliveries(self) -> Any:
        timeout_s = float((json_object() or {}).get("timeout_s", 10.0))
        return {"idle": self.wait_for_deliveries(timeout_s)}

    def _ctl_requests(self) -> Any:
        return jsonify(self.requests())


def _unknown_route(_exc: Exception) -> tuple[Response, int]:
    """Rails' 404 body; the log says when a real Chatwoot route is merely not in the sandbox."""
    logger.warning("chatwoot sandbox has no route for %s %s", request.method, request.path)
    return jsonify(NOT_FOUND), 404


def _render_api_error(exc: ChatwootApiError) -> tuple[Response, int]:
    return jsonify(exc.body), exc.status


def _as_int(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None

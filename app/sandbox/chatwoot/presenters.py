"""Chatwoot's JSON shapes of the records: REST answers, webhook bodies and their push data."""

from __future__ import annotations

from typing import Any

from app.sandbox.chatwoot.records import (
    MESSAGE_TYPE_NAMES,
    Contact,
    ContactInbox,
    Conversation,
    Installation,
    Message,
)
from app.sandbox.chatwoot.wire import epoch, iso, iso_or_none


class ChatwootPresenter:
    """Chatwoot's serializers, one method per shape; names follow the Ruby that builds them.

    Call under the sandbox lock. Every mutable value is copied, so a shape never changes after it
    was built.
    """

    def __init__(
        self,
        installation: Installation,
        contacts: dict[int, Contact],
        contact_inboxes: dict[int, ContactInbox],
    ) -> None:
        self.inst = installation
        self.contacts = contacts
        self.contact_inboxes = contact_inboxes

    # account, inbox, users, bots

    def account(self) -> dict[str, Any]:
        return {"id": self.inst.account_id, "name": self.inst.account_name}

    def inbox_slim(self) -> dict[str, Any]:
        return {
            "id": self.inst.inbox_id,
            "avatar_url": "",
            "channel_id": self.inst.channel_id,
            "name": self.inst.inbox_name,
            "channel_type": "Channel::Api",
            "provider": None,
        }

    def inbox_record(self) -> dict[str, Any]:
        """The raw Inbox record that `POST /contacts` puts in `contact_inbox.inbox`."""
        created = iso(self.inst.created_at)
        return {
            "id": self.inst.inbox_id,
            "channel_id": self.inst.channel_id,
            "account_id": self.inst.account_id,
            "name": self.inst.inbox_name,
            "created_at": created,
            "updated_at": created,
            "channel_type": "Channel::Api",
            "enable_auto_assignment": True,
            "greeting_enabled": False,
            "greeting_message": None,
            "email_address": None,
            "working_hours_enabled": False,
            "out_of_office_message": None,
            "timezone": "Asia/Singapore",
            "enable_email_collect": True,
            "csat_survey_enabled": False,
            "allow_messages_after_resolved": True,
            "auto_assignment_config": {},
            "lock_to_single_conversation": False,
            "portal_id": None,
            "sender_name_type": "friendly",
            "business_name": None,
            "csat_config": {},
        }

    def _user(self, user_id: int | None) -> tuple[int, str, str]:
        """(id, name, email) of the agent, or of the automation user when it is `user_id`."""
        if user_id == self.inst.automation_user_id:
            name = self.inst.automation_user_name
            return user_id, name, f"{name.lower().replace(' ', '.')}@harbourline.example"
        return self.inst.agent_id, self.inst.agent_name, self.inst.agent_email

    def user_push(self, user_id: int | None = None) -> dict[str, Any]:
        number, name, _ = self._user(user_id)
        return {
            "id": number,
            "name": name,
            "available_name": name.split()[0],
            "avatar_url": "",
            "type": "user",
            "availability_status": "online",
            "thumbnail": "",
        }

    def user_webhook(self, user_id: int | None = None) -> dict[str, Any]:
        number, name, email = self._user(user_id)
        return {"id": number, "name": name, "email": email, "type": "user"}

    def user_agent(self) -> dict[str, Any]:
        """The agent partial: assignment responses and the REST conversation `meta.assignee`."""
        return {
            "id": self.inst.agent_id,
            "account_id": self.inst.account_id,
            "availability_status": "online",
            "auto_offline": True,
            "confirmed": True,
            "email": self.inst.agent_email,
            "provider": "email",
            "available_name": self.inst.agent_available_name,
            "name": self.inst.agent_name,
            "role": "agent",
            "thumbnail": "",
            "custom_role_id": None,
        }

    def bot_push(self) -> dict[str, Any]:
        return {
            "id": self.inst.bot_id,
            "name": self.inst.bot_name,
            "avatar_url": "",
            "type": "agent_bot",
        }

    def bot_webhook(self) -> dict[str, Any]:
        return {"id": self.inst.bot_id, "name": self.inst.bot_name, "type": "agent_bot"}

    def bot_slim(self) -> dict[str, Any]:
        return {
            "id": self.inst.bot_id,
            "name": self.inst.bot_name,
            "description": "",
            "thumbnail": "",
            "bot_type": "webhook",
            "account_id": self.inst.account_id,
        }

    # contacts

    def contact_api(self, contact: Contact, *, with_inboxes: bool) -> dict[str, Any]:
        data: dict[str, Any] = {
            "additional_attributes": dict(contact.additional_attributes),
            "availability_status": "offline",
            "email": contact.email,
            "id": contact.id,
            "name": contact.name,
            "phone_number": contact.phone_number,
            "blocked": contact.blocked,
            "identifier": contact.identifier,
            "thumbnail": "",
            "custom_attributes": dict(contact.custom_attributes),
        }
        if contact.last_activity_at is not None:
            data["last_activity_at"] = int(contact.last_activity_at)
        data["created_at"] = int(contact.created_at)
        if with_inboxes:
            data["contact_inboxes"] = [
                {"source_id": ci.source_id, "inbox": self.inbox_slim()}
                for ci in self.contact_inboxes.values()
                if ci.contact_id == contact.id
            ]
        return data

    def contact_push(self, contact: Contact) -> dict[str, Any]:
        return {
            "additional_attributes": dict(contact.additional_attributes),
            "custom_attributes": dict(contact.custom_attributes),
            "email": contact.email,
            "id": contact.id,
            "identifier": contact.identifier,
            "name": contact.name,
            "phone_number": contact.phone_number,
            "thumbnail": "",
            "blocked": contact.blocked,
            "type": "contact",
        }

    def contact_webhook(self, contact: Contact) -> dict[str, Any]:
        """`Contact#webhook_data`: note there is no `type` key (removed upstream in 2023)."""
        return {
            "account": self.account(),
            "additional_attributes": dict(contact.additional_attributes),
            "avatar": "",
            "custom_attributes": dict(contact.custom_attributes),
            "email": contact.email,
            "id": contact.id,
            "identifier": contact.identifier,
            "name": contact.name,
            "phone_number": contact.phone_number,
            "thumbnail": "",
            "blocked": contact.blocked,
        }

    def contact_inbox_full(self, ci: ContactInbox) -> dict[str, Any]:
        created = iso(ci.created_at)
        return {
            "id": ci.id,
            "contact_id": ci.contact_id,
            "inbox_id": ci.inbox_id,
            "source_id": ci.source_id,
            "created_at": created,
            "updated_at": created,
            "hmac_verified": False,
            "pubsub_token": ci.pubsub_token,
        }

    # messages

    def _sender_push(self, message: Message) -> dict[str, Any] | None:
        if message.sender_type == "Contact" and message.sender_id in self.contacts:
            return self.contact_push(self.contacts[message.sender_id])
        if message.sender_type == "User":
            return self.user_push(message.sender_id)
        if message.sender_type == "AgentBot":
            return self.bot_push()
        return None

    def _sender_webhook(self, message: Message) -> dict[str, Any] | None:
        if message.sender_type == "Contact" and message.sender_id in self.contacts:
            return self.contact_webhook(self.contacts[message.sender_id])
        if message.sender_type == "User":
            return self.user_webhook(message.sender_id)
        if message.sender_type == "AgentBot":
            return self.bot_webhook()
        return None

    def message_push(self, message: Message, conversation: Conversation) -> dict[str, Any]:
        """`Message#webhook_push_event_data`: integer message_type and created_at."""
        contact_inbox = self.contact_inboxes[conversation.contact_inbox_id]
        data: dict[str, Any] = {
            "id": message.id,
            "content": message.content,
            "account_id": self.inst.account_id,
            "inbox_id": self.inst.inbox_id,
            "conversation_id": conversation.display_id,
            "message_type": message.message_type,
            "created_at": int(message.created_at),
            "updated_at": iso(message.created_at),
            "private": message.private,
            "status": message.status,
            "source_id": message.source_id,
            "content_type": message.content_type,
            "content_attributes": dict(message.content_attributes),
            "sender_type": message.sender_type,
            "sender_id": message.sender_id,
            "external_source_ids": {},
            "additional_attributes": dict(message.additional_attributes),
            "processed_message_content": message.content,
            "sentiment": {},
            "conversation": {
                "assignee_id": conversation.assignee_id,
                "unread_count": conversation.unread_count(),
                "last_activity_at": epoch(conversation.last_activity_at),
                "contact_inbox": {"source_id": contact_inbox.source_id},
            },
        }
        sender = self._sender_push(message)
        if sender is not None:
            data["sender"] = sender
        return data

    def message_api(self, message: Message, echo_id: str | None = None) -> dict[str, Any]:
        """`api/v1/models/_message.json.jbuilder`: the REST message."""
        data: dict[str, Any] = {
            "id": message.id,
            "content": message.content,
            "inbox_id": self.inst.inbox_id,
        }
        if echo_id is not None:
            data["echo_id"] = echo_id
        data |= {
            "conversation_id": message.conversation_id,
            "message_type": message.message_type,
            "content_type": message.content_type,
            "status": message.status,
            "content_attributes": dict(message.content_attributes),
            "created_at": int(message.created_at),
            "private": message.private,
            "source_id": message.source_id,
        }
        sender = self._sender_push(message)
        if sender is not None:
            data["sender"] = sender
        return data

    def message_webhook(
        self, message: Message, conversation: Conversation, event: str
    ) -> dict[str, Any]:
        """`Message#webhook_data.merge(event:)`: string message_type, ISO created_at."""
        return {
            "account": self.account(),
            "additional_attributes": dict(message.additional_attributes),
            "content_attributes": dict(message.content_attributes),
            "content_type": message.content_type,
            "content": _webhook_content(message.content),
            "conversation": self.conversation_webhook(conversation),
            "created_at": iso(message.created_at),
            "id": message.id,
            "inbox": {"id": self.inst.inbox_id, "name": self.inst.inbox_name},
            "message_type": MESSAGE_TYPE_NAMES[message.message_type],
            "private": message.private,
            "sender": self._sender_webhook(message),
            "source_id": message.source_id,
            "event": event,
        }

    # conversations

    def _assignee_push(
        self, conversation: Conversation
    ) -> tuple[dict[str, Any] | None, str | None]:
        if conversation.assignee_id is not None:
            return self.user_push(), "User"
        if conversation.assignee_agent_bot_id is not None:
            return self.bot_push(), "AgentBot"
        return None, None

    def conversation_webhook(self, conversation: Conversation) -> dict[str, Any]:
        """`Conversations::EventDataPresenter#webhook_data`."""
        contact = self.contacts[conversation.contact_id]
        last_chat = conversation.last_chat_message()
        assignee, assignee_type = self._assignee_push(conversation)
        return {
            "additional_attributes": dict(conversation.additional_attributes),
            "can_reply": True,
            "channel": "Channel::Api",
            "contact_inbox": self.contact_inbox_full(
                self.contact_inboxes[conversation.contact_inbox_id]
            ),
            "id": conversation.display_id,
            "inbox_id": self.inst.inbox_id,
            "messages": [self.message_push(last_chat, conversation)] if last_chat else [],
            "labels": list(conversation.labels),
            "meta": {
                "sender": self.contact_push(contact),
                "assignee": assignee,
                "assignee_type": assignee_type,
                "team": None,
                "hmac_verified": False,
            },
            "status": conversation.status,
            "custom_attributes": dict(conversation.custom_attributes),
            "snoozed_until": iso_or_none(conversation.snoozed_until),
            "unread_count": conversation.unread_count(),
            "first_reply_created_at": iso_or_none(conversation.first_reply_created_at),
            "priority": conversation.priority,
            "waiting_since": epoch(conversation.waiting_since),
            "agent_last_seen_at": epoch(conversation.agent_last_seen_at),
            "contact_last_seen_at": epoch(conversation.contact_last_seen_at),
            "last_activity_at": epoch(conversation.last_activity_at),
            "timestamp": epoch(conversation.last_activity_at),
            "created_at": epoch(conversation.created_at),
            "updated_at": conversation.updated_at,
            "account": self.account(),
        }

    def conversation_api(self, conversation: Conversation) -> dict[str, Any]:
        """`conversations/partials/_conversation.json.jbuilder`: the REST conversation."""
        contact = self.contacts[conversation.contact_id]
        meta: dict[str, Any] = {
            "sender": self.contact_api(contact, with_inboxes=False),
            "channel": "Channel::Api",
        }
        if conversation.assignee_id is not None:
            meta |= {"assignee": self.user_agent(), "assignee_type": "User"}
        elif conversation.assignee_agent_bot_id is not None:
            meta |= {"assignee": self.bot_slim(), "assignee_type": "AgentBot"}
        meta["hmac_verified"] = False
        last = conversation.messages[-1] if conversation.messages else None
        last_non_activity = conversation.last_non_activity_message()
        return {
            "meta": meta,
            "id": conversation.display_id,
            "messages": [self.message_push(last, conversation)] if last else [],
            "account_id": self.inst.account_id,
            "uuid": conversation.uuid,
            "additional_attributes": dict(conversation.additional_attributes),
            "agent_last_seen_at": epoch(conversation.agent_last_seen_at),
            "assignee_last_seen_at": epoch(conversation.assignee_last_seen_at),
            "can_reply": True,
            "contact_last_seen_at": epoch(conversation.contact_last_seen_at),
            "custom_attributes": dict(conversation.custom_attributes),
            "inbox_id": self.inst.inbox_id,
            "labels": list(conversation.labels),
            "muted": False,
            "snoozed_until": iso_or_none(conversation.snoozed_until),
            "status": conversation.status,
            "created_at": epoch(conversation.created_at),
            "updated_at": conversation.updated_at,
            "timestamp": epoch(conversation.last_activity_at),
            "first_reply_created_at": epoch(conversation.first_reply_created_at),
            "unread_count": conversation.unread_count(),
            "last_non_activity_message": (
                self.message_push(last_non_activity, conversation) if last_non_activity else None
            ),
            "last_activity_at": epoch(conversation.last_activity_at),
            "priority": conversation.priority,
            "waiting_since": epoch(conversation.waiting_since),
            "sla_policy_id": None,
        }

    def messages_meta(self, conversation: Conversation) -> dict[str, Any]:
        """The `meta` of `GET …/messages`."""
        meta: dict[str, Any] = {
            "labels": list(conversation.labels),
            "additional_attributes": dict(conversation.additional_attributes),
            "contact": self.contact_push(self.contacts[conversation.contact_id]),
        }
        assignee, _ = self._assignee_push(conversation)
        if assignee is not None:
            meta["assignee"] = assignee
        meta["agent_last_seen_at"] = iso_or_none(conversation.agent_last_seen_at)
        meta["assignee_last_seen_at"] = iso_or_none(conversation.assignee_last_seen_at)
        return meta

    def conversation_inspection(self, conversation: Conversation) -> dict[str, Any]:
        """Sandbox-only view: the REST conversation with *every* message, notes and activity too."""
        data = self.conversation_api(conversation)
        data["messages"] = [self.message_push(m, conversation) for m in conversation.messages]
        return data


def _webhook_content(content: str | None) -> str | None:
    """`Messages::WebhookContentNormalizer`: backslash hard breaks to newlines, no trailing ones."""
    if content is None:
        return None
    return content.replace("\\\n", "\n").rstrip("\n")

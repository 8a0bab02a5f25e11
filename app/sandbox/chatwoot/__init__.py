"""A local Chatwoot (v4.15.1) that honours the contract in docs/chatwoot-contract.md.

It serves the REST endpoints the AI broker uses, with the real payload and error shapes, token kinds
and agent-bot restrictions, and it sends the webhooks Chatwoot sends: every message created through
it, including the echo of the broker's own replies, goes to every registered agent bot and account
webhook, signed, asynchronously, with the agent-bot retry rules and the handoff Chatwoot performs
when a bot keeps failing. The traps are reproduced on purpose (integer `message_type` making the
contact the sender, plain-text 429s, `changed_attributes: null` on status changes) so that the code
under test meets them here first.

Modules, from the wire up:
- `wire`: wire helpers (encoding, signing, Rails times) and the API's error answer.
- `records`: the records and the vocabulary of their fields.
- `presenters`: the presenters that turn records into Chatwoot's JSON shapes.
- `webhooks`: the webhook dispatcher.
- `sandbox`: the sandbox server itself, with its Python controls, operations and routes.
"""

from app.sandbox.chatwoot.records import INCOMING, OUTGOING, Conversation, Message
from app.sandbox.chatwoot.sandbox import ChatwootSandbox
from app.sandbox.chatwoot.wire import ChatwootApiError, encode_webhook_body, sign_webhook

__all__ = [
    "INCOMING",
    "OUTGOING",
    "ChatwootApiError",
    "ChatwootSandbox",
    "Conversation",
    "Message",
    "encode_webhook_body",
    "sign_webhook",
]

"""The conversation as the reply generator sees it: turns, oldest first."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Role = Literal["user", "assistant"]


@dataclass(frozen=True)
class ChatTurn:
    """One public message of a conversation: the customer's (`user`) or a broker's (`assistant`)."""

    role: Role
    content: str

"""How soon a broker answers a message, and whether a human must take over.

Port of the legacy `analyzeMessageUrgency()`. The reply delay imitates a person typing: 1-6 seconds
(before the operator's scale), shorter when the customer is in a hurry, longer when the persona is
the patient kind or the message takes a while to read. Escalation spots the messages a bot must not
keep answering: a request for a person, legal or regulatory questions, and an upset customer.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    # personas.py imports EscalationReason from here at runtime; this side only needs the type.
    from app.domain.personas import BrokerPersona


class EscalationReason(StrEnum):
    """Why a conversation goes to a human specialist."""

    HUMAN_REQUESTED = "human_requested"
    FRUSTRATION = "frustration"
    LEGAL_COMPLIANCE = "legal_compliance"


@dataclass(frozen=True)
class UrgencyAnalysis:
    """The timing and handoff verdict for one customer message."""

    is_urgent: bool
    response_delay_s: float
    escalate: bool
    escalate_reason: EscalationReason | None


MIN_DELAY_S = 1.0
MAX_DELAY_S = 6.0

# Starting point before adjustments, by the first word of the persona's pacing.
_BASE_DELAY_BY_PACING = {"fast": 2.0, "moderate": 3.0, "patient": 4.0}
_DEFAULT_PACING = "moderate"
# A person reads roughly 100 characters in half a second when skimming a chat; long messages
# should not push the delay past the band, so reading time is capped.
_READING_S_PER_CHAR = 0.005
_MAX_READING_S = 1.5
_URGENT_SPEEDUP_S = 1.5
_JITTER_SPAN_S = 1.0

_URGENT = re.compile(
    r"\b(?:urgent(?:ly)?|asap|as soon as possible|today|tonight|now|right away|immediately|"
    r"deadline|quick(?:ly)?|hurry|emergency|time[\s-]sensitive|expir(?:e|es|ed|ing|y))\b",
    re.IGNORECASE,
)

# "Agent" usually means the customer's property agent in a Singapore home purchase, which is not a
# request for one of ours. These phrases are blanked out before looking for a request.
_NOT_OUR_AGENT = re.compile(
    r"\b(?:property|housing|real[\s-]+estate|estate|insurance|travel|rental|letting|"
    r"my|our|his|her|their|the\s+seller'?s|the\s+buyer'?s)\s+agents?\b",
    re.IGNORECASE,
)

_HUMAN_REQUESTED = re.compile(
    r"\bhumans?\b(?!\s+resources?\b)"
    r"|\breal\s+(?:person|people|human)\b"
    r"|\blive\s+(?:agent|person|chat|advisor|adviser)\b"
    r"|\bagents?\b"
    r"|\brepresentatives?\b"
    r"|\b(?:talk|speak|chat)\s+(?:to|with)\s+(?:someone|somebody|anyone|a\s+person|"
    r"a\s+(?:manager|supervisor|consultant|specialist|broker)|your\s+(?:manager|supervisor))\b"
    # "Call me Wei Ming" introduces a name; "call me back", "call me ASAP" ask for a call.
    r"|\b(?:call|phone|ring)\s+me\b(?!\s+(?-i:[A-Z][a-z]))"
    r"|\bgive\s+me\s+a\s+(?:call|ring)\b"
    r"|\b(?:don'?t|do\s+not)\s+want\s+(?:to\s+(?:talk|speak|chat)\s+(?:to|with)\s+)?"
    r"(?:a\s+|an\s+|the\s+|this\s+)?(?:bot|robot|chatbot|machine|ai)\b",
    re.IGNORECASE,
)

# Legal fees and legal subsidies are a routine part of every Singapore home loan, not a legal
# question, so they are blanked out first.
_ROUTINE_LEGAL = re.compile(
    r"\blegal\s+(?:fees?|subsid(?:y|ies)|costs?|rebates?|charges?)\b", re.IGNORECASE
)

_LEGAL_COMPLIANCE = re.compile(
    r"\b(?:lawyers?|solicitors?|legal(?:ly)?|lawsuits?|litigation|"
    r"regulations?|regulatory|regulators?|complian(?:ce|t)|disputes?|"
    r"bankrupt(?:cy)?|insolven(?:t|cy)|fidrec)\b"
    # Case matters for these two: "Sue" is also a name, and "mas" in lower case is rarely the
    # Monetary Authority of Singapore.
    r"|\b(?-i:su(?:e|es|ed|ing)|SU(?:E|ES|ED|ING))\b"
    r"|\b(?-i:MAS)\b|\bmonetary\s+authority\b",
    re.IGNORECASE,
)

_FRUSTRATION = re.compile(
    r"\b(?:frustrat(?:ed|ing|ion)|ridiculous|useless|unhelpful|angry|furious|annoy(?:ed|ing)|"
    r"complain(?:t|ts|ing)?|fed\s+up|waste\s+of\s+(?:my\s+)?time|terrible|pathetic)\b"
    r"|\b(?:not|isn'?t|wasn'?t)\s+(?:very\s+|really\s+|at\s+all\s+)?(?:helpful|helping)\b"
    r"|!{3,}",
    re.IGNORECASE,
)

# Mortgage talk is full of capitalised acronyms; they are not shouting.
_ACRONYMS = frozenset(
    {
        "HDB", "CPF", "TDSR", "MSR", "LTV", "ABSD", "BSD", "SORA", "SIBOR", "EC", "OTP", "HFE",
        "MAS", "NOA", "IRAS", "SG", "SGD", "OA", "SA", "BTO", "DBS", "OCBC", "UOB", "HSBC", "OK",
        "AI", "ASAP", "FYI", "PR", "TOP", "CSC", "MRT", "IPA", "LOA", "COV",
    }
)  # fmt: skip
_WORD = re.compile(r"[A-Za-z]+")
_MIN_SHOUTED_WORDS = 3
_MIN_SHOUTED_LETTERS = 12


def analyze_message_urgency(
    message: str, persona: BrokerPersona, *, scale: float = 1.0, jitter: float = 0.0
) -> UrgencyAnalysis:
    """Reply delay and escalation for `message` answered by `persona`.

    `jitter` is a random number in [0, 1) drawn by the caller (so this stays deterministic) and
    moves the delay by up to half a second either way. `scale` multiplies the clamped delay;
    0 disables the wait (tests, benchmarks).
    """
    if not (scale >= 0 and math.isfinite(scale)):
        raise ValueError(f"scale must be a finite number >= 0, got {scale!r}")
    if not 0 <= jitter < 1:
        raise ValueError(f"jitter must be in [0, 1), got {jitter!r}")

    is_urgent = _URGENT.search(message) is not None
    delay = _base_delay(persona)
    delay += min(len(message.strip()) * _READING_S_PER_CHAR, _MAX_READING_S)
    if is_urgent:
        delay -= _URGENT_SPEEDUP_S
    delay += (jitter - 0.5) * _JITTER_SPAN_S
    delay = min(max(delay, MIN_DELAY_S), MAX_DELAY_S)

    reason = escalation_reason(message)
    return UrgencyAnalysis(
        is_urgent=is_urgent,
        response_delay_s=delay * scale,
        escalate=reason is not None,
        escalate_reason=reason,
    )


def escalation_reason(message: str) -> EscalationReason | None:
    """Why `message` needs a human, by priority: a request, then legal, then frustration."""
    if _HUMAN_REQUESTED.search(_NOT_OUR_AGENT.sub(" ", message)):
        return EscalationReason.HUMAN_REQUESTED
    if _LEGAL_COMPLIANCE.search(_ROUTINE_LEGAL.sub(" ", message)):
        return EscalationReason.LEGAL_COMPLIANCE
    if _FRUSTRATION.search(message) or _is_shouting(message):
        return EscalationReason.FRUSTRATION
    return None


def _base_delay(persona: BrokerPersona) -> float:
    pacing_words = persona.response_style.pacing.lower().split()
    pacing = pacing_words[0] if pacing_words else _DEFAULT_PACING
    return _BASE_DELAY_BY_PACING.get(pacing, _BASE_DELAY_BY_PACING[_DEFAULT_PACING])


def _is_shouting(message: str) -> bool:
    """Several whole words in capitals, not counting the acronyms mortgage talk is full of."""
    words = [word for word in _WORD.findall(message) if word.upper() not in _ACRONYMS]
    shouted = [word for word in words if len(word) >= 2 and word.isupper()]
    if len(shouted) < _MIN_SHOUTED_WORDS:
        return False
    if sum(len(word) for word in shouted) < _MIN_SHOUTED_LETTERS:
        return False
    # Mostly capitals overall: one capitalised phrase inside a normal sentence is emphasis.
    letters = sum(len(word) for word in words)
    return sum(len(word) for word in shouted) >= 0.7 * letters

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.domain.personas import PERSONAS, BrokerPersona, persona_by_slug
from app.domain.urgency import (
    MAX_DELAY_S,
    MIN_DELAY_S,
    EscalationReason,
    analyze_message_urgency,
    escalation_reason,
)

MICHELLE = persona_by_slug("michelle-chen")  # fast
SARAH = persona_by_slug("sarah-wong")  # moderate
GRACE = persona_by_slug("grace-lim")  # patient

CALM = "What rates are banks offering for a 4-room HDB flat?"


def delay(message: str, persona: BrokerPersona = SARAH, jitter: float = 0.5) -> float:
    return analyze_message_urgency(message, persona, jitter=jitter).response_delay_s


# --- delay ---------------------------------------------------------------------------------------


def test_faster_pacing_answers_sooner() -> None:
    assert delay(CALM, MICHELLE) < delay(CALM, SARAH) < delay(CALM, GRACE)


@pytest.mark.parametrize(
    "message",
    [
        "I need this urgently",
        "Can you reply ASAP?",
        "I need an answer as soon as possible",
        "Must decide today",
        "Can you check now?",
        "The OTP deadline is Friday",
        "Please answer quickly",
        "My option expires tomorrow",
    ],
)
def test_urgent_words_speed_up_the_reply(message: str) -> None:
    calm = "x" * len(message)
    result = analyze_message_urgency(message, GRACE, jitter=0.5)
    assert result.is_urgent
    assert result.response_delay_s < delay(calm, GRACE)


@pytest.mark.parametrize(
    "message", [CALM, "I know, I'll think it over", "Nowhere near Knowles Road"]
)
def test_calm_messages_are_not_urgent(message: str) -> None:
    assert not analyze_message_urgency(message, SARAH).is_urgent


def test_longer_messages_take_longer_to_read() -> None:
    short = "Can I refinance?"
    long = short + " " + "My loan is with a bank and the lock-in ended last year. " * 3
    assert delay(short) < delay(long)


def test_reading_time_is_capped_inside_the_band() -> None:
    assert delay("x" * 10_000, GRACE, jitter=0.999) <= MAX_DELAY_S
    assert delay("x" * 10_000, SARAH) == delay("x" * 20_000, SARAH)
    assert delay("x" * 200, SARAH) < delay("x" * 10_000, SARAH)


def test_jitter_moves_the_delay_by_at_most_half_a_second_either_way() -> None:
    low = delay(CALM, SARAH, jitter=0.0)
    mid = delay(CALM, SARAH, jitter=0.5)
    high = delay(CALM, SARAH, jitter=0.999)
    assert low < mid < high
    assert mid - low == pytest.approx(0.5)
    assert high - mid == pytest.approx(0.499)


def test_delay_is_clamped_before_scaling() -> None:
    fastest = analyze_message_urgency("urgent!", MICHELLE, jitter=0.0)
    assert fastest.response_delay_s == MIN_DELAY_S
    assert analyze_message_urgency("urgent!", MICHELLE, scale=2.0).response_delay_s == 2.0


@pytest.mark.parametrize("scale", [0.0, 0.25, 1.0, 3.0])
def test_scale_multiplies_the_delay(scale: float) -> None:
    base = delay(CALM)
    scaled = analyze_message_urgency(CALM, SARAH, scale=scale, jitter=0.5).response_delay_s
    assert scaled == pytest.approx(base * scale)


@pytest.mark.parametrize("scale", [-0.1, math.nan, math.inf])
def test_scale_must_be_a_finite_non_negative_number(scale: float) -> None:
    with pytest.raises(ValueError, match="scale"):
        analyze_message_urgency(CALM, SARAH, scale=scale)


@pytest.mark.parametrize("jitter", [-0.01, 1.0, 2.0, math.nan])
def test_jitter_must_be_in_the_unit_interval(jitter: float) -> None:
    with pytest.raises(ValueError, match="jitter"):
        analyze_message_urgency(CALM, SARAH, jitter=jitter)


@given(
    message=st.text(max_size=2000),
    persona=st.sampled_from(PERSONAS),
    jitter=st.floats(min_value=0, max_value=1, exclude_max=True),
)
def test_delay_always_stays_in_the_band(
    message: str, persona: BrokerPersona, jitter: float
) -> None:
    result = analyze_message_urgency(message, persona, jitter=jitter)
    assert MIN_DELAY_S <= result.response_delay_s <= MAX_DELAY_S
    assert result.escalate == (result.escalate_reason is not None)


# --- escalation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        "Can I speak to a real person?",
        "I want to talk to a human",
        "Are you human?",
        "Get me an agent please",
        "Let me speak with your agent",
        "talk to someone who knows",
        "Can I chat with a specialist?",
        "Please call me at 91234567",
        "call me back tomorrow",
        "Call me ASAP",
        "Give me a call",
        "I'd like a representative",
        "is there a live agent?",
        "I don't want to talk to a bot",
        "I do not want a robot",
        "Speak to your manager",
    ],
)
def test_asking_for_a_person_escalates(message: str) -> None:
    assert escalation_reason(message) is EscalationReason.HUMAN_REQUESTED


@pytest.mark.parametrize(
    "message",
    [
        "Should I consult a lawyer first?",
        "Is this legal?",
        "Can I legally rent out my HDB flat?",
        "I will sue the bank",
        "What MAS regulations apply?",
        "Is this regulatory compliant?",
        "Is the package compliant with the Monetary Authority rules?",
        "I have a contract dispute with the developer",
        "I was declared bankrupt in 2019",
        "Does bankruptcy affect my loan?",
        "Should I go to FIDReC?",
    ],
)
def test_legal_and_compliance_questions_escalate(message: str) -> None:
    assert escalation_reason(message) is EscalationReason.LEGAL_COMPLIANCE


@pytest.mark.parametrize(
    "message",
    [
        "This is so frustrating",
        "I'm frustrated with these answers",
        "This is ridiculous",
        "You are useless",
        "That's not helpful",
        "That was not very helpful",
        "I'm getting angry",
        "I want to make a complaint",
        "Hello???!!!",
        "WHY IS NOBODY ANSWERING MY QUESTION",
        "what a waste of my time",
    ],
)
def test_frustration_escalates(message: str) -> None:
    assert escalation_reason(message) is EscalationReason.FRUSTRATION


@pytest.mark.parametrize(
    "message",
    [
        CALM,
        "My property agent said the valuation came in low",
        "The housing agent recommended you",
        "My agent says the OTP expires Friday",
        "Our real estate agent is handling the viewing",
        "Is the agency fee included?",
        "I work in human resources",
        "This matters for humanity",
        "Is management fee counted in TDSR?",
        "Are legal fees covered by the legal subsidy?",
        "Sue and I are buying together",
        "You can call me Wei Ming",
        "Please call me Mr Tan in messages",
        "Thanks, that was helpful!",
        "Great, thanks!!",
        "What is the MSR limit for an HDB flat? And TDSR for CPF OA?",
        "HDB TDSR MSR CPF LTV",
        "I'm buying an EC near MRT, TOP in 2027",
        "My gross is S$8,000; is SORA better?",
        "The mas-sive renovation costs",
        "Can I use my CPF? I know it's a big decision.",
    ],
)
def test_ordinary_mortgage_talk_does_not_escalate(message: str) -> None:
    assert escalation_reason(message) is None


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("This is ridiculous, I want a lawyer", EscalationReason.LEGAL_COMPLIANCE),
        ("I'm angry, let me talk to a human", EscalationReason.HUMAN_REQUESTED),
        ("Legal question: can I speak to a real person?", EscalationReason.HUMAN_REQUESTED),
        ("USELESS!!! I WILL SUE", EscalationReason.LEGAL_COMPLIANCE),
    ],
)
def test_priority_is_human_then_legal_then_frustration(
    message: str, reason: EscalationReason
) -> None:
    assert escalation_reason(message) is reason


def test_analysis_reports_the_escalation() -> None:
    result = analyze_message_urgency("I need a human now", SARAH)
    assert result.escalate
    assert result.escalate_reason is EscalationReason.HUMAN_REQUESTED
    assert result.is_urgent
    calm = analyze_message_urgency(CALM, SARAH)
    assert not calm.escalate
    assert calm.escalate_reason is None

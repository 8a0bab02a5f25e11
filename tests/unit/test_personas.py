import pytest

from app.domain.personas import (
    PERSONAS,
    BrokerPersona,
    PersonaType,
    failure_apology,
    fallback_reply,
    greeting_for,
    handoff_message,
    persona_by_slug,
)
from app.domain.urgency import EscalationReason

EXPECTED = {
    "michelle-chen": ("Michelle Chen", PersonaType.AGGRESSIVE),
    "jasmine-lee": ("Jasmine Lee", PersonaType.AGGRESSIVE),
    "rachel-tan": ("Rachel Tan", PersonaType.BALANCED),
    "sarah-wong": ("Sarah Wong", PersonaType.BALANCED),
    "grace-lim": ("Grace Lim", PersonaType.CONSERVATIVE),
}


def test_there_are_exactly_the_five_brokers_of_the_plan() -> None:
    assert {p.slug: (p.name, p.type) for p in PERSONAS} == EXPECTED
    assert len(PERSONAS) == 5


def test_sarah_wong_matches_the_plan_exactly() -> None:
    sarah = persona_by_slug("sarah-wong")
    assert sarah.title == "Family Mortgage Consultant"
    assert sarah.approach == "educational_consultative"
    assert sarah.urgency_level == "medium"
    assert sarah.response_style.tone == "warm, family-focused, trustworthy"
    assert sarah.response_style.pacing == "moderate - educate then guide"
    assert sarah.response_style.focus == "family needs, stable solutions"


@pytest.mark.parametrize("persona", PERSONAS, ids=lambda p: p.slug)
def test_every_persona_is_complete(persona: BrokerPersona) -> None:
    assert persona.response_style.pacing.split()[0] in {"fast", "moderate", "patient"}
    assert "{first_name}" in persona.greeting_template
    assert len(persona.conversation_starters) >= 3
    assert all(starter.strip() for starter in persona.conversation_starters)
    assert persona.specialty and persona.title and persona.approach


@pytest.mark.parametrize(
    ("persona_type", "pacing"),
    [
        (PersonaType.AGGRESSIVE, "fast"),
        (PersonaType.BALANCED, "moderate"),
        (PersonaType.CONSERVATIVE, "patient"),
    ],
)
def test_pacing_follows_the_persona_type(persona_type: PersonaType, pacing: str) -> None:
    for persona in PERSONAS:
        if persona.type is persona_type:
            assert persona.response_style.pacing.startswith(pacing)


def test_personas_talk_about_singapore_mortgages() -> None:
    text = " ".join(
        " ".join((p.specialty, p.greeting_template, *p.conversation_starters)) for p in PERSONAS
    )
    for term in ("HDB", "CPF", "TDSR", "private", "refinanc"):
        assert term in text


def test_persona_by_slug_finds_each_persona() -> None:
    for persona in PERSONAS:
        assert persona_by_slug(persona.slug) is persona


def test_unknown_slug_names_the_slug_and_the_known_ones() -> None:
    with pytest.raises(KeyError) as raised:
        persona_by_slug("bob-the-broker")
    assert "bob-the-broker" in str(raised.value)
    assert "sarah-wong" in str(raised.value)


@pytest.mark.parametrize("persona", PERSONAS, ids=lambda p: p.slug)
def test_greeting_uses_first_name_and_introduces_the_broker(persona: BrokerPersona) -> None:
    greeting = greeting_for(persona, "  Wei Ming Tan ")
    assert "Wei," in greeting or "Wei!" in greeting
    assert "Tan" not in greeting.split("I'm")[0]
    assert f"I'm {persona.first_name}" in greeting
    assert "{" not in greeting


@pytest.mark.parametrize("name", ["", "   ", "\t\n"])
def test_greeting_without_a_name_still_reads_naturally(name: str) -> None:
    greeting = greeting_for(persona_by_slug("grace-lim"), name)
    assert greeting.startswith("Hello there,")


def test_greeting_leaves_braces_in_a_name_alone() -> None:
    assert "{x}" in greeting_for(persona_by_slug("rachel-tan"), "{x} Lee")


@pytest.mark.parametrize("persona", PERSONAS, ids=lambda p: p.slug)
def test_canned_messages_are_signed_by_the_persona(persona: BrokerPersona) -> None:
    messages = [fallback_reply(persona), failure_apology(persona)]
    messages += [handoff_message(persona, reason) for reason in EscalationReason]
    for message in messages:
        assert message.endswith(f"— {persona.first_name}")


def test_fallback_replies_are_the_plans_per_type_texts() -> None:
    assert "maximize your mortgage opportunity" in fallback_reply(persona_by_slug("jasmine-lee"))
    assert "small technical hiccup" in fallback_reply(persona_by_slug("rachel-tan"))
    assert "step by step" in fallback_reply(persona_by_slug("grace-lim"))


def test_two_personas_of_one_type_are_told_apart_by_signature() -> None:
    michelle = fallback_reply(persona_by_slug("michelle-chen"))
    jasmine = fallback_reply(persona_by_slug("jasmine-lee"))
    assert michelle != jasmine


@pytest.mark.parametrize("persona", PERSONAS, ids=lambda p: p.slug)
def test_failure_apology_promises_a_human(persona: BrokerPersona) -> None:
    apology = failure_apology(persona)
    assert "experiencing technical difficulties" in apology
    assert "connect you with a human specialist right away" in apology


def test_handoff_wording_differs_by_reason() -> None:
    sarah = persona_by_slug("sarah-wong")
    messages = {handoff_message(sarah, reason) for reason in EscalationReason}
    assert len(messages) == len(EscalationReason)
    assert "sorry" in handoff_message(sarah, EscalationReason.FRUSTRATION).lower()
    assert "legal" in handoff_message(sarah, EscalationReason.LEGAL_COMPLIANCE)
    for message in messages:
        assert "human" in message


def test_handoff_wording_differs_by_persona_type() -> None:
    reason = EscalationReason.HUMAN_REQUESTED
    bodies = {
        handoff_message(p, reason).rsplit("—", 1)[0]
        for p in (persona_by_slug("michelle-chen"), persona_by_slug("sarah-wong"))
    }
    bodies.add(handoff_message(persona_by_slug("grace-lim"), reason).rsplit("—", 1)[0])
    assert len(bodies) == 3

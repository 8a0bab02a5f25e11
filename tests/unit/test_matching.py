import itertools

import pytest

from app.domain.lead import LOAN_TYPES, PROPERTY_CATEGORIES
from app.domain.matching import choose_persona
from app.domain.personas import PERSONAS, PersonaType


@pytest.mark.parametrize(
    ("score", "loan_type", "category", "slug"),
    [
        # Commercial deals go to the specialist whatever the score.
        (90, "commercial", None, "michelle-chen"),
        (20, "commercial", "commercial", "michelle-chen"),
        (60, "new_purchase", "commercial", "michelle-chen"),
        # Strong private-property leads.
        (80, "new_purchase", "landed", "jasmine-lee"),
        (75, "refinance", "landed", "jasmine-lee"),
        (85, "new_purchase", "private", "jasmine-lee"),
        (85, "refinance", "private", "michelle-chen"),
        (90, "new_purchase", None, "michelle-chen"),
        # Strong HDB/EC leads are families, not investors.
        (90, "new_purchase", "hdb", "sarah-wong"),
        (80, "refinance", "ec", "sarah-wong"),
        # Weak leads.
        (39, "new_purchase", "private", "grace-lim"),
        (10, "refinance", "hdb", "grace-lim"),
        (0, "new_purchase", None, "grace-lim"),
        # First purchases on lower scores.
        (54, "new_purchase", "hdb", "grace-lim"),
        (55, "new_purchase", "hdb", "sarah-wong"),
        (70, "new_purchase", "ec", "sarah-wong"),
        (49, "new_purchase", "private", "grace-lim"),
        (50, "new_purchase", "private", "rachel-tan"),
        (74, "new_purchase", "landed", "rachel-tan"),
        (60, "new_purchase", None, "rachel-tan"),
        # Refinancing on moderate scores.
        (60, "refinance", "private", "rachel-tan"),
        (60, "refinance", None, "rachel-tan"),
        (45, "refinance", "hdb", "sarah-wong"),
        # Unknown loan type: the balanced default.
        (60, "bridging", None, "rachel-tan"),
    ],
)
def test_routing_rules(score: int, loan_type: str, category: str | None, slug: str) -> None:
    assert choose_persona(score, loan_type, category).slug == slug


def test_every_persona_is_reachable() -> None:
    reached = {
        choose_persona(score, loan_type, category).slug
        for score, loan_type, category in itertools.product(
            range(0, 101, 5), LOAN_TYPES, (*PROPERTY_CATEGORIES, None)
        )
    }
    assert reached == {persona.slug for persona in PERSONAS}


def test_a_weaker_lead_never_gets_a_pushier_broker() -> None:
    pushiness = {
        PersonaType.CONSERVATIVE: 0,
        PersonaType.BALANCED: 1,
        PersonaType.AGGRESSIVE: 2,
    }
    for loan_type, category in itertools.product(
        ("new_purchase", "refinance"), ("hdb", "ec", "private", "landed", None)
    ):
        types = [choose_persona(score, loan_type, category).type for score in range(101)]
        levels = [pushiness[t] for t in types]
        assert levels == sorted(levels), (loan_type, category)

"""Which broker persona a new lead meets.

Rules, first match wins:

1. Commercial loans or commercial property → Michelle Chen, the investment and commercial
   specialist, whatever the score: the deal type needs the specialist.
2. Strong leads (score >= 75) buying or holding private property:
   - landed homes, or buying a private condominium → Jasmine Lee (luxury and private property);
   - refinancing a private condominium → Michelle Chen (high-value refinancing is portfolio work:
     equity release, repricing, rental yield);
   - property not given → Michelle Chen (a strong lead with an open brief is usually an investor).
   Strong HDB and EC leads fall through to the family and first-home rules below.
3. Weak leads (score < 40) → Grace Lim, who takes first-timers and stretched budgets step by step.
4. New purchases:
   - HDB or EC: below 55 → Grace Lim (typically a first home on a tight budget); otherwise
     Sarah Wong (a family home);
   - private, landed or not given: below 50 → Grace Lim; otherwise Rachel Tan (young
     professionals buying or upgrading).
5. Refinancing: HDB or EC → Sarah Wong (the family home); anything else → Rachel Tan (quick
   package comparisons).
6. Anything else (an unknown loan type) → Rachel Tan, the balanced default.
"""

from __future__ import annotations

from app.domain.personas import BrokerPersona, persona_by_slug

STRONG_LEAD_SCORE = 75
WEAK_LEAD_SCORE = 40
_FAMILY_FIRST_HOME_SCORE = 55
_PRIVATE_FIRST_HOME_SCORE = 50

_PUBLIC_HOUSING = frozenset({"hdb", "ec"})


def choose_persona(lead_score: int, loan_type: str, property_category: str | None) -> BrokerPersona:
    """The persona for a new lead, by the rules in the module docstring."""
    return persona_by_slug(_persona_slug(lead_score, loan_type, property_category))


def _persona_slug(lead_score: int, loan_type: str, property_category: str | None) -> str:
    if loan_type == "commercial" or property_category == "commercial":
        return "michelle-chen"
    if lead_score >= STRONG_LEAD_SCORE:
        if property_category == "landed":
            return "jasmine-lee"
        if property_category == "private":
            return "jasmine-lee" if loan_type == "new_purchase" else "michelle-chen"
        if property_category is None:
            return "michelle-chen"
    if lead_score < WEAK_LEAD_SCORE:
        return "grace-lim"
    public_housing = property_category in _PUBLIC_HOUSING
    if loan_type == "new_purchase":
        if public_housing:
            return "grace-lim" if lead_score < _FAMILY_FIRST_HOME_SCORE else "sarah-wong"
        return "grace-lim" if lead_score < _PRIVATE_FIRST_HOME_SCORE else "rachel-tan"
    if loan_type == "refinance":
        return "sarah-wong" if public_housing else "rachel-tan"
    return "rachel-tan"

"""The lead form a customer submits on the website, its lead score, and what brokers keep of it.

The form keeps the legacy field names (the reference plan's `ProcessedLeadData`), in camelCase:

- `loanType`: "new_purchase" (buying a home), "refinance" (moving an existing loan to a better
  package), "commercial" (shophouses, offices, industrial property).
- `propertyCategory` (optional): "hdb", "ec" (executive condominium), "private" (condominium),
  "landed", "commercial".
- `actualIncomes`: monthly incomes in S$, one per applicant (up to four joint applicants).
- `actualAges`: the applicants' ages, in the same order.
- `employmentType`: "employed", "self_employed", "contract", "unemployed", "retired".
- `leadScore` (optional): the website's own score, 0-100; `sessionId` (optional): its session.

Lead score, when the website did not send one (`score_lead`), is the sum of five parts, 0-100:

- Household monthly income (sum of `actualIncomes`), up to 35: >= 20,000: 35; >= 12,000: 28;
  >= 8,000: 22; >= 5,000: 15; >= 3,000: 8; above 0: 3; nothing: 0. Income drives how much a bank
  lends under TDSR and MSR.
- Employment stability, up to 20: employed 20; self-employed 12 (banks average two years of
  Notices of Assessment); contract 10; retired 6; unemployed 0.
- Age for tenure, up to 20, from the income-weighted average age (what banks use for joint loans;
  the plain average when incomes are all zero or do not line up with ages): <= 35: 20; <= 45: 15;
  <= 55: 8; <= 65: 3; older: 0. Loans must end by about 65 for the full loan-to-value limit.
- Loan type, up to 15: commercial 15; new purchase 12; refinance 10 (a smaller deal, but a
  borrower with a proven repayment record).
- Property category, up to 10: landed 10; private 8; commercial 8; EC 6; HDB 4; not given 2.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from app.domain.numbers import whole_number

LOAN_TYPES = ("new_purchase", "refinance", "commercial")
PROPERTY_CATEGORIES = ("hdb", "ec", "private", "landed", "commercial")
EMPLOYMENT_TYPES = ("employed", "self_employed", "contract", "unemployed", "retired")

MAX_NAME_CHARS = 120
MAX_EMAIL_CHARS = 254
MAX_APPLICANTS = 4
MAX_MONTHLY_INCOME = 10_000_000
MIN_AGE = 18
MAX_AGE = 99
MAX_SESSION_ID_CHARS = 128
MAX_LEAD_SCORE = 100

# Plausible, not RFC 5322: a local part, an "@", and a dotted domain of letters, digits, hyphens.
# Both patterns are also valid ECMA-262, so the OpenAPI document states them as they are.
EMAIL_PATTERN = (
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+"
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+"
)
_EMAIL = re.compile(EMAIL_PATTERN)
# Chatwoot rejects contacts whose phone is not E.164, so the form is held to the same rule.
E164_PATTERN = r"\+[1-9][0-9]{1,14}"
_E164 = re.compile(E164_PATTERN)
# Separators people type inside phone numbers ("+65 9123-4567"); removed before checking E.164.
_PHONE_SEPARATORS = re.compile(r"[\s\-().]")

_T = TypeVar("_T")


@dataclass(frozen=True)
class FieldError:
    """One problem with one form field; `field` is the form's camelCase key."""

    field: str
    message: str


class LeadFormError(ValueError):
    """The form had invalid fields; `errors` lists every one of them."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(f"{error.field}: {error.message}" for error in errors))
        self.errors = errors


@dataclass(frozen=True)
class LeadForm:
    """A validated lead form, strings stripped."""

    name: str
    email: str
    phone: str
    loan_type: str
    property_category: str | None
    actual_incomes: tuple[float, ...]
    actual_ages: tuple[int, ...]
    employment_type: str
    lead_score: int | None
    session_id: str | None


class _Invalid(Exception):
    """One field's problem, raised inside a field check and collected by `parse_lead_form`."""


def parse_lead_form(data: object) -> LeadForm:
    """Validate a lead-form body; raise `LeadFormError` listing every invalid field."""
    if not isinstance(data, Mapping):
        raise LeadFormError([FieldError("body", "must be a JSON object")])

    errors: list[FieldError] = []

    def check(field: str, parse: Callable[[object], _T], fallback: _T) -> _T:
        try:
            return parse(data.get(field))
        except _Invalid as problem:
            errors.append(FieldError(field, str(problem)))
            return fallback

    form = LeadForm(
        name=check("name", _name, ""),
        email=check("email", _email, ""),
        phone=check("phone", _phone, ""),
        loan_type=check("loanType", _choice(LOAN_TYPES), ""),
        property_category=check("propertyCategory", _optional_choice(PROPERTY_CATEGORIES), None),
        actual_incomes=check("actualIncomes", _incomes, ()),
        actual_ages=check("actualAges", _ages, ()),
        employment_type=check("employmentType", _choice(EMPLOYMENT_TYPES), ""),
        lead_score=check("leadScore", _optional_score, None),
        session_id=check("sessionId", _optional_session_id, None),
    )
    if errors:
        raise LeadFormError(errors)
    return form


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise _Invalid("is required and must be a string")
    return value.strip()


def _name(value: object) -> str:
    name = _text(value)
    if not name:
        raise _Invalid("must not be blank")
    if len(name) > MAX_NAME_CHARS:
        raise _Invalid(f"must be at most {MAX_NAME_CHARS} characters")
    return name


def _email(value: object) -> str:
    email = _text(value)
    if len(email) > MAX_EMAIL_CHARS or not _EMAIL.fullmatch(email):
        raise _Invalid("must be a valid email address, e.g. name@example.com")
    return email


def _phone(value: object) -> str:
    phone = _PHONE_SEPARATORS.sub("", _text(value))
    if not _E164.fullmatch(phone):
        raise _Invalid("must be in international format with country code, e.g. +6591234567")
    return phone


def _choice(allowed: tuple[str, ...]) -> Callable[[object], str]:
    def parse(value: object) -> str:
        choice = _text(value)
        if choice not in allowed:
            raise _Invalid(f"must be one of: {', '.join(allowed)}")
        return choice

    return parse


def _optional_choice(allowed: tuple[str, ...]) -> Callable[[object], str | None]:
    required = _choice(allowed)

    def parse(value: object) -> str | None:
        # Web forms send "" for an untouched select box; that means "not given".
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        return required(value)

    return parse


def _applicant_list(value: object) -> list[object]:
    if not isinstance(value, list) or not value:
        raise _Invalid("must be a non-empty list, one entry per applicant")
    if len(value) > MAX_APPLICANTS:
        raise _Invalid(f"must have at most {MAX_APPLICANTS} entries, one per applicant")
    return value


def _incomes(value: object) -> tuple[float, ...]:
    incomes = []
    for position, item in enumerate(_applicant_list(value), start=1):
        income = _finite_number(item)
        if income is None:
            raise _Invalid(f"entry {position} must be a number (monthly income in S$)")
        if not 0 <= income <= MAX_MONTHLY_INCOME:
            raise _Invalid(f"entry {position} must be between 0 and {MAX_MONTHLY_INCOME:,}")
        incomes.append(income)
    return tuple(incomes)


def _ages(value: object) -> tuple[int, ...]:
    ages = []
    for position, item in enumerate(_applicant_list(value), start=1):
        age = whole_number(item)
        if age is None:
            raise _Invalid(f"entry {position} must be a whole number (age in years)")
        if not MIN_AGE <= age <= MAX_AGE:
            raise _Invalid(f"entry {position} must be between {MIN_AGE} and {MAX_AGE}")
        ages.append(age)
    return tuple(ages)


def _optional_score(value: object) -> int | None:
    if value is None:
        return None
    score = whole_number(value)
    if score is None or not 0 <= score <= MAX_LEAD_SCORE:
        raise _Invalid(f"must be a whole number from 0 to {MAX_LEAD_SCORE}")
    return score


def _optional_session_id(value: object) -> str | None:
    if value is None:
        return None
    session_id = _text(value)
    if len(session_id) > MAX_SESSION_ID_CHARS:
        raise _Invalid(f"must be at most {MAX_SESSION_ID_CHARS} characters")
    return session_id or None


def _finite_number(value: object) -> float | None:
    # bool is an int subclass in Python, but `true` is not an income.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int too large for a float
        return None
    return number if math.isfinite(number) else None


def score_lead(form: LeadForm) -> int:
    """The lead's score, 0-100: the website's own if it sent one, else the rules above."""
    if form.lead_score is not None:
        return form.lead_score
    score = (
        _income_points(sum(form.actual_incomes))
        + _EMPLOYMENT_POINTS.get(form.employment_type, 0)
        + _age_points(_tenure_age(form.actual_incomes, form.actual_ages))
        + _LOAN_TYPE_POINTS.get(form.loan_type, 0)
        + _PROPERTY_POINTS.get(form.property_category, _PROPERTY_POINTS[None])
    )
    return max(0, min(100, score))


_INCOME_BANDS = ((20_000, 35), (12_000, 28), (8_000, 22), (5_000, 15), (3_000, 8))
_EMPLOYMENT_POINTS = {
    "employed": 20,
    "self_employed": 12,
    "contract": 10,
    "retired": 6,
    "unemployed": 0,
}
_AGE_BANDS = ((35, 20), (45, 15), (55, 8), (65, 3))
_LOAN_TYPE_POINTS = {"commercial": 15, "new_purchase": 12, "refinance": 10}
_PROPERTY_POINTS: dict[str | None, int] = {
    "landed": 10,
    "private": 8,
    "commercial": 8,
    "ec": 6,
    "hdb": 4,
    None: 2,
}


def _income_points(monthly_income: float) -> int:
    for floor, points in _INCOME_BANDS:
        if monthly_income >= floor:
            return points
    return 3 if monthly_income > 0 else 0


def _tenure_age(incomes: tuple[float, ...], ages: tuple[int, ...]) -> float | None:
    if not ages:
        return None
    total_income = sum(incomes)
    if len(incomes) == len(ages) and total_income > 0:
        return sum(income * age for income, age in zip(incomes, ages, strict=True)) / total_income
    return sum(ages) / len(ages)


def _age_points(age: float | None) -> int:
    if age is None:
        return 0
    for ceiling, points in _AGE_BANDS:
        if age <= ceiling:
            return points
    return 0


@dataclass(frozen=True)
class LeadProfile:
    """What a broker keeps of a lead: enough to brief the model, nothing to contact them by.

    `monthly_income` is the household total, since joint applicants' incomes count together
    towards TDSR and MSR.
    """

    name: str
    lead_score: int
    loan_type: str | None
    property_category: str | None
    monthly_income: float | None
    employment_type: str | None
    # Which e-mail and phone wrote this profile, as a digest: a resubmission must repeat both to
    # replace it (`may_replace_profile`).
    contact_digest: str | None = None

    @classmethod
    def from_form(cls, form: LeadForm, score: int) -> LeadProfile:
        return cls(
            name=form.name,
            lead_score=score,
            loan_type=form.loan_type,
            property_category=form.property_category,
            monthly_income=sum(form.actual_incomes) if form.actual_incomes else None,
            employment_type=form.employment_type,
            contact_digest=contact_digest(form.email, form.phone),
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "lead_score": self.lead_score,
            "loan_type": self.loan_type,
            "property_category": self.property_category,
            "monthly_income": self.monthly_income,
            "employment_type": self.employment_type,
            "contact_digest": self.contact_digest,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> LeadProfile:
        """Read a stored profile; missing or mistyped keys fall back to "unknown"."""
        score = whole_number(data.get("lead_score"))
        return cls(
            name=_str_or_none(data.get("name")) or "",
            lead_score=max(0, min(100, score)) if score is not None else 0,
            loan_type=_str_or_none(data.get("loan_type")),
            property_category=_str_or_none(data.get("property_category")),
            monthly_income=_finite_number(data.get("monthly_income")),
            employment_type=_str_or_none(data.get("employment_type")),
            contact_digest=_str_or_none(data.get("contact_digest")),
        )


def contact_digest(email: str, phone: str) -> str:
    """A digest of the pair, not of either alone: knowing one detail does not reproduce it."""
    pair = f"{email.strip().casefold()}\n{phone.strip()}"
    return hashlib.sha256(b"ai-broker lead contact\n" + pair.encode()).hexdigest()


def may_replace_profile(
    form: LeadForm,
    stored: Mapping[str, object] | None,
    *,
    email_on_record: str | None,
    phone_on_record: str | None,
) -> bool:
    """Whether this submission may replace the conversation's stored profile.

    Anyone can type a stranger's phone number or e-mail into the website's form, and the contact
    is found by either one. So a profile is replaced only with proof that the same person is
    back: the form repeats both the e-mail and the phone that wrote the profile. A profile from
    before digests were kept is compared with the contact's details in Chatwoot instead, both of
    which must be on record and equal. With no profile yet there is nothing to protect.
    """
    if not stored:
        return True
    digest = stored.get("contact_digest")
    if isinstance(digest, str):
        return hmac.compare_digest(digest, contact_digest(form.email, form.phone))
    return (
        email_on_record is not None
        and phone_on_record is not None
        and email_on_record.strip().casefold() == form.email.strip().casefold()
        and phone_on_record.strip() == form.phone.strip()
    )


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.domain.lead import (
    FieldError,
    LeadForm,
    LeadFormError,
    LeadProfile,
    contact_digest,
    may_replace_profile,
    parse_lead_form,
    score_lead,
)
from tests.support.fixtures import lead_form as valid_body


def errors_of(body: object) -> dict[str, str]:
    with pytest.raises(LeadFormError) as raised:
        parse_lead_form(body)
    return {error.field: error.message for error in raised.value.errors}


def form(**overrides: Any) -> LeadForm:
    return parse_lead_form(valid_body(**overrides))


def test_a_valid_form_parses_with_stripped_strings() -> None:
    parsed = parse_lead_form(
        valid_body(name="  Tan Wei Ming ", email=" weiming.tan@example.com\n", sessionId=" s-1 ")
    )
    assert parsed == LeadForm(
        name="Tan Wei Ming",
        email="weiming.tan@example.com",
        phone="+6591234567",
        loan_type="new_purchase",
        property_category="hdb",
        actual_incomes=(6000.0,),
        actual_ages=(35,),
        employment_type="employed",
        lead_score=None,
        session_id="s-1",
    )


def test_optional_fields_and_unknown_keys() -> None:
    body = valid_body(leadScore=72, sessionId="abc", utm_source="google")
    del body["propertyCategory"]
    parsed = parse_lead_form(body)
    assert parsed.property_category is None
    assert parsed.lead_score == 72
    assert parsed.session_id == "abc"


@pytest.mark.parametrize("category", [None, "", "  "])
def test_property_category_may_be_absent(category: str | None) -> None:
    assert form(propertyCategory=category).property_category is None


@pytest.mark.parametrize("loan_type", ["new_purchase", "refinance", "commercial"])
def test_every_documented_loan_type_is_accepted(loan_type: str) -> None:
    assert form(loanType=loan_type).loan_type == loan_type


@pytest.mark.parametrize("phone", ["+65 9123 4567", "+65-9123-4567", "+1 (415) 555-0100"])
def test_phone_separators_are_removed(phone: str) -> None:
    assert form(phone=phone).phone.startswith("+")
    assert " " not in form(phone=phone).phone


def test_joint_applicants_and_float_ages_from_javascript() -> None:
    parsed = form(actualIncomes=[6000, 4500.5], actualAges=[35.0, 33])
    assert parsed.actual_incomes == (6000.0, 4500.5)
    assert parsed.actual_ages == (35, 33)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", ""),
        ("name", "   "),
        ("name", "x" * 121),
        ("name", 42),
        ("name", None),
        ("email", "not-an-email"),
        ("email", "a@b"),
        ("email", "a b@example.com"),
        ("email", "a@example.com\nBcc: x@y.com"),
        ("email", "a" * 250 + "@example.com"),
        ("phone", "91234567"),
        ("phone", "+0123456"),
        ("phone", "+65912345678901234"),
        ("phone", "+65abc"),
        ("loanType", "home_loan"),
        ("loanType", "Refinance"),
        ("loanType", None),
        ("propertyCategory", "condo"),
        ("propertyCategory", 3),
        ("actualIncomes", []),
        ("actualIncomes", [1000] * 5),
        ("actualIncomes", [-1]),
        ("actualIncomes", [10_000_001]),
        ("actualIncomes", [True]),
        ("actualIncomes", ["5000"]),
        ("actualIncomes", [math.nan]),
        ("actualIncomes", [math.inf]),
        ("actualIncomes", [10**400]),
        ("actualIncomes", 5000),
        ("actualAges", []),
        ("actualAges", [17]),
        ("actualAges", [100]),
        ("actualAges", [35.5]),
        ("actualAges", [False]),
        ("actualAges", ["35"]),
        ("actualAges", [30] * 5),
        ("employmentType", "freelance"),
        ("employmentType", ""),
        ("leadScore", 101),
        ("leadScore", -1),
        ("leadScore", "80"),
        ("leadScore", True),
        ("sessionId", "s" * 129),
        ("sessionId", 123),
    ],
)
def test_invalid_field_is_reported_under_its_camel_case_key(field: str, value: object) -> None:
    errors = errors_of(valid_body(**{field: value}))
    assert list(errors) == [field]
    assert errors[field]


def test_boundaries_are_inclusive() -> None:
    parsed = form(
        name="x" * 120,
        actualIncomes=[0, 10_000_000],
        actualAges=[18, 99],
        leadScore=100,
        sessionId="s" * 128,
    )
    assert parsed.actual_ages == (18, 99)
    assert form(leadScore=0).lead_score == 0


def test_all_errors_are_collected_at_once() -> None:
    errors = errors_of({"name": "", "email": "x", "actualAges": [5]})
    assert set(errors) == {
        "name",
        "email",
        "phone",
        "loanType",
        "actualIncomes",
        "actualAges",
        "employmentType",
    }


def test_error_message_says_what_to_send() -> None:
    errors = errors_of(valid_body(loanType="mortgage"))
    assert "new_purchase" in errors["loanType"]
    assert "refinance" in errors["loanType"]


def test_the_error_lists_field_errors_and_reads_as_a_sentence() -> None:
    with pytest.raises(LeadFormError) as raised:
        parse_lead_form(valid_body(phone="123"))
    assert raised.value.errors == [FieldError("phone", raised.value.errors[0].message)]
    assert str(raised.value).startswith("phone: ")
    assert isinstance(raised.value, ValueError)


@pytest.mark.parametrize("body", [None, [], "name=x", 42, b"{}", ["name"]])
def test_a_body_that_is_not_an_object_is_one_error(body: object) -> None:
    assert errors_of(body) == {"body": "must be a JSON object"}


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(), children),
    max_leaves=20,
)
_field_values = st.dictionaries(
    st.sampled_from(
        [
            "name",
            "email",
            "phone",
            "loanType",
            "propertyCategory",
            "actualIncomes",
            "actualAges",
            "employmentType",
            "leadScore",
            "sessionId",
        ]
    ),
    _json,
)


@given(st.one_of(_json, _field_values, _field_values.map(lambda extra: valid_body(**extra))))
def test_parsing_never_raises_anything_but_a_lead_form_error(body: object) -> None:
    try:
        parsed = parse_lead_form(body)
    except LeadFormError as error:
        assert error.errors
    else:
        assert 0 <= score_lead(parsed) <= 100


# --- scoring -------------------------------------------------------------------------------------


def test_the_websites_own_score_wins() -> None:
    assert score_lead(form(leadScore=17, actualIncomes=[50_000])) == 17


def test_scoring_rules_add_up_as_documented() -> None:
    # income 6,000 → 15; employed → 20; age 35 → 20; new purchase → 12; HDB → 4.
    assert score_lead(form()) == 71


def test_the_strongest_lead_scores_100_and_the_weakest_stays_above_0() -> None:
    best = form(
        actualIncomes=[25_000],
        actualAges=[30],
        loanType="commercial",
        propertyCategory="landed",
    )
    assert score_lead(best) == 35 + 20 + 20 + 15 + 10
    worst = form(
        actualIncomes=[0],
        actualAges=[70],
        employmentType="unemployed",
        loanType="refinance",
        propertyCategory=None,
    )
    assert score_lead(worst) == 0 + 0 + 0 + 10 + 2


@pytest.mark.parametrize(
    ("lower", "higher"),
    [
        ({"actualIncomes": [4000]}, {"actualIncomes": [9000]}),
        ({"actualIncomes": [9000]}, {"actualIncomes": [6000, 8000]}),
        ({"employmentType": "self_employed"}, {"employmentType": "employed"}),
        ({"employmentType": "unemployed"}, {"employmentType": "contract"}),
        ({"actualAges": [58]}, {"actualAges": [40]}),
        ({"loanType": "refinance"}, {"loanType": "new_purchase"}),
        ({"propertyCategory": "hdb"}, {"propertyCategory": "private"}),
    ],
)
def test_each_factor_moves_the_score_the_right_way(
    lower: dict[str, Any], higher: dict[str, Any]
) -> None:
    assert score_lead(form(**lower)) < score_lead(form(**higher))


def test_joint_age_is_weighted_by_income() -> None:
    # The high earner is 30, so the pair borrows like a young applicant (weighted age ~33).
    young_earner = form(actualIncomes=[9000, 1000], actualAges=[30, 60])
    old_earner = form(actualIncomes=[1000, 9000], actualAges=[30, 60])
    assert score_lead(young_earner) > score_lead(old_earner)


def test_ages_without_matching_incomes_use_the_plain_average() -> None:
    assert score_lead(form(actualIncomes=[8000], actualAges=[30, 40])) == score_lead(
        form(actualIncomes=[8000], actualAges=[35])
    )


def test_scoring_is_deterministic() -> None:
    assert len({score_lead(form()) for _ in range(5)}) == 1


# --- profile -------------------------------------------------------------------------------------


def test_profile_from_form_totals_household_income() -> None:
    profile = LeadProfile.from_form(form(actualIncomes=[6000, 4000], actualAges=[35, 33]), 64)
    assert profile == LeadProfile(
        name="Tan Wei Ming",
        lead_score=64,
        loan_type="new_purchase",
        property_category="hdb",
        monthly_income=10_000.0,
        employment_type="employed",
        contact_digest=contact_digest("weiming.tan@example.com", "+6591234567"),
    )


def test_profile_round_trips_through_json() -> None:
    profile = LeadProfile.from_form(form(), 71)
    assert LeadProfile.from_dict(json.loads(json.dumps(profile.to_dict()))) == profile


def test_profile_from_an_empty_or_odd_dict_falls_back_to_unknown() -> None:
    assert LeadProfile.from_dict({}) == LeadProfile("", 0, None, None, None, None)
    odd = LeadProfile.from_dict(
        {"name": 3, "lead_score": 250, "monthly_income": "lots", "loan_type": ["x"]}
    )
    assert odd == LeadProfile("", 100, None, None, None, None)


def test_profile_keeps_no_contact_details() -> None:
    stored = LeadProfile.from_form(form(), 71).to_dict()
    assert "email" not in stored and "phone" not in stored
    assert "weiming" not in json.dumps(stored) and "91234567" not in json.dumps(stored)


def test_contact_digest_is_of_the_pair_not_of_either_detail() -> None:
    pair = contact_digest("weiming.tan@example.com", "+6591234567")
    assert contact_digest(" WeiMing.Tan@Example.COM ", "+6591234567") == pair
    assert contact_digest("weiming.tan@example.com", "+6591234568") != pair
    assert contact_digest("other@example.com", "+6591234567") != pair


@pytest.mark.parametrize(
    ("submitted", "on_record", "allowed"),
    [
        pytest.param({}, (None, None), True, id="same e-mail and phone"),
        pytest.param({"email": "x@example.com"}, (None, None), False, id="other e-mail"),
        pytest.param({"phone": "+6588887777"}, (None, None), False, id="other phone"),
        pytest.param({"name": "Someone Else"}, (None, None), True, id="a corrected name"),
    ],
)
def test_a_profile_is_replaced_only_by_the_pair_that_wrote_it(
    submitted: dict[str, str], on_record: tuple[None, None], allowed: bool
) -> None:
    stored = LeadProfile.from_form(form(), 71).to_dict()
    email, phone = on_record
    assert (
        may_replace_profile(form(**submitted), stored, email_on_record=email, phone_on_record=phone)
        is allowed
    )


@pytest.mark.parametrize(
    ("email", "phone", "allowed"),
    [
        ("weiming.tan@example.com", "+6591234567", True),
        ("WEIMING.TAN@example.com", "+6591234567", True),
        (None, "+6591234567", False),
        ("weiming.tan@example.com", None, False),
        ("other@example.com", "+6591234567", False),
    ],
)
def test_a_profile_without_a_digest_needs_both_details_on_record(
    email: str | None, phone: str | None, allowed: bool
) -> None:
    legacy = {"name": "Tan Wei Ming", "lead_score": 70}
    assert (
        may_replace_profile(form(), legacy, email_on_record=email, phone_on_record=phone) is allowed
    )


def test_with_no_profile_yet_there_is_nothing_to_protect() -> None:
    assert may_replace_profile(form(), None, email_on_record=None, phone_on_record=None)
    assert may_replace_profile(form(), {}, email_on_record=None, phone_on_record=None)

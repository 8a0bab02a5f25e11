"""Scripted Singapore mortgage conversations: the customers the traffic generator plays.

Each script is one lead as the website's form submits it, and what that customer then types, turn
by turn. They cover the cases the brokers must handle, including the ones that should end with a
human (a frustrated customer, a request for a real person, a legal question), so a demo or a load
run exercises handoff as well as ordinary replies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

LoanType = Literal["new_purchase", "refinance", "commercial"]
PropertyCategory = Literal["hdb", "ec", "private", "landed", "commercial"]
# The lead form's values (app/domain/lead.py EMPLOYMENT_TYPES).
EmploymentType = Literal["employed", "self_employed", "contract", "unemployed", "retired"]


@dataclass(frozen=True)
class ConversationScript:
    """One lead and the customer's turns, in order."""

    key: str
    name: str
    email: str
    phone: str
    loan_type: LoanType
    property_category: PropertyCategory
    monthly_incomes: tuple[int, ...]
    ages: tuple[int, ...]
    employment_type: EmploymentType
    turns: tuple[str, ...]
    expects_handoff: bool = False

    def lead_form(self, *, email: str | None = None, phone: str | None = None) -> dict[str, Any]:
        """The lead-form body (legacy `ProcessedLeadData` field names) for this customer."""
        return {
            "name": self.name,
            "email": email or self.email,
            "phone": phone or self.phone,
            "loanType": self.loan_type,
            "propertyCategory": self.property_category,
            "actualIncomes": list(self.monthly_incomes),
            "actualAges": list(self.ages),
            "employmentType": self.employment_type,
        }


SCRIPTS: tuple[ConversationScript, ...] = (
    ConversationScript(
        key="hdb_refinance_cash_out",
        name="Tan Wei Ming",
        email="weiming.tan@example.com",
        phone="+6591234567",
        loan_type="refinance",
        property_category="hdb",
        monthly_incomes=(7200,),
        ages=(41,),
        employment_type="employed",
        turns=(
            "Hi, I'm on an HDB concessionary loan (2.6%) for my 4-room flat in Tampines. Can I "
            "refinance to a bank loan, and what rates are banks offering now?",
            "About S$280k left, 18 years to go. I'd also like to take some cash out for "
            "renovation - is that possible?",
            "If I switch to a bank loan and rates go up, can I come back to HDB later?",
        ),
    ),
    ConversationScript(
        key="first_time_bto",
        name="Nurul Aisyah binte Rahman",
        email="nurul.aisyah@example.com",
        phone="+6598765432",
        loan_type="new_purchase",
        property_category="hdb",
        monthly_incomes=(4200, 3800),
        ages=(27, 28),
        employment_type="employed",
        turns=(
            "Hello! My fiance and I just got our BTO in Tengah, key collection is end of next "
            "year. Should we take the HDB loan or a bank loan?",
            "We earn about S$8k a month together. How much CPF OA can we use for the downpayment?",
            "What's the difference between the HDB Loan Eligibility letter and a bank's "
            "in-principle approval? Do we need both?",
            "OK thanks. Can you send me a simple comparison so we can discuss tonight?",
        ),
    ),
    ConversationScript(
        key="investor_second_property",
        name="Rajesh Kumar",
        email="rajesh.kumar@example.com",
        phone="+6581234098",
        loan_type="new_purchase",
        property_category="private",
        monthly_incomes=(16500,),
        ages=(45,),
        employment_type="employed",
        turns=(
            "I own a condo in Bishan with about S$400k outstanding. Looking at a second unit in "
            "District 15 for rental yield. What LTV can I get?",
            "So the second loan is capped at 45%? And ABSD is 20% for a second property as a "
            "citizen, right?",
            "Is it better to decouple with my wife first? She's not on the Bishan title.",
            "Rental yield there is maybe 3.2%. Does the bank count rental income for TDSR?",
        ),
    ),
    ConversationScript(
        key="luxury_condo_sentosa",
        name="Jonathan Lim",
        email="jonathan.lim@example.com",
        phone="+6590011223",
        loan_type="new_purchase",
        property_category="private",
        monthly_incomes=(48000,),
        ages=(52,),
        employment_type="self_employed",
        turns=(
            "Looking at a S$6.8m unit at Sentosa Cove. I run my own business; my NOA shows about "
            "S$580k last year. Which banks are comfortable with self-employed income at this size?",
            "I'd rather not pledge too much cash. Can I do a partial pledge plus show-fund to "
            "meet TDSR?",
            "What's the typical rate for a loan this size, and is there a wealth-client discount?",
        ),
    ),
    ConversationScript(
        key="family_upgrade_hdb_to_condo",
        name="Sarah Goh",
        email="sarah.goh@example.com",
        phone="+6593344556",
        loan_type="new_purchase",
        property_category="private",
        monthly_incomes=(9500, 8000),
        ages=(38, 40),
        employment_type="employed",
        turns=(
            "We're a family of four in a 5-room HDB in Punggol, thinking of upgrading to a condo "
            "near good schools. Do we need to sell first?",
            "If we buy first we pay ABSD and claim the remission after selling within 6 months, "
            "correct? That's a lot of cash upfront.",
            "Our HDB is worth about S$680k with S$150k loan left. Roughly what condo budget can "
            "we afford?",
            "Could we use a bridging loan for the downpayment while the HDB sale completes?",
        ),
    ),
    ConversationScript(
        key="frustrated_slow_bank",
        name="Kelvin Ng",
        email="kelvin.ng@example.com",
        phone="+6582233445",
        loan_type="refinance",
        property_category="private",
        monthly_incomes=(11000,),
        ages=(36,),
        employment_type="employed",
        turns=(
            "My lock-in ends next month and my bank still hasn't sent the repricing offer. This "
            "is the third time I'm asking anyone for help.",
            "Honestly this is ridiculous. Every broker says they'll get back to me and nobody "
            "does. Can you actually do something?",
            "I just want a straight answer: what's the best 2-year fixed rate right now?",
        ),
        expects_handoff=True,
    ),
    ConversationScript(
        key="wants_real_person",
        name="Evelyn Teo",
        email="evelyn.teo@example.com",
        phone="+6596677889",
        loan_type="refinance",
        property_category="private",
        monthly_incomes=(7800,),
        ages=(58,),
        employment_type="employed",
        turns=(
            "Hello, is this an automated chat?",
            "Can I speak to a real person please? I prefer to discuss my finances with a human.",
            "Please have someone call me after 6pm.",
        ),
        expects_handoff=True,
    ),
    ConversationScript(
        key="legal_question_divorce",
        name="Marcus Lee",
        email="marcus.lee@example.com",
        phone="+6583344667",
        loan_type="refinance",
        property_category="private",
        monthly_incomes=(13200,),
        ages=(44,),
        employment_type="employed",
        turns=(
            "My wife and I are divorcing. The condo is in joint names. Can I take over the whole "
            "loan and remove her from the title?",
            "Does she have to refund her CPF with accrued interest before the transfer? What does "
            "the court order need to say?",
            "Who should I talk to about the legal side - a conveyancing lawyer or a family lawyer?",
        ),
        expects_handoff=True,
    ),
    ConversationScript(
        key="ec_first_timer",
        name="Chen Jia Hui",
        email="jiahui.chen@example.com",
        phone="+6591122334",
        loan_type="new_purchase",
        property_category="ec",
        monthly_incomes=(6500, 6200),
        ages=(31, 33),
        employment_type="employed",
        turns=(
            "We're booking a new EC launch in Tampines. Our combined income is just under S$13k, "
            "is that below the EC ceiling of S$16k?",
            "Is the MSR 30% still applied for ECs bought from the developer? How does that "
            "limit our loan?",
            "Should we go with the progressive payment scheme or is a deferred scheme available?",
        ),
    ),
    ConversationScript(
        key="landed_refinance",
        name="David Ong",
        email="david.ong@example.com",
        phone="+6597788990",
        loan_type="refinance",
        property_category="landed",
        monthly_incomes=(22000,),
        ages=(49,),
        employment_type="employed",
        turns=(
            "I have a semi-D in Serangoon Gardens, outstanding S$1.6m at SORA + 0.8%. Is it worth "
            "switching to a fixed rate now?",
            "What about the clawback? I got a legal subsidy from my bank 2 years ago.",
            "Can you compare 3-year fixed against 1M SORA packages for me?",
        ),
    ),
    ConversationScript(
        key="commercial_shophouse",
        name="Ahmad Faizal",
        email="ahmad.faizal@example.com",
        phone="+6584455667",
        loan_type="commercial",
        property_category="commercial",
        monthly_incomes=(30000,),
        ages=(47,),
        employment_type="self_employed",
        turns=(
            "I'm buying a conservation shophouse in Joo Chiat through my Pte Ltd, about S$5.2m. "
            "What financing is available for companies?",
            "Will the bank look at my company's financials or my personal income? We've been "
            "profitable for 6 years.",
            "Is there ABSD for entities on commercial property, or only residential?",
        ),
    ),
    ConversationScript(
        key="self_employed_first_condo",
        name="Priscilla Chua",
        email="priscilla.chua@example.com",
        phone="+6592233114",
        loan_type="new_purchase",
        property_category="private",
        monthly_incomes=(9000,),
        ages=(34,),
        employment_type="self_employed",
        turns=(
            "I'm a freelance designer, income varies month to month. Can I still get a home loan "
            "for a S$1.3m resale condo?",
            "My last two NOAs are S$96k and S$118k. How do banks average that?",
            "Would adding my brother as co-borrower help? He's salaried.",
        ),
    ),
    ConversationScript(
        key="pr_couple_resale_hdb",
        name="Arjun Menon",
        email="arjun.menon@example.com",
        phone="+6581122009",
        loan_type="new_purchase",
        property_category="hdb",
        monthly_incomes=(8800, 5200),
        ages=(35, 32),
        employment_type="employed",
        turns=(
            "My wife and I are both Singapore PRs. We've been PR for 3 years - can we buy a resale "
            "HDB flat?",
            "Would we get any CPF housing grant as a PR couple? And what's the ABSD for PRs?",
            "If we take a bank loan, what's the maximum LTV for a resale flat?",
        ),
    ),
    ConversationScript(
        key="retiree_tenure",
        name="Wong Kai Xiang",
        email="kaixiang.wong@example.com",
        phone="+6598811223",
        loan_type="refinance",
        property_category="private",
        monthly_incomes=(5500,),
        ages=(61,),
        employment_type="contract",
        turns=(
            "I'm 61 and still working part-time. Will any bank refinance my condo loan of S$350k?",
            "What tenure could I get? My current loan ends when I'm 75.",
            "Can my son be a co-borrower so the tenure is longer?",
        ),
    ),
    ConversationScript(
        key="bridging_loan_timing",
        name="Jasmine Koh",
        email="jasmine.koh@example.com",
        phone="+6590099887",
        loan_type="new_purchase",
        property_category="private",
        monthly_incomes=(14000,),
        ages=(42,),
        employment_type="employed",
        turns=(
            "I've exercised the OTP on a new condo but my current flat's sale completes only in "
            "4 months. I'm short on cash for the 20% downpayment.",
            "How does a bridging loan work and how much interest would I pay for 4 months?",
            "Can it be approved within 2 weeks? The exercise deadline is tight.",
        ),
    ),
    ConversationScript(
        key="foreigner_condo",
        name="Harpreet Singh",
        email="harpreet.singh@example.com",
        phone="+6587766554",
        loan_type="new_purchase",
        property_category="private",
        monthly_incomes=(19000,),
        ages=(39,),
        employment_type="employed",
        turns=(
            "I'm on an Employment Pass, looking at a S$1.8m condo in River Valley. Can I get a "
            "bank loan as a foreigner?",
            "The 60% ABSD is painful. Is there any way around it, e.g. buying with a PR friend?",
            "OK, assuming I still go ahead, which banks lend to EP holders and at what LTV?",
        ),
    ),
    ConversationScript(
        key="rate_shopper_repricing",
        name="Siti Nurhaliza",
        email="siti.nurhaliza@example.com",
        phone="+6596655443",
        loan_type="refinance",
        property_category="ec",
        monthly_incomes=(7000, 6500),
        ages=(37, 38),
        employment_type="employed",
        turns=(
            "My bank offered repricing at 2.65% fixed for 2 years. Is that a good deal or should "
            "I refinance elsewhere?",
            "Refinancing costs legal and valuation fees, right? At what savings does it make "
            "sense to switch?",
            "Outstanding is S$520k with 22 years left. Can you run the numbers?",
        ),
    ),
)


def script_by_key(key: str) -> ConversationScript:
    """The script called `key`; KeyError names the known keys."""
    for script in SCRIPTS:
        if script.key == key:
            return script
    raise KeyError(f"no conversation script {key!r}; known: {[s.key for s in SCRIPTS]}")

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest

from billing_core.domain.calendar import BillingMonth
from billing_core.domain.errors import ActivationInProgress, InvalidRequest, PlanAlreadyActive, PlanNotActive
from billing_core.domain.plan import ACTIVATION_CLAIM_TTL, Plan, PlanState
from billing_core.domain.pricing import PriceBook
from billing_core.domain.workspace import MAX_LICENCE_TERMS, LicenceStatus, Workspace, licence_document
from tests.helpers import PRICE_LIST_2026_01

NOV_20 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


def active_plan(activated_at: datetime = NOV_20) -> Plan:
    return (
        Plan("p1")
        .begin_activation(activated_at)
        .complete_activation(
            now=activated_at, currency="USD", price_list_version="2026-01", customer_ref="c", payment_method_ref="pm"
        )
    )


def test_activation_fee_defaults_to_ten_dollars_and_is_versioned() -> None:
    book = PriceBook(((date(2026, 1, 1), PRICE_LIST_2026_01),))
    prices = book.version("2026-01")
    assert prices.activation_fee("USD").amount_minor == 1000
    assert prices.activation_fee("EUR").currency == "EUR"
    assert len(prices.editions) >= 2
    with pytest.raises(ValueError, match="unknown price list"):
        book.version("1999-01")


def test_unknown_edition_and_currency_name_the_field() -> None:
    with pytest.raises(InvalidRequest) as edition_error:
        PRICE_LIST_2026_01.require_edition("gold")
    assert edition_error.value.problems[0].field == "edition"
    with pytest.raises(InvalidRequest) as currency_error:
        PRICE_LIST_2026_01.require_currency("GBP")
    assert currency_error.value.problems[0].field == "currency"


def test_fee_covers_rest_of_month_and_first_charge_follows_first_full_month() -> None:
    plan = active_plan()
    assert plan.covered_through() == date(2026, 11, 30)
    # November is covered by the fee, December is the first full month, charged on 1 January.
    assert plan.first_charge_date() == date(2027, 1, 1)
    assert plan.next_charge_date(NOV_20) == date(2027, 1, 1)
    assert plan.next_charge_date(datetime(2027, 3, 5, tzinfo=UTC)) == date(2027, 4, 1)


def test_activation_on_the_last_second_of_a_month_still_waits_a_full_month() -> None:
    plan = active_plan(datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC))
    assert plan.covered_through() == date(2026, 12, 31)
    assert plan.first_charge_date() == date(2027, 2, 1)


def test_begin_activation_claims_and_numbers_attempts() -> None:
    claimed = Plan("p1").begin_activation(NOV_20)
    assert claimed.state is PlanState.ACTIVATING
    assert claimed.activation_attempt == 1
    assert claimed.activation_payment_key() == "activation:p1:1"
    # After a decline the next claim is a new attempt, with a new provider key.
    again = claimed.decline_activation().begin_activation(NOV_20)
    assert again.activation_attempt == 2


def test_a_declined_activation_of_an_ended_plan_leaves_it_cancelled_and_in_the_monthly_runs() -> None:
    ended = replace(active_plan(), state=PlanState.CANCELLED, ended_on=date(2027, 2, 28))
    attempt = ended.begin_activation(datetime(2027, 3, 5, tzinfo=UTC))
    # While the attempt runs, the ended life's committed licence terms are still billed.
    assert attempt.has_ended and attempt.ends_on == date(2027, 2, 28) and attempt.visited_by_monthly_runs
    declined = attempt.decline_activation()
    assert (declined.state, declined.ends_on, declined.final_month) == (
        PlanState.CANCELLED,
        date(2027, 2, 28),
        BillingMonth(2027, 2),
    )
    assert declined.visited_by_monthly_runs
    never_active = Plan("p2").begin_activation(NOV_20).decline_activation()
    assert never_active.state is PlanState.INACTIVE and not never_active.has_ended


def test_a_fresh_claim_blocks_others_but_an_abandoned_one_is_resumed_with_the_same_key() -> None:
    claimed = Plan("p1").begin_activation(NOV_20)
    with pytest.raises(ActivationInProgress):
        claimed.begin_activation(NOV_20 + timedelta(seconds=30))
    resumed = claimed.begin_activation(NOV_20 + ACTIVATION_CLAIM_TTL)
    assert resumed.activation_payment_key() == claimed.activation_payment_key()


@pytest.mark.parametrize("state", [PlanState.ACTIVE, PlanState.CANCELLATION_SCHEDULED, PlanState.PAST_DUE])
def test_live_plans_cannot_be_activated_again(state: PlanState) -> None:
    with pytest.raises(PlanAlreadyActive):
        replace(active_plan(), state=state).begin_activation(NOV_20)


def test_workspace_needs_a_live_plan_and_valid_licence() -> None:
    workspace = Workspace("ws1", "p1", "Acme", created_at=NOV_20)
    with pytest.raises(PlanNotActive):
        workspace.put_on_plan(
            plan=Plan("p1"), prices=PRICE_LIST_2026_01, edition="anti-malware", max_devices=5, now=NOV_20
        )
    with pytest.raises(InvalidRequest) as error:
        workspace.put_on_plan(
            plan=active_plan(), prices=PRICE_LIST_2026_01, edition="anti-malware", max_devices=0, now=NOV_20
        )
    assert error.value.problems[0].field == "max_devices"
    on_plan = workspace.put_on_plan(
        plan=active_plan(), prices=PRICE_LIST_2026_01, edition="anti-malware", max_devices=5, now=NOV_20
    )
    changed = on_plan.change_licence(
        plan=active_plan(), prices=PRICE_LIST_2026_01, edition=None, max_devices=9, now=NOV_20
    )
    assert (changed.edition, changed.max_devices) == ("anti-malware", 9)


def test_licence_document_follows_the_plan() -> None:
    workspace = Workspace("ws1", "p1", "Acme", created_at=NOV_20)
    assert licence_document(workspace, active_plan(), NOV_20).status is LicenceStatus.NOT_ON_PLAN
    on_plan = workspace.put_on_plan(
        plan=active_plan(), prices=PRICE_LIST_2026_01, edition="anti-malware", max_devices=5, now=NOV_20
    )
    document = licence_document(on_plan, active_plan(), NOV_20)
    assert (document.status, document.valid_through, document.max_devices) == (
        LicenceStatus.ACTIVE,
        date(2026, 11, 30),
        5,
    )
    ended = licence_document(on_plan, replace(active_plan(), state=PlanState.CANCELLED), NOV_20)
    assert ended.status is LicenceStatus.ENDED and ended.valid_through is None


def test_the_licence_history_keeps_the_state_at_each_month_end_and_stays_bounded() -> None:
    plan, prices = active_plan(), PRICE_LIST_2026_01
    workspace = Workspace("ws1", "p1", "Acme", created_at=NOV_20).put_on_plan(
        plan=plan, prices=prices, edition="anti-malware", max_devices=5, now=NOV_20
    )
    for day, cap in ((21, 6), (30, 7)):  # two changes later in November: only the last one matters
        workspace = workspace.change_licence(
            plan=plan, prices=prices, edition=None, max_devices=cap, now=NOV_20.replace(day=day)
        )
    first_of_december = datetime(2026, 12, 1, 0, 1, tzinfo=UTC)
    workspace = workspace.change_licence(
        plan=plan, prices=prices, edition="business-security", max_devices=1, now=first_of_december
    )
    assert [term.max_devices for term in workspace.licence_history] == [7, 1]
    assert workspace.licence_at_end_of(BillingMonth(2026, 11)) == ("anti-malware", 7)
    assert workspace.licence_at_end_of(BillingMonth(2026, 12)) == ("business-security", 1)
    assert workspace.licence_at_end_of(BillingMonth(2026, 10)) == ("anti-malware", 7)  # before: the oldest known
    # A workspace stored before the history existed starts it with its licence so far.
    legacy = replace(workspace, licence_history=(), edition="anti-malware", max_devices=3)
    changed = legacy.change_licence(plan=plan, prices=prices, edition=None, max_devices=4, now=first_of_december)
    assert changed.licence_at_end_of(BillingMonth(2026, 11)) == ("anti-malware", 3)
    # One term per month at most, and never more than MAX_LICENCE_TERMS.
    for months in range(1, 50):
        moment = datetime(2027 + months // 12, months % 12 + 1, 2, tzinfo=UTC)
        workspace = workspace.change_licence(plan=plan, prices=prices, edition=None, max_devices=months, now=moment)
    assert len(workspace.licence_history) == MAX_LICENCE_TERMS
    assert workspace.licence_history[-1].max_devices == 49

"""Activation with a card that needs 3-D Secure (SCA), against the sandbox provider and in-memory fakes.

The sandbox's 3-D Secure cards say how their customer answers the challenge (README, Payment providers):
``pm_card_threeDSecure2Required`` completes it, ``pm_card_threeDSecure2AuthenticationFails`` fails it,
``pm_card_authenticationRequired`` never answers."""

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from billing_core.adapters.payments.sandbox import SandboxPaymentProvider
from billing_core.domain.errors import (
    AuthenticationPending,
    ConcurrentModification,
    IdempotencyKeyReused,
    PaymentDeclined,
    PlanAlreadyActive,
)
from billing_core.domain.identity import PartnerIdentity, Role
from billing_core.domain.money import Money
from billing_core.domain.payments import (
    ChargeOutcome,
    ChargeRequest,
    ChargeStatus,
    PaymentProviderUnavailable,
    SavedPaymentMethod,
)
from billing_core.domain.plan import AUTHENTICATION_WINDOW, PendingAuthentication, Plan, PlanState
from billing_core.schemas import ActivatePlanRequest
from billing_core.services.activation import ActivationService
from tests.fakes import (
    FixedClock,
    InMemoryBillingStore,
    InMemoryIdempotencyGuard,
    InMemoryInvoiceStore,
    InMemoryUsageStore,
    RecordingPaymentProvider,
)
from tests.helpers import PRICE_LIST_2026_01

OWNER = PartnerIdentity("p1", Role.OWNER, "owner-1", email="owner@p1.example")
VISA = ActivatePlanRequest(payment_method="pm_card_visa")
THREE_DS = ActivatePlanRequest(payment_method="pm_card_threeDSecure2Required", currency="EUR")
THREE_DS_FAILS = ActivatePlanRequest(payment_method="pm_card_threeDSecure2AuthenticationFails")
NEVER_AUTHENTICATED = ActivatePlanRequest(payment_method="pm_card_authenticationRequired")
NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


@dataclass
class Setup:
    service: ActivationService
    store: InMemoryBillingStore
    provider: RecordingPaymentProvider
    guard: InMemoryIdempotencyGuard
    clock: FixedClock = field(default_factory=lambda: FixedClock(NOW))


def build(provider: RecordingPaymentProvider | None = None) -> Setup:
    store, guard, clock = InMemoryBillingStore(), InMemoryIdempotencyGuard(), FixedClock(NOW)
    provider = provider or RecordingPaymentProvider()
    service = ActivationService(
        plans=store,
        workspaces=store,
        payments=provider,
        usage=InMemoryUsageStore(),
        clock=clock,
        prices=PRICE_LIST_2026_01,
        idempotency=guard,
        invoices=InMemoryInvoiceStore(),
    )
    return Setup(service, store, provider, guard, clock)


@pytest.fixture
def setup() -> Setup:
    return build()


def audit_types(setup: Setup) -> list[str]:
    return [event.event_type for event in setup.store.audit]


# -- the flow --------------------------------------------------------------------------------------
def test_a_card_needing_authentication_answers_requires_action_and_pays_nothing_yet(setup: Setup) -> None:
    outcome = setup.service.activate_monthly_billing(OWNER, "k1", THREE_DS)

    assert outcome.status == "requires_action"
    assert outcome.payment_id is not None and outcome.client_secret is not None
    assert outcome.client_secret.startswith(f"{outcome.payment_id}_secret_")
    assert outcome.authentication_expires_at == NOW + AUTHENTICATION_WINDOW
    assert outcome.activation_fee is not None
    assert (outcome.activation_fee.amount_minor, outcome.activation_fee.currency) == (1000, "EUR")
    plan = setup.store.plans["p1"]
    assert plan.state is PlanState.ACTIVATING and plan.activation_started_at is None
    assert plan.pending_authentication is not None
    assert plan.pending_authentication.payment_id == outcome.payment_id
    assert setup.store.payments == {}
    assert audit_types(setup) == ["activation_started", "authentication_requested"]
    # The answer is not the final one: nothing is stored under the key (the client secret neither).
    assert setup.guard.records == {}


def test_the_same_request_again_completes_the_activation_and_the_fee_is_charged_once(setup: Setup) -> None:
    waiting = setup.service.activate_monthly_billing(OWNER, "k1", THREE_DS)
    setup.clock.advance(timedelta(minutes=2))  # the customer authenticates in the browser meanwhile

    activated = setup.service.activate_monthly_billing(OWNER, "k1", THREE_DS)

    assert activated.status == "activated"
    assert activated.payment_id == waiting.payment_id
    assert activated.client_secret is None
    plan = setup.store.plans["p1"]
    assert plan.state is PlanState.ACTIVE and plan.pending_authentication is None
    assert (plan.currency, plan.payment_method_ref, plan.activated_at) == (
        "EUR",
        "pm_card_threeDSecure2Required",
        NOW + timedelta(minutes=2),
    )
    assert plan.billing_email == "owner@p1.example"
    [payment] = setup.store.payments.values()
    assert (payment.provider_payment_id, payment.amount, payment.attempt) == (waiting.payment_id, Money(1000, "EUR"), 1)
    assert audit_types(setup) == ["activation_started", "authentication_requested", "plan_activated"]
    # From now on the stored answer is replayed: no lookup, no charge.
    lookups = setup.provider.lookups
    assert setup.service.activate_monthly_billing(OWNER, "k1", THREE_DS) == activated
    assert setup.provider.lookups == lookups
    assert setup.provider.calls == 1
    assert setup.provider.successful_charges == 1
    with pytest.raises(PlanAlreadyActive):
        setup.service.activate_monthly_billing(OWNER, "k2", VISA)


def test_a_failed_authentication_is_declined_and_leaves_the_plan_inactive(setup: Setup) -> None:
    assert setup.service.activate_monthly_billing(OWNER, "k1", THREE_DS_FAILS).status == "requires_action"

    declined = setup.service.activate_monthly_billing(OWNER, "k1", THREE_DS_FAILS)

    assert (declined.status, declined.decline_code) == ("declined", "authentication_failed")
    assert setup.store.plans["p1"].state is PlanState.INACTIVE
    assert setup.store.plans["p1"].pending_authentication is None
    assert setup.store.payments == {}
    assert setup.store.audit[-1].details["decline_code"] == "authentication_failed"
    # The decline is final and replayed; a new attempt with another card activates.
    lookups = setup.provider.lookups
    assert setup.service.activate_monthly_billing(OWNER, "k1", THREE_DS_FAILS) == declined
    assert setup.provider.lookups == lookups
    assert setup.service.activate_monthly_billing(OWNER, "k2", VISA).status == "activated"
    assert setup.store.plans["p1"].activation_attempt == 2
    assert setup.provider.successful_charges == 1


def test_an_authentication_never_completed_waits_then_is_abandoned_after_the_window(setup: Setup) -> None:
    first = setup.service.activate_monthly_billing(OWNER, "k1", NEVER_AUTHENTICATED)
    setup.clock.advance(AUTHENTICATION_WINDOW - timedelta(seconds=1))
    audit_before = list(setup.store.audit)

    again = setup.service.activate_monthly_billing(OWNER, "k1", NEVER_AUTHENTICATED)

    assert again == first  # same payment, same client secret and deadline
    assert setup.store.audit == audit_before  # looking it up writes nothing
    setup.clock.advance(timedelta(seconds=1))

    abandoned = setup.service.activate_monthly_billing(OWNER, "k1", NEVER_AUTHENTICATED)

    assert (abandoned.status, abandoned.decline_code) == ("declined", "authentication_abandoned")
    assert setup.provider.cancelled == [first.payment_id]
    assert setup.store.plans["p1"].state is PlanState.INACTIVE
    assert setup.store.payments == {}
    assert setup.provider.successful_charges == 0


def test_the_same_key_with_another_body_is_refused_while_the_payment_waits(setup: Setup) -> None:
    setup.service.activate_monthly_billing(OWNER, "k1", NEVER_AUTHENTICATED)

    with pytest.raises(IdempotencyKeyReused):
        setup.service.activate_monthly_billing(OWNER, "k1", VISA)

    assert setup.store.plans["p1"].pending_authentication is not None
    assert setup.provider.calls == 1


def test_another_request_waits_for_the_pending_authentication_then_takes_over_after_the_window(
    setup: Setup,
) -> None:
    first = setup.service.activate_monthly_billing(OWNER, "k1", NEVER_AUTHENTICATED)

    with pytest.raises(AuthenticationPending) as pending:
        setup.service.activate_monthly_billing(OWNER, "k2", VISA)
    assert str(first.payment_id) in pending.value.message
    assert setup.provider.calls == 1

    setup.clock.advance(AUTHENTICATION_WINDOW)
    activated = setup.service.activate_monthly_billing(OWNER, "k2", VISA)

    assert activated.status == "activated"
    assert setup.provider.cancelled == [first.payment_id]
    assert setup.store.plans["p1"].activation_attempt == 2
    assert audit_types(setup) == [
        "activation_started",
        "authentication_requested",
        "activation_declined",
        "activation_started",
        "plan_activated",
    ]
    assert [p.attempt for p in setup.store.payments.values()] == [2]
    assert setup.provider.successful_charges == 1


def test_another_request_after_a_failed_authentication_declines_it_and_goes_on(setup: Setup) -> None:
    setup.service.activate_monthly_billing(OWNER, "k1", THREE_DS_FAILS)

    assert setup.service.activate_monthly_billing(OWNER, "k2", VISA).status == "activated"

    assert setup.provider.cancelled == []
    assert setup.store.audit[2].details["decline_code"] == "authentication_failed"


def test_another_request_finds_the_earlier_payment_authenticated_and_charges_nothing(setup: Setup) -> None:
    waiting = setup.service.activate_monthly_billing(OWNER, "k1", THREE_DS)

    with pytest.raises(PlanAlreadyActive) as already:
        setup.service.activate_monthly_billing(OWNER, "k2", VISA)

    assert str(waiting.payment_id) in already.value.message
    plan = setup.store.plans["p1"]
    assert (plan.state, plan.payment_method_ref) == (PlanState.ACTIVE, "pm_card_threeDSecure2Required")
    assert [p.provider_payment_id for p in setup.store.payments.values()] == [waiting.payment_id]
    assert setup.provider.calls == 1  # the second card was never charged


@dataclass
class FlakyLookups(RecordingPaymentProvider):
    outages: int = 1

    def payment_status(self, payment_id: str) -> ChargeOutcome:
        if self.outages > 0:
            self.outages -= 1
            raise PaymentProviderUnavailable("timeout")
        return super().payment_status(payment_id)


def test_a_provider_outage_while_looking_up_changes_nothing_and_the_retry_completes() -> None:
    setup = build(FlakyLookups())
    setup.service.activate_monthly_billing(OWNER, "k1", THREE_DS)
    plan_before = setup.store.plans["p1"]

    with pytest.raises(PaymentProviderUnavailable):
        setup.service.activate_monthly_billing(OWNER, "k1", THREE_DS)

    assert setup.store.plans["p1"] == plan_before
    assert setup.service.activate_monthly_billing(OWNER, "k1", THREE_DS).status == "activated"
    assert len(setup.store.payments) == 1


@dataclass
class RacingLookups(RecordingPaymentProvider):
    """While one request looks the payment up, another request with the same key settles it first."""

    racer: ActivationService | None = None

    def payment_status(self, payment_id: str) -> ChargeOutcome:
        racer, self.racer = self.racer, None
        if racer is not None:
            assert racer.activate_monthly_billing(OWNER, "k1", THREE_DS).status == "activated"
        return super().payment_status(payment_id)


def test_two_requests_settling_the_same_payment_record_it_once() -> None:
    provider = RacingLookups()
    setup = build(provider)
    setup.service.activate_monthly_billing(OWNER, "k1", THREE_DS)
    provider.racer = setup.service

    with pytest.raises(ConcurrentModification):
        setup.service.activate_monthly_billing(OWNER, "k1", THREE_DS)

    assert setup.store.plans["p1"].state is PlanState.ACTIVE
    assert len(setup.store.payments) == 1
    assert audit_types(setup).count("plan_activated") == 1


def test_without_a_provider_that_can_look_payments_up_authentication_is_a_decline() -> None:
    @dataclass
    class ChargesOnly:
        name: str = "sandbox"
        inner: SandboxPaymentProvider = field(default_factory=SandboxPaymentProvider)

        def create_customer(self, *, partner_id: str) -> str:
            return self.inner.create_customer(partner_id=partner_id)

        def save_payment_method(
            self, *, partner_id: str, payment_method: str, customer_ref: str | None = None
        ) -> SavedPaymentMethod:
            return self.inner.save_payment_method(
                partner_id=partner_id, payment_method=payment_method, customer_ref=customer_ref
            )

        def charge(self, request: ChargeRequest) -> ChargeOutcome:
            return self.inner.charge(request)

        def find_payment(self, request: ChargeRequest) -> ChargeOutcome | None:
            return self.inner.find_payment(request)

    setup = build()
    setup.service.payments = ChargesOnly()

    outcome = setup.service.activate_monthly_billing(OWNER, "k1", THREE_DS)

    assert (outcome.status, outcome.decline_code) == ("declined", "authentication_required")
    assert setup.store.plans["p1"].state is PlanState.INACTIVE


# -- the plan's rules ------------------------------------------------------------------------------
def pending_authentication() -> PendingAuthentication:
    return PendingAuthentication(
        payment_id="pi_1",
        amount=Money(1000, "EUR"),
        price_list_version="2026-01",
        customer_ref="cus_1",
        payment_method_ref="pm_1",
        billing_email=None,
        request_key="k1",
        request_fingerprint="f",
        requested_at=NOW,
    )


def test_a_plan_waiting_for_authentication_is_never_charged_again_by_a_resumed_claim() -> None:
    claimed = Plan("p1").begin_activation(NOW)
    waiting = claimed.await_authentication(pending_authentication())

    assert (waiting.state, waiting.activation_started_at) == (PlanState.ACTIVATING, None)
    with pytest.raises(AuthenticationPending):
        waiting.begin_activation(NOW + timedelta(hours=1))
    assert waiting.decline_activation().pending_authentication is None
    active = waiting.complete_activation(
        now=NOW, currency="EUR", price_list_version="2026-01", customer_ref="cus_1", payment_method_ref="pm_1"
    )
    assert active.pending_authentication is None


def test_the_pending_authentication_round_trips_and_expires_after_the_window() -> None:
    pending = pending_authentication()

    assert PendingAuthentication.from_dict(pending.to_dict()) == pending
    assert not pending.expired_at(NOW + AUTHENTICATION_WINDOW - timedelta(microseconds=1))
    assert pending.expired_at(NOW + AUTHENTICATION_WINDOW)


# -- the sandbox's 3-D Secure cards ----------------------------------------------------------------
def sandbox_request(payment_method: str, *, off_session: bool) -> ChargeRequest:
    return ChargeRequest(
        partner_id="p1",
        saved=SavedPaymentMethod("cus_sbx_1", payment_method),
        amount=Money(1000, "USD"),
        idempotency_key="activation:p1:1" if not off_session else "month:p1:2026-12:attempt-1",
        description="test",
        off_session=off_session,
    )


@pytest.mark.parametrize(
    ("payment_method", "after_authentication", "after_cancelling"),
    [
        ("pm_card_threeDSecure2Required", ChargeStatus.SUCCEEDED, ChargeStatus.SUCCEEDED),
        ("pm_card_threeDSecure2AuthenticationFails", ChargeStatus.DECLINED, ChargeStatus.DECLINED),
        ("pm_card_authenticationRequired", ChargeStatus.REQUIRES_ACTION, ChargeStatus.DECLINED),
    ],
)
def test_sandbox_3ds_cards_ask_for_authentication_and_answer_deterministically(
    payment_method: str, after_authentication: ChargeStatus, after_cancelling: ChargeStatus
) -> None:
    sandbox = SandboxPaymentProvider()

    asked = sandbox.charge(sandbox_request(payment_method, off_session=False))

    assert asked == sandbox.charge(sandbox_request(payment_method, off_session=False))  # same key, same payment
    assert (asked.status, asked.decline_code) == (ChargeStatus.REQUIRES_ACTION, "authentication_required")
    assert asked.provider_payment_id is not None and asked.client_secret is not None
    assert asked.client_secret.startswith(asked.provider_payment_id + "_secret_")
    assert sandbox.payment_status(asked.provider_payment_id).status is after_authentication
    assert sandbox.cancel_payment(asked.provider_payment_id).status is after_cancelling


def test_sandbox_cards_set_up_by_an_authenticated_activation_need_none_off_session() -> None:
    sandbox = SandboxPaymentProvider()

    assert sandbox.charge(sandbox_request("pm_card_threeDSecure2Required", off_session=True)).succeeded
    # The "always authenticate" card keeps asking, off-session too (the monthly charge fails).
    monthly = sandbox.charge(sandbox_request("pm_card_authenticationRequired", off_session=True))
    assert monthly.status is ChargeStatus.REQUIRES_ACTION
    assert sandbox.payment_status("pi_sbx_unknown").decline_code == "payment_not_found"


def test_the_plan_status_shows_the_payment_waiting_for_authentication_until_it_completes(setup: Setup) -> None:
    waiting = setup.service.activate_monthly_billing(OWNER, "k1", THREE_DS)
    status = setup.service.plan_status(OWNER)
    assert status.awaiting_authentication is not None
    assert (status.awaiting_authentication.payment_id, status.awaiting_authentication.amount.amount_minor) == (
        waiting.payment_id,
        1000,
    )
    assert status.awaiting_authentication.expires_at == NOW + AUTHENTICATION_WINDOW
    setup.clock.advance(timedelta(minutes=2))
    setup.service.activate_monthly_billing(OWNER, "k1", THREE_DS)
    assert setup.service.plan_status(OWNER).awaiting_authentication is None


def test_sandbox_cards_that_decline_monthly_charges_pay_the_activation() -> None:
    clock = FixedClock(datetime(2026, 11, 1, 0, 5, tzinfo=UTC))
    sandbox = SandboxPaymentProvider(clock)

    assert sandbox.charge(sandbox_request("pm_card_offSessionDeclined", off_session=False)).succeeded
    declined = sandbox.charge(sandbox_request("pm_card_offSessionDeclined", off_session=True))
    assert (declined.status, declined.decline_code) == (ChargeStatus.DECLINED, "card_declined")

    until = "pm_card_declinedUntil_2026-11-05"
    assert sandbox.save_payment_method(partner_id="p1", payment_method=until).payment_method_ref == until
    assert sandbox.charge(sandbox_request(until, off_session=False)).succeeded
    assert sandbox.charge(sandbox_request(until, off_session=True)).decline_code == "insufficient_funds"
    clock.current = datetime(2026, 11, 5, 0, 5, tzinfo=UTC)  # the retry on the 5th succeeds
    assert sandbox.charge(sandbox_request(until, off_session=True)).succeeded
    with pytest.raises(PaymentDeclined):
        sandbox.save_payment_method(partner_id="p1", payment_method="pm_card_declinedUntil_someday")

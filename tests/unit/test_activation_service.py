"""Activation use case against in-memory fakes (no sockets)."""

from datetime import UTC, datetime, timedelta

import pytest

from billing_core.domain.audit import AuditEvent
from billing_core.domain.errors import ActivationInProgress, IdempotencyKeyReused, PlanAlreadyActive
from billing_core.domain.identity import PartnerIdentity, Role
from billing_core.domain.payments import PaymentProviderUnavailable
from billing_core.domain.plan import PlanState
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

OWNER = PartnerIdentity("p1", Role.OWNER, "owner-1")
VISA = ActivatePlanRequest(payment_method="pm_card_visa")


@pytest.fixture
def store() -> InMemoryBillingStore:
    return InMemoryBillingStore()


@pytest.fixture
def provider() -> RecordingPaymentProvider:
    return RecordingPaymentProvider()


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(datetime(2026, 11, 20, 9, 0, tzinfo=UTC))


@pytest.fixture
def service(store: InMemoryBillingStore, provider: RecordingPaymentProvider, clock: FixedClock) -> ActivationService:
    return ActivationService(
        plans=store,
        workspaces=store,
        payments=provider,
        usage=InMemoryUsageStore(),
        clock=clock,
        prices=PRICE_LIST_2026_01,
        idempotency=InMemoryIdempotencyGuard(),
        invoices=InMemoryInvoiceStore(),
    )


def test_activation_charges_the_fee_once_and_audits(
    service: ActivationService, store: InMemoryBillingStore, provider: RecordingPaymentProvider
) -> None:
    outcome = service.activate_monthly_billing(OWNER, "key-1", VISA)
    assert outcome.status == "activated"
    assert outcome.activation_fee is not None and outcome.activation_fee.amount_minor == 1000
    assert store.plans["p1"].state is PlanState.ACTIVE
    assert provider.successful_charges == 1
    assert [p.amount.amount_minor for p in store.payments.values()] == [1000]
    assert [e.event_type for e in store.audit] == ["activation_started", "plan_activated"]


def test_same_key_replays_and_other_body_is_refused(
    service: ActivationService, provider: RecordingPaymentProvider
) -> None:
    first = service.activate_monthly_billing(OWNER, "key-1", VISA)
    assert service.activate_monthly_billing(OWNER, "key-1", VISA) == first
    assert provider.calls == 1
    with pytest.raises(IdempotencyKeyReused):
        service.activate_monthly_billing(OWNER, "key-1", ActivatePlanRequest(payment_method="pm_card_mastercard"))
    with pytest.raises(PlanAlreadyActive):
        service.activate_monthly_billing(OWNER, "key-2", VISA)


def test_decline_leaves_plan_inactive_without_payment(
    service: ActivationService, store: InMemoryBillingStore, provider: RecordingPaymentProvider
) -> None:
    outcome = service.activate_monthly_billing(OWNER, "k", ActivatePlanRequest(payment_method="pm_card_chargeDeclined"))
    assert (outcome.status, outcome.decline_code) == ("declined", "card_declined")
    assert store.plans["p1"].state is PlanState.INACTIVE
    assert store.payments == {}
    assert store.audit[-1].event_type == "activation_declined"
    # A decline at charge time (card saved fine) is recorded the same way.
    outcome = service.activate_monthly_billing(
        OWNER, "k2", ActivatePlanRequest(payment_method="pm_card_chargeCustomerFail")
    )
    assert outcome.status == "declined"
    assert provider.successful_charges == 0
    # A later good card activates with a new attempt number.
    assert service.activate_monthly_billing(OWNER, "k3", VISA).status == "activated"
    assert store.plans["p1"].activation_attempt == 3


def test_provider_timeout_after_accepting_is_reconciled_by_the_retry(
    service: ActivationService, store: InMemoryBillingStore, provider: RecordingPaymentProvider
) -> None:
    provider.fail_after_accepting = 1
    with pytest.raises(PaymentProviderUnavailable):
        service.activate_monthly_billing(OWNER, "key-1", VISA)
    assert store.plans["p1"].state is PlanState.ACTIVATING
    # The client retries (same key; the failed run stored no idempotency record): same provider key.
    assert service.activate_monthly_billing(OWNER, "key-1", VISA).status == "activated"
    # The provider replays no key: the retry finds the payment by its reference instead of charging again.
    assert provider.calls == 1 and provider.found == 1
    assert provider.successful_charges == 1
    assert len(store.payments) == 1


def test_a_resumed_attempt_whose_fee_was_paid_activates_even_if_the_new_card_is_refused(
    service: ActivationService, store: InMemoryBillingStore, provider: RecordingPaymentProvider
) -> None:
    """The first request's fee was charged and its answer lost; the retry brings a card refused when saved.
    The payment is looked up before the card is attached: the plan activates on the fee already paid (before,
    the refusal declined the attempt and the next activation charged the fee a second time)."""
    provider.fail_after_accepting = 1
    with pytest.raises(PaymentProviderUnavailable):
        service.activate_monthly_billing(OWNER, "key-1", VISA)
    refused_card = ActivatePlanRequest(payment_method="pm_card_chargeDeclined")
    assert service.activate_monthly_billing(OWNER, "key-2", refused_card).status == "activated"
    assert provider.successful_charges == 1 and len(store.payments) == 1
    assert store.plans["p1"].state is PlanState.ACTIVE


def test_a_running_activation_blocks_a_second_one(
    service: ActivationService, store: InMemoryBillingStore, clock: FixedClock
) -> None:
    claim = store.load_plan("p1").begin_activation(clock.now())
    store.save_plan(claim, audit=AuditEvent("p1", "activation_started", clock.now(), "other-request"))
    with pytest.raises(ActivationInProgress):
        service.activate_monthly_billing(OWNER, "key-2", VISA)
    clock.advance(timedelta(minutes=6))  # the first Lambda died: its claim is resumed
    assert service.activate_monthly_billing(OWNER, "key-2", VISA).status == "activated"

"""Exactly-once guarantees of activation on DynamoDB Local: concurrent requests, stale writes, crashes."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from billing_core.adapters.dynamodb.models import AuditItem, PaymentItem, partner_pk
from billing_core.adapters.dynamodb.repositories import DynamoBillingStore
from billing_core.domain.audit import AuditEvent
from billing_core.domain.errors import BillingError, ConcurrentModification
from billing_core.domain.identity import PartnerIdentity, Role
from billing_core.domain.payments import PaymentProviderUnavailable
from billing_core.domain.plan import PlanState
from billing_core.schemas import ActivatePlanRequest
from billing_core.settings import BillingSettings
from billing_core.wiring import Services
from tests.fakes import RecordingPaymentProvider
from tests.helpers import new_partner_id

pytestmark = pytest.mark.integration
VISA = ActivatePlanRequest(payment_method="pm_card_visa")


def owner(partner_id: str) -> PartnerIdentity:
    return PartnerIdentity(partner_id, Role.OWNER, "owner")


def test_concurrent_activations_with_different_keys_charge_once(settings: BillingSettings) -> None:
    provider = RecordingPaymentProvider()
    services = Services(settings, payments=provider)
    partner = new_partner_id()

    def attempt(number: int) -> str:
        try:
            return services.activation.activate_monthly_billing(owner(partner), f"key-{number}", VISA).status
        except BillingError as error:
            return error.code

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(attempt, range(8)))
    assert results.count("activated") == 1, results
    assert set(results) - {"activated"} <= {"activation_in_progress", "concurrent_modification", "plan_already_active"}
    assert provider.successful_charges == 1
    assert len(list(PaymentItem.query(partner_pk(partner), PaymentItem.sk.startswith("PAYMENT#")))) == 1


def test_a_stale_write_is_refused_and_writes_nothing(settings: BillingSettings) -> None:
    store = DynamoBillingStore(settings.aws_region)
    partner = new_partner_id()
    now = datetime.now(UTC)
    claimed = store.save_plan(
        store.load_plan(partner).begin_activation(now), audit=AuditEvent(partner, "activation_started", now, "a")
    )
    later = now + timedelta(seconds=1)  # audit events sort by time
    store.save_plan(claimed.decline_activation(), audit=AuditEvent(partner, "activation_declined", later, "a"))
    with pytest.raises(ConcurrentModification):
        store.save_plan(
            replace(claimed, state=PlanState.ACTIVE), audit=AuditEvent(partner, "plan_activated", later, "b")
        )
    assert store.load_plan(partner).state is PlanState.INACTIVE
    events = [item.event_type for item in AuditItem.query(partner_pk(partner), AuditItem.sk.startswith("AUDIT#"))]
    assert events == ["activation_started", "activation_declined"]


def test_provider_timeout_after_charging_is_reconciled_by_retrying_the_same_key(settings: BillingSettings) -> None:
    provider = RecordingPaymentProvider(fail_after_accepting=1)
    services = Services(settings, payments=provider)
    partner = new_partner_id()
    with pytest.raises(PaymentProviderUnavailable):
        services.activation.activate_monthly_billing(owner(partner), "key-1", VISA)
    outcome = services.activation.activate_monthly_billing(owner(partner), "key-1", VISA)
    assert outcome.status == "activated"
    # The provider replays no key: the retry found the payment by its reference instead of charging again.
    assert provider.calls == 1 and provider.found == 1
    assert provider.successful_charges == 1
    assert len(list(PaymentItem.query(partner_pk(partner), PaymentItem.sk.startswith("PAYMENT#")))) == 1

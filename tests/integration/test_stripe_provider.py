"""StripePaymentProvider against localstripe, started on a free loopback port for this module."""

from __future__ import annotations

import http.server
import json
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import stripe

from billing_core.adapters.dynamodb.models import PaymentItem, partner_pk
from billing_core.adapters.payments.stripe_provider import StripePaymentProvider
from billing_core.domain.audit import AuditEvent
from billing_core.domain.calendar import BillingMonth
from billing_core.domain.errors import ConcurrentModification, PaymentAttemptInProgress, PaymentDeclined
from billing_core.domain.identity import PartnerIdentity, Role
from billing_core.domain.invoicing import InvoiceStatus
from billing_core.domain.money import Money
from billing_core.domain.payments import (
    ChargeOutcome,
    ChargeRequest,
    ChargeStatus,
    PaymentProviderUnavailable,
    SavedPaymentMethod,
)
from billing_core.domain.plan import AUTHENTICATION_WINDOW, PlanState
from billing_core.schemas import ActivatePlanRequest, CreateWorkspaceRequest
from billing_core.services.metering import InboundMessage
from billing_core.settings import BillingSettings
from billing_core.wiring import Services
from infra.processes import free_port
from tests.fakes import FixedClock, WorkerCrash
from tests.helpers import new_partner_id
from tests.integration.localstripe_server import TEST_API_KEY, running_localstripe

pytestmark = pytest.mark.integration

# Test cards localstripe emulates.
CARD_OK = "4242424242424242"
CARD_DECLINED_AT_ATTACH = "4000000000000002"
CARD_DECLINED_AT_CHARGE = "4000000000000341"
CARD_REQUIRES_AUTHENTICATION = "4000002500003155"


@pytest.fixture(scope="module")
def api_base() -> Iterator[str]:
    with running_localstripe() as base_url:
        yield base_url


@pytest.fixture(scope="module")
def stripe_client(api_base: str) -> stripe.StripeClient:
    """Plays the browser (creates PaymentMethods) and inspects what the adapter left in Stripe."""
    return stripe.StripeClient(TEST_API_KEY, base_addresses={"api": api_base}, max_network_retries=0)


@pytest.fixture
def provider(api_base: str) -> StripePaymentProvider:
    return StripePaymentProvider(TEST_API_KEY, api_base=api_base, setup_future_usage=False, max_network_retries=0)


def _card(client: stripe.StripeClient, number: str) -> str:
    method = client.v1.payment_methods.create(
        params={"type": "card", "card": {"number": number, "exp_month": 12, "exp_year": 2030, "cvc": "123"}}
    )
    return method.id


def _request(
    saved: SavedPaymentMethod, key: str, *, off_session: bool = False, amount_minor: int = 4900
) -> ChargeRequest:
    return ChargeRequest(
        partner_id="partner-1",
        saved=saved,
        amount=Money(amount_minor, "EUR"),
        idempotency_key=key,
        description="Plan activation",
        off_session=off_session,
        save_for_future_use=not off_session,
    )


def test_saving_a_card_attaches_it_to_a_new_customer(
    provider: StripePaymentProvider, stripe_client: stripe.StripeClient
) -> None:
    payment_method = _card(stripe_client, CARD_OK)

    saved = provider.save_payment_method(partner_id="partner-1", payment_method=payment_method)

    assert saved.customer_ref.startswith("cus_")
    assert saved.payment_method_ref == payment_method
    assert stripe_client.v1.payment_methods.retrieve(payment_method).customer == saved.customer_ref
    metadata = stripe_client.v1.customers.retrieve(saved.customer_ref).metadata
    assert metadata is not None
    assert metadata.to_dict() == {"partner_id": "partner-1"}


def test_charge_with_a_working_card_succeeds(
    provider: StripePaymentProvider, stripe_client: stripe.StripeClient
) -> None:
    saved = provider.save_payment_method(partner_id="partner-1", payment_method=_card(stripe_client, CARD_OK))

    outcome = provider.charge(_request(saved, "partner-1:activation:1", amount_minor=4900))

    assert outcome.status is ChargeStatus.SUCCEEDED
    assert outcome.succeeded
    assert outcome.provider_payment_id is not None
    assert outcome.provider_payment_id.startswith("pi_")
    assert outcome.decline_code is None
    intent = stripe_client.v1.payment_intents.retrieve(outcome.provider_payment_id)
    assert (intent.status, intent.amount, intent.currency) == ("succeeded", 4900, "eur")
    assert (intent.customer, intent.payment_method) == (saved.customer_ref, saved.payment_method_ref)
    assert intent.metadata.to_dict() == {
        "partner_id": "partner-1",
        "idempotency_key": "partner-1:activation:1",
        "description": "Plan activation",
    }


def test_card_declined_at_attach_raises_payment_declined(
    provider: StripePaymentProvider, stripe_client: stripe.StripeClient
) -> None:
    payment_method = _card(stripe_client, CARD_DECLINED_AT_ATTACH)

    with pytest.raises(PaymentDeclined) as raised:
        provider.save_payment_method(partner_id="partner-1", payment_method=payment_method)

    assert raised.value.decline_code == "card_declined"
    assert raised.value.message == "Your card was declined."
    assert stripe_client.v1.payment_methods.retrieve(payment_method).customer is None


def test_unknown_payment_method_raises_payment_declined(provider: StripePaymentProvider) -> None:
    with pytest.raises(PaymentDeclined) as raised:
        provider.save_payment_method(partner_id="partner-1", payment_method="pm_doesnotexist")

    assert raised.value.decline_code == "payment_method_invalid"


def test_card_declined_at_charge_returns_declined(
    provider: StripePaymentProvider, stripe_client: stripe.StripeClient
) -> None:
    saved = provider.save_payment_method(
        partner_id="partner-1", payment_method=_card(stripe_client, CARD_DECLINED_AT_CHARGE)
    )

    outcome = provider.charge(_request(saved, "partner-1:activation:declined"))

    assert outcome.status is ChargeStatus.DECLINED
    assert not outcome.succeeded
    assert outcome.decline_code == "card_declined"
    assert outcome.message == "Your card was declined."
    # The PaymentIntent the declined confirmation created is found through the failed charge.
    assert outcome.provider_payment_id is not None
    assert outcome.provider_payment_id.startswith("pi_")
    intent = stripe_client.v1.payment_intents.retrieve(outcome.provider_payment_id)
    assert intent.status == "requires_payment_method"
    assert intent.customer == saved.customer_ref


def test_card_requiring_authentication_returns_requires_action(
    provider: StripePaymentProvider, stripe_client: stripe.StripeClient
) -> None:
    saved = provider.save_payment_method(
        partner_id="partner-1", payment_method=_card(stripe_client, CARD_REQUIRES_AUTHENTICATION)
    )

    outcome = provider.charge(_request(saved, "partner-1:activation:3ds"))

    assert outcome.status is ChargeStatus.REQUIRES_ACTION
    assert not outcome.succeeded
    assert outcome.decline_code == "authentication_required"
    assert outcome.provider_payment_id is not None
    intent = stripe_client.v1.payment_intents.retrieve(outcome.provider_payment_id)
    assert intent.status == "requires_action"
    # What the customer's browser needs for Stripe.js handleNextAction.
    assert outcome.client_secret == intent.client_secret
    assert outcome.client_secret is not None and outcome.client_secret.startswith(f"{intent.id}_secret_")
    assert provider.payment_status(intent.id) == outcome


def _authenticate(api_base: str, payment_id: str, client_secret: str, *, success: bool) -> None:
    """Play the customer's browser: what localstripe's Stripe.js ``confirmCardPayment`` does when the customer
    completes (or fails) the 3-D Secure challenge."""
    request = urllib.request.Request(  # noqa: S310 - the local localstripe address
        f"{api_base}/v1/payment_intents/{payment_id}/_authenticate?success={str(success).lower()}",
        data=urllib.parse.urlencode({"client_secret": client_secret}).encode(),
        headers={"Authorization": f"Bearer {TEST_API_KEY}"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
        assert response.status == 200


def _awaiting_authentication(
    provider: StripePaymentProvider, stripe_client: stripe.StripeClient, key: str
) -> tuple[str, str]:
    saved = provider.save_payment_method(
        partner_id="partner-1", payment_method=_card(stripe_client, CARD_REQUIRES_AUTHENTICATION)
    )
    outcome = provider.charge(_request(saved, key))
    assert outcome.status is ChargeStatus.REQUIRES_ACTION
    assert outcome.provider_payment_id is not None and outcome.client_secret is not None
    return outcome.provider_payment_id, outcome.client_secret


def test_an_authenticated_payment_is_found_paid_and_is_not_cancelled(
    api_base: str, provider: StripePaymentProvider, stripe_client: stripe.StripeClient
) -> None:
    payment_id, client_secret = _awaiting_authentication(provider, stripe_client, "partner-1:activation:3ds-ok")

    _authenticate(api_base, payment_id, client_secret, success=True)

    assert provider.payment_status(payment_id).status is ChargeStatus.SUCCEEDED
    # Stripe refuses to cancel a paid intent: the answer is where it stands, paid.
    assert provider.cancel_payment(payment_id).status is ChargeStatus.SUCCEEDED
    assert stripe_client.v1.payment_intents.retrieve(payment_id).status == "succeeded"


def test_a_failed_authentication_is_found_declined(
    api_base: str, provider: StripePaymentProvider, stripe_client: stripe.StripeClient
) -> None:
    payment_id, client_secret = _awaiting_authentication(provider, stripe_client, "partner-1:activation:3ds-fail")

    _authenticate(api_base, payment_id, client_secret, success=False)

    outcome = provider.payment_status(payment_id)
    assert (outcome.status, outcome.decline_code) == (ChargeStatus.DECLINED, "authentication_failed")
    assert stripe_client.v1.payment_intents.retrieve(payment_id).status == "requires_payment_method"


def test_a_payment_nobody_authenticates_is_cancelled(
    provider: StripePaymentProvider, stripe_client: stripe.StripeClient
) -> None:
    payment_id, _ = _awaiting_authentication(provider, stripe_client, "partner-1:activation:3ds-never")

    cancelled = provider.cancel_payment(payment_id)

    assert (cancelled.status, cancelled.decline_code) == (ChargeStatus.DECLINED, "payment_canceled")
    assert stripe_client.v1.payment_intents.retrieve(payment_id).status == "canceled"
    assert provider.cancel_payment(payment_id) == cancelled  # cancelling again answers the same


def test_off_session_charge_on_a_saved_card_succeeds(
    provider: StripePaymentProvider, stripe_client: stripe.StripeClient
) -> None:
    saved = provider.save_payment_method(partner_id="partner-1", payment_method=_card(stripe_client, CARD_OK))
    activation = provider.charge(_request(saved, "partner-1:activation:1"))

    monthly = provider.charge(_request(saved, "partner-1:month:2026-11:1", off_session=True, amount_minor=12345))

    assert activation.succeeded
    assert monthly.status is ChargeStatus.SUCCEEDED
    assert monthly.provider_payment_id is not None
    assert monthly.provider_payment_id.startswith("pi_")
    assert monthly.provider_payment_id != activation.provider_payment_id
    intent = stripe_client.v1.payment_intents.retrieve(monthly.provider_payment_id)
    assert (intent.status, intent.amount, intent.payment_method) == ("succeeded", 12345, saved.payment_method_ref)


def test_unreachable_stripe_raises_provider_unavailable() -> None:
    closed = StripePaymentProvider(
        TEST_API_KEY, api_base=f"http://127.0.0.1:{free_port()}", setup_future_usage=False, max_network_retries=0
    )
    saved = SavedPaymentMethod(customer_ref="cus_x", payment_method_ref="pm_x")

    with pytest.raises(PaymentProviderUnavailable):
        closed.save_payment_method(partner_id="partner-1", payment_method="pm_x")
    with pytest.raises(PaymentProviderUnavailable):
        closed.charge(_request(saved, "partner-1:activation:1"))


def test_activation_and_a_monthly_run_through_stripe(
    api_base: str, stripe_client: stripe.StripeClient, settings: BillingSettings
) -> None:
    """The whole money path with the Stripe adapter: activation fee on-session, the month off-session,
    a declined retry, all against localstripe, with state in DynamoDB Local."""
    clock = FixedClock(datetime(2026, 9, 10, 9, 0, tzinfo=UTC))
    provider = StripePaymentProvider(TEST_API_KEY, api_base=api_base, setup_future_usage=False, max_network_retries=0)
    wired = Services(settings, clock=clock, payments=provider)
    partner = new_partner_id()
    owner = PartnerIdentity(partner, Role.OWNER, "owner", email=f"billing@{partner}.example")
    outcome = wired.activation.activate_monthly_billing(
        owner, "k1", ActivatePlanRequest(payment_method=_card(stripe_client, CARD_OK))
    )
    assert outcome.status == "activated" and (outcome.payment_id or "").startswith("pi_")
    workspace = wired.workspaces.create_workspace(
        owner, CreateWorkspaceRequest(name="Acme", edition="enterprise-security", max_devices=10)
    )
    clock.current = datetime(2026, 10, 3, tzinfo=UTC)
    body = {
        "type": "daily_report",
        "event_id": "r1",
        "workspace_id": workspace.workspace_id,
        "device_ids": ["a", "b"],
        "observed_at": clock.current.isoformat(),
    }
    wired.metering.record_batch([InboundMessage("m1", json.dumps(body))])

    clock.current = datetime(2026, 11, 1, 0, 5, tzinfo=UTC)
    invoice = wired.monthly_charge.charge_partner_for_month(partner, BillingMonth(2026, 10))
    assert invoice is not None and invoice.status is InvoiceStatus.PAID
    intent = stripe_client.v1.payment_intents.retrieve(invoice.payment_id or "")
    assert (intent.amount, intent.currency, intent.status) == (2 * 450, "usd", "succeeded")

    # November: the saved card now declines off-session (a card that attaches, then fails).
    plan = wired.store.load_plan(partner)
    failing = _card(stripe_client, CARD_DECLINED_AT_CHARGE)
    stripe_client.v1.payment_methods.attach(failing, params={"customer": plan.payment_customer_ref or ""})
    wired.store.save_plan(
        replace(plan, payment_method_ref=failing),
        audit=AuditEvent(partner, "payment_method_changed", clock.current, "test"),
    )
    clock.current = datetime(2026, 11, 5, tzinfo=UTC)
    wired.metering.record_batch(
        [InboundMessage("m2", json.dumps({**body, "event_id": "r2", "observed_at": clock.current.isoformat()}))]
    )
    clock.current = datetime(2026, 12, 1, 0, 5, tzinfo=UTC)
    november = wired.monthly_charge.charge_partner_for_month(partner, BillingMonth(2026, 11))
    assert november is not None and november.status is InvoiceStatus.PAYMENT_FAILED
    assert november.failure_code == "card_declined" and str(november.next_retry_on) == "2026-12-03"


def _stripe_services(api_base: str, settings: BillingSettings, clock: FixedClock) -> Services:
    provider = StripePaymentProvider(TEST_API_KEY, api_base=api_base, setup_future_usage=False, max_network_retries=0)
    return Services(settings, clock=clock, payments=provider)


def test_activation_with_3d_secure_through_stripe_completes_once(
    api_base: str, stripe_client: stripe.StripeClient, settings: BillingSettings
) -> None:
    """A European card (4000 0025 0000 3155) through the real services, Powertools idempotency and DynamoDB
    Local: 202-style ``requires_action`` (not stored), the customer authenticates, the same request again
    activates, and from then on the stored answer is replayed: one payment."""
    clock = FixedClock(datetime(2026, 9, 10, 9, 0, tzinfo=UTC))
    wired = _stripe_services(api_base, settings, clock)
    partner = new_partner_id()
    owner = PartnerIdentity(partner, Role.OWNER, "owner", email=f"billing@{partner}.example")
    request = ActivatePlanRequest(payment_method=_card(stripe_client, CARD_REQUIRES_AUTHENTICATION), currency="EUR")

    waiting = wired.activation.activate_monthly_billing(owner, "k1", request)
    assert waiting.status == "requires_action"
    assert waiting.payment_id is not None and waiting.client_secret is not None
    assert wired.activation.activate_monthly_billing(owner, "k1", request) == waiting  # still waiting
    assert wired.store.load_plan(partner).state is PlanState.ACTIVATING

    _authenticate(api_base, waiting.payment_id, waiting.client_secret, success=True)
    clock.current += timedelta(minutes=3)
    activated = wired.activation.activate_monthly_billing(owner, "k1", request)

    assert activated.status == "activated" and activated.payment_id == waiting.payment_id
    assert wired.activation.activate_monthly_billing(owner, "k1", request) == activated  # the stored answer
    plan = wired.store.load_plan(partner)
    assert (plan.state, plan.currency, plan.payment_method_ref) == (PlanState.ACTIVE, "EUR", request.payment_method)
    assert plan.pending_authentication is None
    payments = list(PaymentItem.query(partner_pk(partner), PaymentItem.sk.startswith("PAYMENT#")))
    assert [(p.provider_payment_id, p.amount_minor, p.currency) for p in payments] == [
        (waiting.payment_id, 1000, "EUR")
    ]
    assert stripe_client.v1.payment_intents.retrieve(waiting.payment_id).status == "succeeded"


def test_a_failed_or_abandoned_authentication_through_stripe_leaves_the_plan_inactive(
    api_base: str, stripe_client: stripe.StripeClient, settings: BillingSettings
) -> None:
    clock = FixedClock(datetime(2026, 9, 10, 9, 0, tzinfo=UTC))
    wired = _stripe_services(api_base, settings, clock)
    partner = new_partner_id()
    owner = PartnerIdentity(partner, Role.OWNER, "owner")
    first = ActivatePlanRequest(payment_method=_card(stripe_client, CARD_REQUIRES_AUTHENTICATION))

    # The customer fails the challenge: 402 authentication_failed, stored for the key.
    waiting = wired.activation.activate_monthly_billing(owner, "k1", first)
    assert waiting.payment_id is not None and waiting.client_secret is not None
    _authenticate(api_base, waiting.payment_id, waiting.client_secret, success=False)
    declined = wired.activation.activate_monthly_billing(owner, "k1", first)
    assert (declined.status, declined.decline_code) == ("declined", "authentication_failed")
    assert wired.activation.activate_monthly_billing(owner, "k1", first) == declined
    assert wired.store.load_plan(partner).state is PlanState.INACTIVE

    # Another attempt the customer never answers: cancelled at Stripe once the window is over.
    second = ActivatePlanRequest(payment_method=_card(stripe_client, CARD_REQUIRES_AUTHENTICATION))
    waiting = wired.activation.activate_monthly_billing(owner, "k2", second)
    assert waiting.status == "requires_action" and waiting.payment_id is not None
    clock.current += AUTHENTICATION_WINDOW
    abandoned = wired.activation.activate_monthly_billing(owner, "k2", second)
    assert (abandoned.status, abandoned.decline_code) == ("declined", "authentication_abandoned")
    assert stripe_client.v1.payment_intents.retrieve(waiting.payment_id).status == "canceled"
    plan = wired.store.load_plan(partner)
    assert (plan.state, plan.activation_attempt) == (PlanState.INACTIVE, 2)
    assert list(PaymentItem.query(partner_pk(partner), PaymentItem.sk.startswith("PAYMENT#"))) == []

    # A card without 3-D Secure then activates with a new attempt.
    third = ActivatePlanRequest(payment_method=_card(stripe_client, CARD_OK))
    assert wired.activation.activate_monthly_billing(owner, "k3", third).status == "activated"
    assert wired.store.load_plan(partner).activation_attempt == 3


# -- exactly once without Stripe's key window (issue 27, item 1) -------------------------------------------
# localstripe replays no idempotency key, as Stripe does not after 24 hours: a second charge call for one
# attempt is a second charge there. These tests fail if any path charges again instead of looking up.
class DiesAfterTheCharge:
    """The Stripe adapter, but the worker dies right after Stripe charged (once), before anything is stored."""

    def __init__(self, inner: StripePaymentProvider) -> None:
        self.inner, self.armed = inner, True

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def charge(self, request: ChargeRequest) -> ChargeOutcome:
        outcome = self.inner.charge(request)
        if self.armed:
            self.armed = False
            raise WorkerCrash("died after Stripe charged")
        return outcome


def _stripe_provider(api_base: str) -> StripePaymentProvider:
    return StripePaymentProvider(TEST_API_KEY, api_base=api_base, setup_future_usage=False, max_network_retries=0)


def _paid_at_stripe(stripe_client: stripe.StripeClient, customer: str | None, reference_prefix: str) -> list[str]:
    """The customer's succeeded PaymentIntents whose reference starts with ``reference_prefix``."""
    intents = stripe_client.v1.payment_intents.list(params={"customer": customer or "", "limit": 100})
    return [
        intent.id
        for intent in intents.auto_paging_iter()
        if intent.status == "succeeded" and intent.metadata["idempotency_key"].startswith(reference_prefix)
    ]


def _partner_with_a_device_in_october(
    wired: Services, clock: FixedClock, stripe_client: stripe.StripeClient
) -> PartnerIdentity:
    partner = new_partner_id()
    owner = PartnerIdentity(partner, Role.OWNER, "owner", email=f"billing@{partner}.example")
    clock.current = datetime(2026, 9, 10, 9, 0, tzinfo=UTC)
    request = ActivatePlanRequest(payment_method=_card(stripe_client, CARD_OK))
    assert wired.activation.activate_monthly_billing(owner, "k1", request).status == "activated"
    workspace = wired.workspaces.create_workspace(
        owner, CreateWorkspaceRequest(name="Acme", edition="anti-malware", max_devices=10)
    )
    clock.current = datetime(2026, 10, 3, tzinfo=UTC)
    body = {
        "type": "daily_report",
        "event_id": "r1",
        "workspace_id": workspace.workspace_id,
        "device_ids": ["a"],
        "observed_at": clock.current.isoformat(),
    }
    wired.metering.record_batch([InboundMessage("m1", json.dumps(body))])
    clock.current = datetime(2026, 11, 1, 0, 5, tzinfo=UTC)
    return owner


def test_a_monthly_charge_resumed_a_day_after_its_worker_died_is_not_charged_again_at_stripe(
    api_base: str, stripe_client: stripe.StripeClient, settings: BillingSettings
) -> None:
    clock = FixedClock(datetime(2026, 9, 10, 9, 0, tzinfo=UTC))
    owner = _partner_with_a_device_in_october(_stripe_services(api_base, settings, clock), clock, stripe_client)
    partner = owner.partner_id
    dying = Services(settings, clock=clock, payments=DiesAfterTheCharge(_stripe_provider(api_base)))
    with pytest.raises(WorkerCrash):
        dying.monthly_charge.charge_partner_for_month(partner, BillingMonth(2026, 10))
    customer = dying.store.load_plan(partner).payment_customer_ref
    assert len(_paid_at_stripe(stripe_client, customer, f"month:{partner}:")) == 1  # Stripe took the money

    clock.current += timedelta(days=1)  # redriven from the dead-letter queue the next day
    invoice = _stripe_services(api_base, settings, clock).monthly_charge.charge_partner_for_month(
        partner, BillingMonth(2026, 10)
    )

    assert invoice is not None and invoice.status is InvoiceStatus.PAID
    assert _paid_at_stripe(stripe_client, customer, f"month:{partner}:") == [invoice.payment_id]


def test_two_workers_on_one_partner_month_charge_once_at_stripe(
    api_base: str, stripe_client: stripe.StripeClient, settings: BillingSettings
) -> None:
    clock = FixedClock(datetime(2026, 9, 10, 9, 0, tzinfo=UTC))
    owner = _partner_with_a_device_in_october(_stripe_services(api_base, settings, clock), clock, stripe_client)
    partner = owner.partner_id
    workers = [_stripe_services(api_base, settings, clock) for _ in range(2)]
    for wired in workers:  # the clients up front (boto3's default session is not thread-safe)
        assert wired.usage_reports.client is not None
    start = threading.Barrier(len(workers))
    answers: list[object] = []

    def work(wired: Services) -> None:
        start.wait()
        try:
            answers.append(wired.monthly_charge.charge_partner_for_month(partner, BillingMonth(2026, 10)))
        except (ConcurrentModification, PaymentAttemptInProgress) as backed_off:
            answers.append(backed_off)

    threads = [threading.Thread(target=work, args=(wired,)) for wired in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(answers) == 2
    customer = workers[0].store.load_plan(partner).payment_customer_ref
    invoice = workers[0].invoices.load_invoice(partner, BillingMonth(2026, 10))
    assert invoice is not None and invoice.status is InvoiceStatus.PAID
    assert _paid_at_stripe(stripe_client, customer, f"month:{partner}:") == [invoice.payment_id]


@pytest.mark.parametrize("failure", ["worker_died", "stripe_timed_out"])
def test_an_activation_retried_after_its_charge_charges_once_and_keeps_one_customer(
    api_base: str, stripe_client: stripe.StripeClient, settings: BillingSettings, failure: str
) -> None:
    clock = FixedClock(datetime(2026, 9, 10, 9, 0, tzinfo=UTC))
    partner = new_partner_id()
    owner = PartnerIdentity(partner, Role.OWNER, "owner", email=f"billing@{partner}.example")
    request = ActivatePlanRequest(payment_method=_card(stripe_client, CARD_OK))
    provider = DiesAfterTheCharge(_stripe_provider(api_base))
    first = Services(settings, clock=clock, payments=provider)
    retry_key = "k1"
    if failure == "worker_died":
        with pytest.raises(WorkerCrash):
            first.activation.activate_monthly_billing(owner, "k1", request)
        clock.current += timedelta(minutes=6)  # the claim's TTL is over: the next request resumes the attempt
        retry_key = "k2"  # (the dead request's idempotency record stays in progress until it expires)
    else:
        provider.charge = _times_out_after(provider.inner.charge)  # type: ignore[method-assign]
        with pytest.raises(PaymentProviderUnavailable):
            first.activation.activate_monthly_billing(owner, "k1", request)
    customer = first.store.load_plan(partner).payment_customer_ref
    assert len(_paid_at_stripe(stripe_client, customer, f"activation:{partner}:")) == 1

    retried = _stripe_services(api_base, settings, clock).activation.activate_monthly_billing(owner, retry_key, request)

    assert retried.status == "activated"
    assert _paid_at_stripe(stripe_client, customer, f"activation:{partner}:") == [retried.payment_id]
    customers = stripe_client.v1.customers.list(params={"limit": 100}).auto_paging_iter()
    assert [c.id for c in customers if c.metadata and c.metadata["partner_id"] == partner] == [customer]


def _times_out_after(charge: Any) -> Any:
    def timed_out(request: ChargeRequest) -> ChargeOutcome:
        charge(request)
        raise PaymentProviderUnavailable("Stripe charged, then the connection timed out")

    return timed_out


def test_stripe_rate_limiting_is_retryable_never_a_decline() -> None:
    """Stripe answers 429 when its rate limit is met: the adapter says the provider is unavailable (the
    message is retried, the attempt looked up first), never a decline."""

    class RateLimited(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.dumps(
                {"error": {"type": "invalid_request_error", "code": "rate_limit", "message": "Too many requests"}}
            ).encode()
            self.send_response(429)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RateLimited)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        limited = StripePaymentProvider(
            TEST_API_KEY,
            api_base=f"http://127.0.0.1:{server.server_port}",
            setup_future_usage=False,
            max_network_retries=0,
        )
        saved = SavedPaymentMethod(customer_ref="cus_x", payment_method_ref="pm_x")
        with pytest.raises(PaymentProviderUnavailable):
            limited.charge(_request(saved, "partner-1:month:2026-11:1", off_session=True))
    finally:
        server.shutdown()

"""Business metrics (CloudWatch EMF) for activations, payments, the monthly run and its charges: counted per
invocation, published as one EMF document per service in Lambda, and nothing printed anywhere else."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
from chalice.app import Chalice, Response
from chalice.test import Client

from billing_core.api.app import counts_outcomes
from billing_core.domain.calendar import BillingMonth
from billing_core.domain.invoicing import Invoice, InvoiceStatus
from billing_core.observability import (
    ACTIVATION_OUTCOMES,
    METRICS_NAMESPACE,
    BusinessMetric,
    BusinessMetrics,
    business_metrics,
    count_charge,
)
from infra import PROJECT_ROOT
from infra.lambda_runtime import LocalLambdaContext
from tests.invoice_samples import every_kind_lines

NOW = datetime(2026, 7, 1, 0, 7, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME", raising=False)
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
    business_metrics.publish(emit=lambda _: None)
    yield
    business_metrics.publish(emit=lambda _: None)


def _in_lambda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "msp-billing-ChargeWorkerFunction")


def _value(value: float | list[float]) -> float:
    """A metric's value in an EMF document (Powertools writes a list of values)."""
    return sum(value) if isinstance(value, list) else value


def _published(metrics: BusinessMetrics) -> dict[str, dict[str, float]]:
    """What ``publish`` prints, as {service: {metric: value}} (and checks each is an EMF document)."""
    printed: list[str] = []
    metrics.publish(emit=printed.append)
    by_service: dict[str, dict[str, float]] = {}
    for line in printed:
        document = json.loads(line)
        (directive,) = document["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == METRICS_NAMESPACE and directive["Dimensions"] == [["service"]]
        assert all(metric["Unit"] == "Count" for metric in directive["Metrics"])
        by_service[document["service"]] = {m["Name"]: _value(document[m["Name"]]) for m in directive["Metrics"]}
    return by_service


def test_in_lambda_each_service_gets_one_emf_document_and_the_counts_are_cleared(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _in_lambda(monkeypatch)
    metrics = BusinessMetrics()
    metrics.count(BusinessMetric.CHARGES_PAID)
    metrics.count(BusinessMetric.CHARGES_PAID)
    metrics.count(BusinessMetric.PAYMENTS_SUCCEEDED)
    metrics.count(BusinessMetric.PARTNERS_QUEUED, 0)
    assert _published(metrics) == {
        "charges": {"ChargesPaid": 2},
        "payments": {"PaymentsSucceeded": 1},
        "monthly-run": {"PartnersQueued": 0},
    }
    assert metrics.pending() == {} and _published(metrics) == {}


def test_outside_lambda_nothing_is_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    metrics = BusinessMetrics()
    metrics.count(BusinessMetric.ACTIVATIONS)
    assert _published(metrics) == {}
    assert metrics.pending() == {}
    _in_lambda(monkeypatch)
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")  # as Powertools' own Metrics honour it
    metrics.count(BusinessMetric.ACTIVATIONS)
    assert _published(metrics) == {}


def _invoice(status: InvoiceStatus, *events: tuple[str, datetime]) -> Invoice:
    invoice = Invoice("acme-it", BillingMonth(2026, 6), "USD", "2026-01", every_kind_lines(), NOW, status=status)
    for event_type, at in events:
        invoice = invoice.with_event(event_type, at, "monthly-run")
    return invoice


@pytest.mark.parametrize(
    ("invoice", "expected"),
    [
        (None, {BusinessMetric.CHARGES_NOT_BILLABLE: 1}),
        (
            _invoice(InvoiceStatus.PAID, ("payment_attempt_started", NOW), ("invoice_paid", NOW)),
            {BusinessMetric.CHARGES_PAID: 1, BusinessMetric.PAYMENTS_SUCCEEDED: 1},
        ),
        # A re-run finds the invoice paid by an earlier run: a charge outcome, no payment.
        (
            _invoice(InvoiceStatus.PAID, ("invoice_paid", NOW - timedelta(days=2))),
            {BusinessMetric.CHARGES_PAID: 1},
        ),
        (
            _invoice(
                InvoiceStatus.PAYMENT_FAILED,
                ("payment_declined", NOW - timedelta(days=2)),
                ("payment_declined", NOW),
            ),
            {BusinessMetric.CHARGES_FAILED: 1, BusinessMetric.PAYMENTS_FAILED: 1},
        ),
        (
            _invoice(InvoiceStatus.PAST_DUE, ("payment_declined", NOW)),
            {BusinessMetric.CHARGES_FAILED: 1, BusinessMetric.PAYMENTS_FAILED: 1},
        ),
        (_invoice(InvoiceStatus.NOTHING_DUE), {BusinessMetric.CHARGES_NOTHING_DUE: 1}),
        (_invoice(InvoiceStatus.DRAFT), {}),
    ],
    ids=["not-billable", "paid-now", "paid-before", "declined-again", "past-due", "nothing-due", "draft"],
)
def test_a_charge_counts_its_outcome_and_the_payments_it_made(
    invoice: Invoice | None, expected: dict[BusinessMetric, float]
) -> None:
    metrics = BusinessMetrics()
    count_charge(invoice, since=NOW, metrics=metrics)
    assert metrics.pending() == expected


def _activation_app() -> Chalice:
    app = Chalice(app_name="activation-metrics")

    @app.route("/plan/activation", methods=["POST"])
    def activate() -> Response:
        request = app.current_request
        assert request is not None
        status = int((request.json_body or {})["status"])
        return Response(body={}, status_code=status)

    @app.route("/plan", methods=["GET"])
    def plan() -> Response:
        return Response(body={}, status_code=200)

    app.register_middleware(counts_outcomes("POST", "/plan/activation", ACTIVATION_OUTCOMES), "http")
    return app


def test_activation_answers_are_counted_with_their_payments(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _in_lambda(monkeypatch)
    headers = {"Content-Type": "application/json"}
    with Client(_activation_app()) as client:
        for status in (201, 201, 402, 409):
            client.http.post("/plan/activation", headers=headers, body=json.dumps({"status": status}))
        client.http.get("/plan")
    documents = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    totals: dict[str, float] = {}
    for document in documents:
        for metric in document["_aws"]["CloudWatchMetrics"][0]["Metrics"]:
            name = f"{document['service']}/{metric['Name']}"
            totals[name] = totals.get(name, 0) + _value(document[metric["Name"]])
    assert totals == {
        "activation/Activations": 2,
        "payments/PaymentsSucceeded": 2,
        "activation/ActivationsDeclined": 1,
        "payments/PaymentsFailed": 1,
    }


def _monthly_charge_module() -> ModuleType:
    path = PROJECT_ROOT / "functions" / "monthly_charge" / "app.py"
    spec = importlib.util.spec_from_file_location("monthly_charge_app_for_metrics", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_a_successful_dispatch_counts_the_run_the_missed_run_alarm_waits_for(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    module = _monthly_charge_module()
    dispatcher = SimpleNamespace(dispatch_monthly_run=lambda month: (BillingMonth(2026, 6), 3))
    monkeypatch.setattr(module, "services", lambda: SimpleNamespace(monthly_run=dispatcher))
    _in_lambda(monkeypatch)
    answer: Any = module.dispatch({}, LocalLambdaContext("MonthlyRunDispatcherFunction"))
    assert answer == {"month": "2026-06", "partners": 3}
    (document,) = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert document["service"] == "monthly-run"
    assert (_value(document["MonthlyRunDispatched"]), _value(document["PartnersQueued"])) == (1, 3)


def test_a_failed_dispatch_counts_no_run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    module = _monthly_charge_module()

    def fail(month: object) -> None:
        raise RuntimeError("the index is unavailable")

    monkeypatch.setattr(
        module, "services", lambda: SimpleNamespace(monthly_run=SimpleNamespace(dispatch_monthly_run=fail))
    )
    _in_lambda(monkeypatch)
    with pytest.raises(RuntimeError):
        module.dispatch({}, LocalLambdaContext("MonthlyRunDispatcherFunction"))
    assert '"MonthlyRunDispatched"' not in capsys.readouterr().out

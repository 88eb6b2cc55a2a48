"""Domain objects -> response models. One place, shared by every use case that answers with them."""

from __future__ import annotations

from datetime import datetime, timedelta

from billing_core.domain.calendar import BillingMonth
from billing_core.domain.invoicing import Invoice, InvoiceLine, InvoiceSummary, SubscriptionLineDetail
from billing_core.domain.money import Money
from billing_core.domain.plan import Plan
from billing_core.domain.workspace import LicenceDocument, Workspace
from billing_core.schemas import (
    AwaitingAuthenticationView,
    CreditedChargeView,
    InvoiceLineView,
    InvoiceView,
    LicenceDocumentView,
    MoneyView,
    PlanStatusView,
    PlanWorkspaceView,
    SubscriptionLineView,
    WorkspaceView,
)


def money_view(money: Money) -> MoneyView:
    return MoneyView(amount_minor=money.amount_minor, currency=money.currency, display=money.format())


def workspace_view(workspace: Workspace) -> WorkspaceView:
    return WorkspaceView(
        workspace_id=workspace.workspace_id,
        name=workspace.name,
        on_plan=workspace.on_plan,
        edition=workspace.edition,
        max_devices=workspace.max_devices,
        created_at=workspace.created_at,
        joined_plan_at=workspace.joined_plan_at,
    )


def plan_status_view(
    plan: Plan, workspaces_on_plan: list[Workspace], devices_this_month: dict[str, int], now: datetime
) -> PlanStatusView:
    return PlanStatusView(
        partner_id=plan.partner_id,
        state=plan.state.value,
        currency=plan.currency,
        price_list_version=plan.price_list_version,
        activated_at=plan.activated_at,
        covered_through=plan.covered_through(),
        next_charge_date=plan.next_charge_date(now),
        month=str(BillingMonth.containing(now)),
        cancellation_ends_on=plan.cancellation_ends_on,
        ended_on=plan.ended_on,
        awaiting_authentication=(
            AwaitingAuthenticationView(
                payment_id=plan.pending_authentication.payment_id,
                amount=money_view(plan.pending_authentication.amount),
                expires_at=plan.pending_authentication.expires_at,
            )
            if plan.pending_authentication is not None
            else None
        ),
        workspaces_on_plan=[
            PlanWorkspaceView(
                **workspace_view(w).model_dump(),
                devices_this_month=devices_this_month.get(w.workspace_id, 0),
                seats_this_month=min(devices_this_month.get(w.workspace_id, 0), w.max_devices or 0),
            )
            for w in workspaces_on_plan
        ],
    )


def licence_document_view(document: LicenceDocument) -> LicenceDocumentView:
    return LicenceDocumentView(
        workspace_id=document.workspace_id,
        plan=document.plan,
        edition=document.edition,
        max_devices=document.max_devices,
        status=document.status.value,
        valid_through=document.valid_through,
        ends_on=document.ends_on,
    )


def subscription_line_view(line: InvoiceLine, detail: SubscriptionLineDetail) -> SubscriptionLineView:
    credited = detail.credit_for
    return SubscriptionLineView(
        subscription_id=detail.subscription_id,
        order_id=detail.order_id,
        customer_id=detail.customer_id,
        sku=line.edition,
        cycle=detail.cycle,
        quantity=detail.quantity,
        period_first_day=detail.period_start,
        period_last_day=detail.period_end - timedelta(days=1),
        charge_seq=detail.charge_seq,
        price_list_version=detail.price_list_version,
        promotion=detail.promotion,
        credit_for=(
            CreditedChargeView(
                seq=credited.seq,
                period_first_day=credited.period_start,
                period_last_day=credited.period_end - timedelta(days=1),
                amount=money_view(credited.amount),
            )
            if credited is not None
            else None
        ),
    )


def invoice_line_view(line: InvoiceLine) -> InvoiceLineView:
    return InvoiceLineView(
        kind=line.kind.value,
        workspace_id=line.workspace_id,
        description=line.description,
        edition=line.edition,
        month=str(line.month),
        seats=line.seats,
        devices=line.devices,
        unit_price=money_view(line.unit_price),
        amount=money_view(line.amount),
        adjustment=line.adjustment,
        subscription=subscription_line_view(line, line.subscription) if line.subscription is not None else None,
    )


def invoice_view(invoice: Invoice) -> InvoiceView:
    return InvoiceView(
        month=str(invoice.month),
        status=invoice.status.value,
        total=money_view(invoice.total),
        lines=[invoice_line_view(line) for line in invoice.lines],
        line_count=len(invoice.lines),
        price_list_version=invoice.price_list_version,
        created_at=invoice.created_at,
        payment_attempts=invoice.payment_attempts,
        next_retry_on=invoice.next_retry_on,
        failure_code=invoice.failure_code,
        payment_id=invoice.payment_id,
        paid_at=invoice.paid_at,
    )


def invoice_summary_view(summary: InvoiceSummary, *, max_lines: int) -> InvoiceView:
    """An invoice in a listing: with its lines if it has at most ``max_lines`` and they came with the listing."""
    lines = summary.lines if summary.lines is not None and summary.line_count <= max_lines else None
    return InvoiceView(
        month=str(summary.month),
        status=summary.status.value,
        total=money_view(summary.total),
        lines=[invoice_line_view(line) for line in lines] if lines is not None else None,
        line_count=summary.line_count,
        price_list_version=summary.price_list_version,
        created_at=summary.created_at,
        payment_attempts=summary.payment_attempts,
        next_retry_on=summary.next_retry_on,
        failure_code=summary.failure_code,
        payment_id=summary.payment_id,
        paid_at=summary.paid_at,
    )

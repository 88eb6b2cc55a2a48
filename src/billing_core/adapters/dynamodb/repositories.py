"""PlanStore and WorkspaceStore on DynamoDB via PynamoDB.

Every state change is one ``TransactWriteItems``: the changed item (guarded by its version), its audit
event and, for payments, the payment item (guarded by ``attribute_not_exists``), so a crash can never
leave a plan without its audit trail or a payment recorded twice.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import date

from pynamodb.connection import Connection
from pynamodb.exceptions import TransactWriteError, UpdateError
from pynamodb.transactions import TransactWrite

from billing_core.adapters.dynamodb.models import (
    AuditItem,
    PartnerWorkspaceItem,
    PaymentItem,
    PlanItem,
    WorkspaceItem,
    partner_pk,
    partner_workspace_sk,
    workspace_pk,
)
from billing_core.domain.audit import AuditEvent
from billing_core.domain.calendar import BillingMonth, parse_iso, to_iso
from billing_core.domain.errors import ConcurrentModification
from billing_core.domain.payments import PaymentRecord
from billing_core.domain.plan import PendingAuthentication, Plan, PlanState
from billing_core.domain.workspace import LicenceTerm, Workspace

PLAN_SK = "PLAN"
CHARGEABLE = "LIVE"
WORKSPACE_SK = "WORKSPACE"
BATCH_GET_LIMIT = 100  # DynamoDB's BatchGetItem maximum


def audit_item(event: AuditEvent) -> AuditItem:
    return AuditItem(
        pk=partner_pk(event.partner_id),
        sk=f"AUDIT#{to_iso(event.occurred_at)}#{uuid.uuid4().hex}",
        partner_id=event.partner_id,
        event_type=event.event_type,
        actor=event.actor,
        occurred_at=event.occurred_at,
        details=event.details,
    )


def payment_item(payment: PaymentRecord) -> PaymentItem:
    return PaymentItem(
        pk=partner_pk(payment.partner_id),
        sk=f"PAYMENT#{payment.purpose}#{payment.attempt:04d}",
        partner_id=payment.partner_id,
        purpose=payment.purpose,
        attempt=payment.attempt,
        amount_minor=payment.amount.amount_minor,
        currency=payment.amount.currency,
        provider=payment.provider,
        provider_payment_id=payment.provider_payment_id,
        idempotency_key=payment.idempotency_key,
        created_at=payment.created_at,
    )


class DynamoBillingStore:
    """Implements PlanStore and WorkspaceStore on the billing table."""

    def __init__(self, region: str) -> None:
        # One low-level connection for transactions; endpoint resolution is botocore's (env vars).
        self._connection = Connection(region=region)

    # -- plans -----------------------------------------------------------------------------------
    def load_plan(self, partner_id: str) -> Plan:
        try:
            item = PlanItem.get(partner_pk(partner_id), PLAN_SK, consistent_read=True)
        except PlanItem.DoesNotExist:
            return Plan(partner_id=partner_id)
        return Plan(
            partner_id=item.partner_id,
            state=PlanState(item.state),
            currency=item.currency,
            price_list_version=item.price_list_version,
            activated_at=item.activated_at,
            activation_attempt=int(item.activation_attempt),
            activation_started_at=item.activation_started_at,
            payment_customer_ref=item.payment_customer_ref,
            payment_method_ref=item.payment_method_ref,
            billing_email=item.billing_email,
            last_charged_month=BillingMonth.parse(item.last_charged_month) if item.last_charged_month else None,
            cancellation_ends_on=_date_or_none(item.cancellation_ends_on),
            ended_on=_date_or_none(item.ended_on),
            left_monthly_runs=bool(item.left_monthly_runs),
            past_due_month=BillingMonth.parse(item.past_due_month) if item.past_due_month else None,
            pending_authentication=(
                PendingAuthentication.from_dict(item.pending_authentication) if item.pending_authentication else None
            ),
            version=item.version,
        )

    def save_plan(self, plan: Plan, *, audit: AuditEvent, payment: PaymentRecord | None = None) -> Plan:
        item = PlanItem(
            pk=partner_pk(plan.partner_id),
            sk=PLAN_SK,
            partner_id=plan.partner_id,
            state=plan.state.value,
            currency=plan.currency,
            price_list_version=plan.price_list_version,
            activated_at=plan.activated_at,
            activation_attempt=plan.activation_attempt,
            activation_started_at=plan.activation_started_at,
            payment_customer_ref=plan.payment_customer_ref,
            payment_method_ref=plan.payment_method_ref,
            billing_email=plan.billing_email,
            cancellation_ends_on=_iso_or_none(plan.cancellation_ends_on),
            ended_on=_iso_or_none(plan.ended_on),
            left_monthly_runs=plan.left_monthly_runs,
            past_due_month=str(plan.past_due_month) if plan.past_due_month else None,
            pending_authentication=plan.pending_authentication.to_dict() if plan.pending_authentication else None,
            charge_index=CHARGEABLE if plan.visited_by_monthly_runs else None,
            last_charged_month=str(plan.last_charged_month) if plan.last_charged_month else None,
            updated_at=audit.occurred_at,
        )
        if plan.version is not None:  # unset for a new plan: the write then requires that none exists
            item.version = plan.version
        with self._transaction(f"plan of partner {plan.partner_id}") as transaction:
            transaction.save(item)  # VersionAttribute adds the optimistic-lock condition
            transaction.save(audit_item(audit), condition=AuditItem.pk.does_not_exist())
            if payment is not None:
                transaction.save(payment_item(payment), condition=PaymentItem.pk.does_not_exist())
        return replace(plan, version=item.version)

    def chargeable_partners(self, page_size: int = 500) -> Iterator[str]:
        """Partner ids of every plan a monthly run must visit, paged through the sparse ChargeablePlans index."""
        for item in PlanItem.chargeable_plans.query(CHARGEABLE, page_size=page_size):
            yield item.partner_id

    def close_month(self, plan: Plan, month: BillingMonth) -> Plan:
        item = PlanItem(pk=partner_pk(plan.partner_id), sk=PLAN_SK)
        if plan.version is not None:
            item.version = plan.version
        try:
            item.update(actions=[PlanItem.last_charged_month.set(str(month))])  # version-checked and bumped
        except UpdateError as error:
            if error.cause_response_code == "ConditionalCheckFailedException":
                raise ConcurrentModification(f"plan of partner {plan.partner_id} was changed concurrently") from error
            raise
        return replace(plan, last_charged_month=month, version=item.version)

    # -- workspaces ------------------------------------------------------------------------------
    def load_workspace(self, workspace_id: str) -> Workspace | None:
        try:
            item = WorkspaceItem.get(workspace_pk(workspace_id), WORKSPACE_SK, consistent_read=True)
        except WorkspaceItem.DoesNotExist:
            return None
        return workspace_from_item(item)

    def list_workspaces(self, partner_id: str) -> list[Workspace]:
        """Every workspace of the partner, in creation order, strongly consistent: the monthly run and the
        end-of-plan finaliser decide money on it, so a workspace created a moment ago must be in it (the
        PartnerItems GSI is only eventually consistent). One query of the partner's pointers, then
        consistent batch reads of the workspaces."""
        pointers = PartnerWorkspaceItem.query(
            partner_pk(partner_id), PartnerWorkspaceItem.sk.startswith("WORKSPACE#"), consistent_read=True
        )
        order = [pointer.workspace_id for pointer in pointers]
        found: dict[str, Workspace] = {}
        for start in range(0, len(order), BATCH_GET_LIMIT):
            keys = [
                (workspace_pk(workspace_id), WORKSPACE_SK) for workspace_id in order[start : start + BATCH_GET_LIMIT]
            ]
            for item in WorkspaceItem.batch_get(keys, consistent_read=True):
                found[item.workspace_id] = workspace_from_item(item)
        return [found[workspace_id] for workspace_id in order if workspace_id in found]

    def save_workspace(
        self, workspace: Workspace, *, audit: AuditEvent, while_plan_is: Plan | None = None
    ) -> Workspace:
        item = WorkspaceItem(
            pk=workspace_pk(workspace.workspace_id),
            sk=WORKSPACE_SK,
            workspace_id=workspace.workspace_id,
            partner_id=workspace.partner_id,
            name=workspace.name,
            on_plan=workspace.on_plan,
            edition=workspace.edition,
            max_devices=workspace.max_devices,
            created_at=workspace.created_at,
            joined_plan_at=workspace.joined_plan_at,
            licence_ended_on=_iso_or_none(workspace.licence_ended_on),
            licence_history=[
                {"from": to_iso(term.effective_from), "edition": term.edition, "max_devices": term.max_devices}
                for term in workspace.licence_history
            ],
            gsi1pk=partner_pk(workspace.partner_id),
            gsi1sk=partner_workspace_sk(to_iso(workspace.created_at), workspace.workspace_id),
        )
        if workspace.version is not None:
            item.version = workspace.version
        with self._transaction(f"workspace {workspace.workspace_id}") as transaction:
            transaction.save(item)
            if workspace.version is None:  # created: the partner's pointer to it, once
                pointer = PartnerWorkspaceItem(
                    pk=partner_pk(workspace.partner_id),
                    sk=partner_workspace_sk(to_iso(workspace.created_at), workspace.workspace_id),
                    workspace_id=workspace.workspace_id,
                )
                transaction.save(pointer, condition=PartnerWorkspaceItem.pk.does_not_exist())
            transaction.save(audit_item(audit), condition=AuditItem.pk.does_not_exist())
            if while_plan_is is not None:
                transaction.condition_check(
                    PlanItem,
                    partner_pk(while_plan_is.partner_id),
                    PLAN_SK,
                    condition=PlanItem.version == while_plan_is.version,
                )
        return replace(workspace, version=item.version)

    # -- helpers ---------------------------------------------------------------------------------
    def _transaction(self, what: str) -> GuardedTransaction:
        return GuardedTransaction(self._connection, what)


class GuardedTransaction(TransactWrite):
    """A TransactWrite whose failed conditions surface as the domain's ConcurrentModification."""

    def __init__(self, connection: Connection, what: str) -> None:
        super().__init__(connection=connection)
        self._what = what

    def _commit(self) -> object:
        try:
            return super()._commit()
        except TransactWriteError as error:
            if error.cause_response_code == "TransactionCanceledException" and any(
                reason is not None and reason.code == "ConditionalCheckFailed" for reason in error.cancellation_reasons
            ):
                raise ConcurrentModification(f"{self._what} was changed concurrently; reload and retry") from error
            raise


def workspace_from_item(item: WorkspaceItem) -> Workspace:
    return Workspace(
        workspace_id=item.workspace_id,
        partner_id=item.partner_id,
        name=item.name,
        created_at=item.created_at,
        on_plan=bool(item.on_plan),
        edition=item.edition,
        max_devices=int(item.max_devices) if item.max_devices is not None else None,
        joined_plan_at=item.joined_plan_at,
        licence_ended_on=_date_or_none(item.licence_ended_on),
        licence_history=tuple(
            LicenceTerm(parse_iso(term["from"]), term["edition"], int(term["max_devices"]))
            for term in item.licence_history or ()
        ),
        version=item.version,
    )


def _iso_or_none(day: date | None) -> str | None:
    return day.isoformat() if day is not None else None


def _date_or_none(text: str | None) -> date | None:
    return date.fromisoformat(text) if text else None

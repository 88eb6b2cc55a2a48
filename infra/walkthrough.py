"""The demo partner seeded by `msp-billing up`, and the curl walk-through printed for it."""

from __future__ import annotations

import shlex
import uuid
from dataclasses import dataclass
from pathlib import Path

from billing_core.domain.calendar import BillingMonth
from billing_core.domain.identity import PartnerIdentity, Role
from billing_core.schemas import CreateWorkspaceRequest
from billing_core.services.subscriptions import order_id_for
from billing_core.wiring import services
from infra.dev_tokens import development_token

PLAN_STATUS_TITLE = "Plan status with this month's seats per workspace"
ORDER_KEY = "walkthrough-order-1"
TERM_CHANGE = '{"mode": "immediate", "term": "P3Y", "billing_frequency": "annual"}'


@dataclass(frozen=True)
class CliStep:
    """A command of `msp-billing` against the running stack (an agent's report, a clock move): a shell
    command, not an HTTP call."""

    title: str
    args: tuple[str, ...]

    def command(self, moto_port: int, dynamodb_port: int, clock_file: Path) -> str:
        # The stack's own ports and clock file: an in-memory stack starts at today on a clock of its own,
        # whatever an earlier demo left in the default one.
        return (
            f".venv/bin/msp-billing {' '.join(shlex.quote(arg) for arg in self.args)} --moto-port {moto_port} "
            f"--dynamodb-port {dynamodb_port} --clock-file {shlex.quote(str(clock_file))}"
        )


@dataclass(frozen=True)
class WalkthroughStep:
    title: str
    expected_status: int
    method: str
    path: str
    body: str | None = None
    idempotency_key: str | None = None

    def curl(self, api_url: str, token_variable: str = "TOKEN") -> str:
        parts = [
            "curl",
            "-s",
            "-w",
            r"'\n%{http_code}\n'",
            "-X",
            self.method,
            shlex.quote(api_url + self.path),
            "-H",
            f'"Authorization: ${token_variable}"',
        ]
        if self.idempotency_key:
            parts += ["-H", shlex.quote(f"Idempotency-Key: {self.idempotency_key}")]
        if self.body is not None:
            parts += ["-H", "'Content-Type: application/json'", "-d", shlex.quote(self.body)]
        return " ".join(parts)


@dataclass(frozen=True)
class DemoPartner:
    partner_id: str
    owner_token: str
    technician_token: str
    existing_workspace_id: str
    month: str  # YYYY-MM on the test clock when seeded

    def steps(self) -> list[WalkthroughStep | CliStep]:
        activation = '{"payment_method": "pm_card_visa", "currency": "USD"}'
        return [
            WalkthroughStep(
                "Activate the monthly billing option (charges USD 10.00)",
                201,
                "POST",
                "/plan/activation",
                activation,
                idempotency_key=f"{self.partner_id}-activate-1",
            ),
            WalkthroughStep(
                "Activate again with a new key: the plan is already active",
                409,
                "POST",
                "/plan/activation",
                activation,
                idempotency_key=f"{self.partner_id}-activate-2",
            ),
            WalkthroughStep(
                "Create a workspace directly on the plan",
                201,
                "POST",
                "/workspaces",
                '{"name": "Dental practice Meyer", "edition": "business-security", "max_devices": 25}',
            ),
            WalkthroughStep(
                "Switch the existing workspace to the plan",
                200,
                "PUT",
                f"/workspaces/{self.existing_workspace_id}/plan",
                '{"edition": "anti-malware", "max_devices": 10}',
            ),
            WalkthroughStep(
                "The licence document the protection software fetches",
                200,
                "GET",
                f"/workspaces/{self.existing_workspace_id}/licence",
            ),
            CliStep(
                "A metering agent reports the workspace's devices (SQS -> meter function)",
                (
                    "send-report",
                    "--workspace",
                    self.existing_workspace_id,
                    *(arg for device in ("laptop-01", "laptop-02", "server-01") for arg in ("--device", device)),
                    "--wait",
                ),
            ),
            WalkthroughStep(PLAN_STATUS_TITLE, 200, "GET", "/plan"),
            WalkthroughStep(
                "Buy licence subscriptions: 5 x EDR Business, a one-year term billed monthly (seed 002)",
                201,
                "POST",
                "/orders",
                '{"items": [{"sku": "edr-business", "quantity": 5, "term": "P1Y", "billing_frequency": "monthly"}]}',
                idempotency_key=ORDER_KEY,
            ),
            WalkthroughStep(
                "The changes the order may make now, and why the others are refused", 200, "GET", self.changes_path
            ),
            WalkthroughStep(
                "Preview moving it to a three-year term billed annually (changes nothing)",
                200,
                "POST",
                f"{self.changes_path}/preview",
                TERM_CHANGE,
            ),
            WalkthroughStep(
                "Apply it: the unused days are credited, the new term's first year is charged",
                200,
                "POST",
                self.changes_path,
                TERM_CHANGE,
                idempotency_key=f"{self.partner_id}-change-1",
            ),
            CliStep(
                "Move the test clock to the next 1st: the monthly run bills this month",
                ("clock", "advance", "--next-first"),
            ),
            WalkthroughStep(
                "This month's invoice: the licence charge, the credit and the new charge",
                200,
                "GET",
                f"/invoices/{self.month}",
            ),
            WalkthroughStep(
                "Its reconciliation file (a download link to the CSV)",
                200,
                "GET",
                f"/invoices/{self.month}/reconciliation",
            ),
        ]

    @property
    def changes_path(self) -> str:
        return f"/orders/{order_id_for(self.partner_id, ORDER_KEY)}/changes"


def seed_demo_partner() -> DemoPartner:
    """A fresh partner each run (local data persists), with one workspace that exists off the plan."""
    partner_id = f"demo-{uuid.uuid4().hex[:8]}"
    owner = PartnerIdentity(partner_id=partner_id, role=Role.OWNER, subject="demo-owner")
    existing = services().workspaces.create_workspace(
        owner, CreateWorkspaceRequest(name="Law firm Schulz (annual licence)", on_plan=False)
    )
    return DemoPartner(
        partner_id=partner_id,
        owner_token=development_token(partner_id, Role.OWNER),
        technician_token=development_token(partner_id, Role.TECHNICIAN),
        existing_workspace_id=existing.workspace_id,
        month=str(BillingMonth.containing(services().clock.now())),
    )


def render_walkthrough(demo: DemoPartner, api_url: str, moto_port: int, dynamodb_port: int, clock_file: Path) -> str:
    lines = [
        f"Demo partner {demo.partner_id} is seeded. Try the partner API (expected status after each body):",
        "",
        f"export TOKEN={demo.owner_token}",
        "",
    ]
    for number, step in enumerate(demo.steps(), start=1):
        if isinstance(step, CliStep):
            lines += [f"# {number}. {step.title}", step.command(moto_port, dynamodb_port, clock_file), ""]
        else:
            lines += [f"# {number}. {step.title}  -> {step.expected_status}", step.curl(api_url), ""]
    lines += [
        "# A technician may manage workspaces but not billing (-> 403):",
        f"curl -s -w '\\n%{{http_code}}\\n' {api_url}/plan -H \"Authorization: {demo.technician_token}\"",
        "",
        "# A token for any partner and role:",
        "#   .venv/bin/msp-billing dev-token --partner <id> --role owner|billing-admin|technician",
    ]
    return "\n".join(lines)

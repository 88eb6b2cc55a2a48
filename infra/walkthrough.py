"""The demo partner seeded by `msp-billing up`, and the curl walk-through printed for it."""

from __future__ import annotations

import shlex
import uuid
from dataclasses import dataclass
from pathlib import Path

from billing_core.domain.identity import PartnerIdentity, Role
from billing_core.schemas import CreateWorkspaceRequest
from billing_core.wiring import services
from infra.dev_tokens import development_token


@dataclass(frozen=True)
class AgentStep:
    """A metering agent reporting devices: a shell command, not an HTTP call."""

    title: str
    workspace_id: str
    device_ids: tuple[str, ...]

    def command(self, moto_port: int, dynamodb_port: int, clock_file: Path) -> str:
        # The stack's own ports and clock file: an in-memory stack starts at today on a clock of its own,
        # whatever an earlier demo left in the default one; --wait reads the meter's verdict in DynamoDB.
        devices = " ".join(f"--device {shlex.quote(d)}" for d in self.device_ids)
        return (
            f".venv/bin/msp-billing send-report --moto-port {moto_port} --dynamodb-port {dynamodb_port} "
            f"--clock-file {shlex.quote(str(clock_file))} --workspace {self.workspace_id} {devices} --wait"
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

    def steps(self) -> list[WalkthroughStep | AgentStep]:
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
            AgentStep(
                "A metering agent reports the workspace's devices (SQS -> meter function)",
                self.existing_workspace_id,
                ("laptop-01", "laptop-02", "server-01"),
            ),
            WalkthroughStep("Plan status with this month's seats per workspace", 200, "GET", "/plan"),
        ]


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
    )


def render_walkthrough(demo: DemoPartner, api_url: str, moto_port: int, dynamodb_port: int, clock_file: Path) -> str:
    lines = [
        f"Demo partner {demo.partner_id} is seeded. Try the partner API (expected status after each body):",
        "",
        f"export TOKEN={demo.owner_token}",
        "",
    ]
    for number, step in enumerate(demo.steps(), start=1):
        if isinstance(step, AgentStep):
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

"""`msp-billing`: run the local system and work with it."""

from __future__ import annotations

import os
import signal
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from billing_core.domain.identity import Role
from infra.demo import DEMO_OUTPUT_DIR
from infra.dev_tokens import development_token
from infra.processes import LocalStackError
from infra.stack import DEFAULT_CLOCK_FILE, DEFAULT_DATA_DIR, LocalStack, StackConfig, reset_local_data

app = typer.Typer(
    help="msp-billing on this machine: the billing-lifecycle demo, the local AWS stack, its test clock, "
    "the partner API, development tokens.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
clock_app = typer.Typer(
    help="The local test clock: show it, move it forward (firing what is due).", no_args_is_help=True
)
app.add_typer(clock_app, name="clock")
console = Console()

QUIET_LOG_LEVEL = "WARNING"
ApiPort = Annotated[int, typer.Option(help="Port of the partner API")]
DynamoDBPort = Annotated[int, typer.Option(help="Port of DynamoDB Local")]
MotoPort = Annotated[int, typer.Option(help="Port of the moto server (SQS, S3, SES, Scheduler)")]
ClockFile = Annotated[Path, typer.Option(help="The test clock's file (shared by every process of the stack)")]


def _stack_config(api_port: int, dynamodb_port: int, moto_port: int, data_dir: Path | None) -> StackConfig:
    """A stack to start here: in-memory data (``data_dir`` None) starts empty, so its clock starts at today."""
    clock_file = Path(tempfile.mkdtemp(prefix="msp-clock-")) / "clock.json" if data_dir is None else DEFAULT_CLOCK_FILE
    return StackConfig(
        api_port=api_port, dynamodb_port=dynamodb_port, moto_port=moto_port, data_dir=data_dir, clock_file=clock_file
    )


def _serve_until_stopped(stopping: threading.Event) -> None:
    # Ctrl-C and SIGTERM both end the serving loop (SIGINT explicitly: a shell may start us with it ignored).
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    console.print("\n[bold]Serving. Press Ctrl-C to stop.[/]")
    while not stopping.wait(0.5):
        pass


def _running_stack(dynamodb_port: int, moto_port: int, clock_file: Path) -> LocalStack:
    """A handle on a stack another `msp-billing` process runs: its ports, its clock, its environment."""
    stack = LocalStack(StackConfig(dynamodb_port=dynamodb_port, moto_port=moto_port, clock_file=clock_file))
    os.environ.update(stack.environment())
    os.environ["POWERTOOLS_LOG_LEVEL"] = QUIET_LOG_LEVEL  # the functions' JSON logs would bury the CLI's answer
    return stack


@app.command()
def up(
    api_port: ApiPort = 8080,
    dynamodb_port: DynamoDBPort = 8042,
    moto_port: MotoPort = 5042,
    data_dir: Annotated[Path, typer.Option(help="Where DynamoDB Local keeps its data")] = DEFAULT_DATA_DIR,
    in_memory: Annotated[bool, typer.Option(help="Keep DynamoDB data in memory only")] = False,
    reset: Annotated[bool, typer.Option(help="Delete local data before starting")] = False,
    serve: Annotated[bool, typer.Option(help="Keep serving after the walk-through (--no-serve exits)")] = True,
) -> None:
    """Start the system: DynamoDB Local and the moto server, resources from template.yaml, queue deliveries
    and schedules (fired by the test clock), seed a partner, print a curl walk-through and serve the partner
    API until Ctrl-C."""
    stack = LocalStack(_stack_config(api_port, dynamodb_port, moto_port, None if in_memory else data_dir))
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    started_at = time.monotonic()
    try:
        stack.check_prerequisites()  # before deleting anything: a stack already running on these ports uses it
        if reset and reset_local_data(data_dir, stack.config.clock_file):
            console.print(f"[yellow]Deleted local data in {data_dir}[/]")
        with console.status("Starting DynamoDB Local and the moto server…"):
            created = stack.start()
        console.print(
            f"[green]✓[/] DynamoDB Local on {stack.dynamodb.endpoint_url} "
            f"({'in memory' if in_memory else data_dir}); moto server on {stack.moto_url}"
        )
        console.print(f"[green]✓[/] Resources from template.yaml: {_describe_created(created)}")
        api = stack.serve_api()
        pollers = stack.start_event_sources()
        stack.start_schedule_ticker()
        from infra.walkthrough import render_walkthrough, seed_demo_partner

        demo = seed_demo_partner()
        deliveries = ", ".join(f"{p.source.queue_logical_id} -> {p.source.function_logical_id}" for p in pollers)
        console.print(f"[green]✓[/] Queue deliveries from template.yaml: {deliveries or 'none'}")
        console.print(f"[green]✓[/] Partner API on {api.url} (ready in {time.monotonic() - started_at:.1f}s)\n")
        console.print(
            render_walkthrough(demo, api.url, moto_port, stack.config.clock_file), highlight=False, soft_wrap=True
        )
        if serve:
            _serve_until_stopped(stopping)
    except KeyboardInterrupt:
        pass
    except LocalStackError as error:
        console.print(f"[red]error:[/] {error}")
        raise typer.Exit(code=2) from None
    finally:
        stack.stop()
        console.print("Stopped the local stack.")


@app.command("dev-token")
def dev_token(
    partner: Annotated[str, typer.Option(help="Partner id the token speaks for")],
    role: Annotated[Role, typer.Option(help="The user's role")] = Role.OWNER,
) -> None:
    """Print a development token (Authorization header value) for the local partner API."""
    print(development_token(partner, role))


@app.command("send-report")
def send_report(
    workspace: Annotated[str, typer.Option(help="Workspace id the devices were seen in")],
    device: Annotated[list[str], typer.Option(help="A device id (repeat for each device)")],
    moto_port: Annotated[int, typer.Option(help="Port of the running local stack's moto server")] = 5042,
    wait: Annotated[bool, typer.Option(help="Wait until the meter function has consumed the queue")] = False,
    clock_file: ClockFile = DEFAULT_CLOCK_FILE,
) -> None:
    """Send a daily report (metering message schema v1) to the local metering queue, as an agent would."""
    from infra.agent import send_daily_report, wait_until_consumed
    from infra.local_clock import LocalClock

    # Seen "now" on the test clock, so a report after `clock advance` belongs to the advanced day.
    message_id = send_daily_report(moto_port, workspace, device, LocalClock(clock_file).now())
    console.print(f"sent daily report {message_id} with {len(device)} device(s) for {workspace}")
    if wait:
        wait_until_consumed(moto_port)
        console.print("consumed by the meter function")


@app.command("charge")
def charge_month(
    month: Annotated[str | None, typer.Option(help="Month to charge, YYYY-MM (default: last month, UTC)")] = None,
    dynamodb_port: DynamoDBPort = 8042,
    moto_port: MotoPort = 5042,
    clock_file: ClockFile = DEFAULT_CLOCK_FILE,
) -> None:
    """Start a monthly charge run on the running local stack (as the schedule does on the 1st): one charge
    message per live plan, which the stack delivers to the charge worker. Re-running a month is harmless."""
    from billing_core.domain.errors import BillingError, InvalidRequest

    stack = _running_stack(dynamodb_port, moto_port, clock_file)
    try:
        result = stack.invoke("MonthlyRunDispatcherFunction", {"month": month} if month else {})
    except (BillingError, ValueError) as error:  # a month not ended yet, or not YYYY-MM
        problems = error.problems if isinstance(error, InvalidRequest) else []
        console.print(f"[red]error:[/] {'; '.join(f'{p.field}: {p.message}' for p in problems) or error}")
        raise typer.Exit(code=2) from None
    console.print(f"queued {result['partners']} partner(s) for {result['month']}")


@app.command()
def reset(
    data_dir: Annotated[Path, typer.Option(help="DynamoDB Local data folder")] = DEFAULT_DATA_DIR,
    clock_file: ClockFile = DEFAULT_CLOCK_FILE,
) -> None:
    """Delete local DynamoDB data and the test clock (the next start is empty and at today)."""
    console.print("Deleted local data." if reset_local_data(data_dir, clock_file) else "No local data to delete.")


@app.command()
def demo(
    partners: Annotated[int, typer.Option(min=1, max=200, help="How many partners (5 tell every story)")] = 5,
    months: Annotated[int, typer.Option(min=2, max=12, help="Months to pass on the clock")] = 3,
    seed: Annotated[int, typer.Option(help="Seed of the simulated agents (same seed, same story)")] = 2026,
    fresh: Annotated[
        bool, typer.Option("--fresh/--keep-data", help="Start from empty local data and today, or go on from them")
    ] = True,
    serve: Annotated[bool, typer.Option(help="Keep serving the API afterwards (--no-serve exits)")] = True,
    in_memory: Annotated[bool, typer.Option(help="Keep DynamoDB data in memory only")] = False,
    verbose: Annotated[bool, typer.Option(help="Show the functions' JSON logs (INFO)")] = False,
    output_dir: Annotated[Path, typer.Option(help="Where the e-mails, usage reports and summary go")] = DEMO_OUTPUT_DIR,
    api_port: ApiPort = 8080,
    dynamodb_port: DynamoDBPort = 8042,
    moto_port: MotoPort = 5042,
) -> None:
    """Run the whole billing lifecycle on this machine: partners activate, agents report devices daily, months
    pass on the test clock with the monthly runs firing from the schedule, a declined payment is retried,
    one partner cancels, one cancels and reactivates. Prints the invoices (checked against the agents'
    ground truth) and where the e-mails and usage reports are, then serves the partner API."""
    from infra.demo import BillingDemo, DemoFailure

    stack = LocalStack(_stack_config(api_port, dynamodb_port, moto_port, None if in_memory else DEFAULT_DATA_DIR))
    stack.config.parameter_overrides["LogLevel"] = QUIET_LOG_LEVEL if not verbose else "INFO"
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    started = time.monotonic()
    try:
        stack.check_prerequisites()  # before deleting anything: a stack already running on these ports uses it
        if fresh and not in_memory and reset_local_data(DEFAULT_DATA_DIR, DEFAULT_CLOCK_FILE):
            console.print("[yellow]Started from empty local data (--keep-data keeps it).[/]")
        with console.status("Starting DynamoDB Local, the moto server and the resources of template.yaml…"):
            stack.start()
            api = stack.serve_api()
            stack.start_event_sources()
        console.print(f"[green]✓[/] Local stack up in {time.monotonic() - started:.1f}s; partner API on {api.url}")
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            task = progress.add_task("Simulating days", total=None)

            def report(label: str, done: int, total: int) -> None:
                progress.update(task, completed=done, total=total, description=f"Simulating {label}")

            billing_demo = BillingDemo(
                stack, api.url, partners=partners, months=months, seed=seed, output_dir=output_dir, progress=report
            )
            result = billing_demo.run()
        _print_demo_result(result, time.monotonic() - started)
        if not result.correct:
            raise typer.Exit(code=1)
        if serve:
            stack.start_schedule_ticker()
            _serve_until_stopped(stopping)
    except KeyboardInterrupt:
        pass
    except (LocalStackError, DemoFailure) as error:
        console.print(f"[red]error:[/] {error}")
        raise typer.Exit(code=2) from None
    finally:
        stack.stop()
        console.print("Stopped the local stack.")


def _print_demo_result(result: object, seconds: float) -> None:
    from infra.demo import DemoResult

    assert isinstance(result, DemoResult)
    console.print("\n[bold]Partners[/]")
    for partner in result.partners:
        console.print(f"  {partner.name} ({partner.partner_id}): {partner.story}")
    table = Table(title=f"Invoices ({result.started_at:%Y-%m-%d} to {result.ended_at:%Y-%m-%d} on the test clock)")
    for column in ("partner", "month", "status", "attempts", "seats", "total", "expected", "check"):
        table.add_column(column, justify="right" if column in ("attempts", "seats", "total", "expected") else "left")
    for check in result.checks:
        table.add_row(
            check.partner.name,
            str(check.month),
            check.status,
            str(check.attempts),
            str(check.seats),
            f"{check.total_minor / 100:.2f} USD",
            f"{check.expected_minor / 100:.2f} USD",
            "[green]✓[/]" if check.matches else "[red]✗[/]",
        )
    console.print(table)
    for partner in result.partners:
        if not any(check.partner is partner for check in result.checks):
            console.print(f"  {partner.name}: no billed month yet (its activation month is covered by the fee)")
    for problem in result.unexpected_invoices:
        console.print(f"[red]✗ {problem}[/]")
    verdict = "[green]every invoice matches the agents' ground truth[/]" if result.correct else "[red]MISMATCH[/]"
    console.print(f"{len(result.checks)} invoices, {len(result.fired)} schedule firings: {verdict}")
    if result.emails:
        console.print(f"E-mails ({len(result.emails)}, .eml): {result.emails[0].parent}")
    if result.reports:
        console.print(f"Usage reports ({len(result.reports)}, CSV): {result.reports[0].parents[1]}")
    console.print(f"Ground truth and invoices side by side: {result.summary}")
    console.print(f"Demo finished in {seconds:.0f}s of wall time.")


@app.command()
def plan(
    partner: Annotated[str, typer.Option(help="Partner id")],
    dynamodb_port: DynamoDBPort = 8042,
    moto_port: MotoPort = 5042,
    clock_file: ClockFile = DEFAULT_CLOCK_FILE,
) -> None:
    """Show a partner's plan and invoices on the running local stack."""
    _running_stack(dynamodb_port, moto_port, clock_file)
    from billing_core.domain.identity import PartnerIdentity
    from billing_core.wiring import services

    identity = PartnerIdentity(partner, Role.OWNER, "msp-billing-cli")
    status = services().activation.plan_status(identity)
    console.print(
        f"[bold]{partner}[/]: {status.state}"
        + (f", ends on {status.cancellation_ends_on}" if status.cancellation_ends_on else "")
        + (f", ended on {status.ended_on}" if status.ended_on else "")
        + (f", next charge {status.next_charge_date}" if status.next_charge_date else "")
    )
    table = Table("month", "status", "total", "attempts", "paid at")
    for invoice in services().history.list_invoices(identity, limit=50, after=None).items:
        table.add_row(
            invoice.month,
            invoice.status,
            invoice.total.display,
            str(invoice.payment_attempts),
            str(invoice.paid_at or ""),
        )
    console.print(table)


@clock_app.command("show")
def clock_show(clock_file: ClockFile = DEFAULT_CLOCK_FILE) -> None:
    """Print the local time of the test clock (UTC)."""
    from infra.local_clock import LocalClock

    console.print(f"{LocalClock(clock_file).now():%Y-%m-%d %H:%M:%S} UTC")


@clock_app.command("advance")
def clock_advance(
    to: Annotated[datetime | None, typer.Option(help="Target time (UTC), e.g. 2027-01-01 or 2027-01-01T00:10")] = None,
    next_first: Annotated[
        bool, typer.Option("--next-first", help="To 00:10 UTC on the next 1st (after the run)")
    ] = False,
    days: Annotated[int, typer.Option(help="Forward by this many days")] = 0,
    dynamodb_port: DynamoDBPort = 8042,
    moto_port: MotoPort = 5042,
    clock_file: ClockFile = DEFAULT_CLOCK_FILE,
) -> None:
    """Move the test clock forward on the running local stack, firing everything due on the way in order
    (the monthly runs, the end-of-plan schedules); queued work is consumed before the next firing."""
    from billing_core.domain.calendar import BillingMonth

    stack = _running_stack(dynamodb_port, moto_port, clock_file)
    now = stack.clock.now()
    if sum((to is not None, next_first, days > 0)) != 1:
        raise typer.BadParameter("give exactly one of --to, --next-first, --days")
    if to is not None:
        target = to.replace(tzinfo=UTC) if to.tzinfo is None else to.astimezone(UTC)
    elif next_first:
        target = BillingMonth.containing(now).next().starts_at + timedelta(minutes=10)
    else:
        target = now + timedelta(days=days)
    if target <= now:
        console.print(
            f"[red]error:[/] the local clock is already at {now:%Y-%m-%d %H:%M:%S} UTC; it only moves forward"
        )
        raise typer.Exit(code=2)
    try:
        with console.status(f"Advancing to {target:%Y-%m-%d %H:%M} UTC…"):
            fired = stack.schedules().advance_to(target)
    except ValueError as error:
        console.print(f"[red]error:[/] {error}")
        raise typer.Exit(code=2) from None
    for entry in fired:
        console.print(f"  fired {entry}")
    console.print(f"The local clock is at {stack.clock.now():%Y-%m-%d %H:%M:%S} UTC ({len(fired)} firing(s)).")


def _describe_created(created: dict[str, list[str]]) -> str:
    parts = [f"{len(names)} {kind} created" for kind, names in created.items() if names]
    return ", ".join(parts) if parts else "all present already"


def main() -> None:
    app()

"""`msp-billing`: run the local system and work with it."""

from __future__ import annotations

import logging
import os
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from botocore.exceptions import ConnectionError as BotocoreConnectionError
from botocore.exceptions import HTTPClientError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from billing_core.domain.identity import Role
from infra.demo import DEMO_OUTPUT_DIR
from infra.dev_tokens import development_token
from infra.processes import LocalStackError
from infra.stack import DEFAULT_CLOCK_FILE, DEFAULT_DATA_DIR, LocalStack, StackConfig, reset_local_data

if TYPE_CHECKING:
    from infra.agent import SentReport

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
catalog_app = typer.Typer(
    help="The vendor's price lists on the running local stack: load (publish) one, show them.", no_args_is_help=True
)
app.add_typer(catalog_app, name="catalog")
console = Console()

QUIET_LOG_LEVEL = "WARNING"
ApiPort = Annotated[int, typer.Option(help="Port of the partner API")]
DynamoDBPort = Annotated[int, typer.Option(help="Port of DynamoDB Local")]
MotoPort = Annotated[int, typer.Option(help="Port of the moto server (SQS, S3, SES, Scheduler)")]
ClockFile = Annotated[Path, typer.Option(help="The test clock's file (shared by every process of the stack)")]
Verbose = Annotated[bool, typer.Option(help="Show the functions' JSON logs (INFO)")]
# Exit codes: 1 the answer is "no" (an unknown partner, a rejected report), 2 the command could not run.
EXIT_NO = 1
EXIT_CANNOT_RUN = 2
# A report the meter recorded this long after it was observed was stamped by a clock behind the stack's.
STALE_REPORT = timedelta(hours=1)


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


def _fail(message: str, code: int = EXIT_CANNOT_RUN) -> NoReturn:
    """One line (never wrapped, whatever the terminal's width), then exit."""
    console.print(f"[red]error:[/] {escape(message)}", soft_wrap=True, highlight=False)
    raise typer.Exit(code=code)


def _no_stack(what: str) -> NoReturn:
    _fail(f"no local stack is running ({what} does not answer); start one with `make up` or `make serve`")


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return False
    return True


def _require_answering(dynamodb_port: int | None, moto_port: int | None) -> None:
    """Probe the stack's ports before calling it: a stopped stack is one clear line, not a botocore retry loop
    ending in a traceback."""
    for name, port in (("DynamoDB Local", dynamodb_port), ("the moto server", moto_port)):
        if port is not None and not _answers(port):
            _no_stack(f"{name} on 127.0.0.1:{port}")


@contextmanager
def _stack_calls() -> Iterator[None]:
    """A stack that stops while a command talks to it, or a port that answers but is not the stack
    (PynamoDB and the functions wrap botocore's error)."""
    try:
        yield
    except Exception as error:
        cause: BaseException | None = error
        while cause is not None and not isinstance(cause, BotocoreConnectionError | HTTPClientError):
            cause = cause.__cause__ or cause.__context__
        if not isinstance(cause, BotocoreConnectionError | HTTPClientError):
            raise
        _no_stack(str(cause.kwargs.get("endpoint_url", "the local stack")))


def _function_logs(verbose: bool) -> None:
    """The functions this process invokes log JSON through Powertools' logger, created (at INFO) when the
    CLI imported the stack; by default only their warnings and errors pass. The local runtime's own
    warnings (a firing that failed, messages still queued) are one plain line each on stderr."""
    from billing_core.observability import logger

    level = "INFO" if verbose else QUIET_LOG_LEVEL
    os.environ["POWERTOOLS_LOG_LEVEL"] = level  # for a logger created later
    logger.setLevel(level)
    if not verbose:
        local = logging.getLogger("msp-billing.local")
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        local.addHandler(handler)
        local.setLevel(logging.WARNING)
        local.propagate = False  # not through the JSON handler of the "msp-billing" logger


def _running_stack(dynamodb_port: int, moto_port: int, clock_file: Path, *, verbose: bool = False) -> LocalStack:
    """A handle on a stack another `msp-billing` process runs: its ports, its clock, its environment.
    Exits with one line if the stack does not answer."""
    _require_answering(dynamodb_port, moto_port)
    stack = LocalStack(StackConfig(dynamodb_port=dynamodb_port, moto_port=moto_port, clock_file=clock_file))
    os.environ.update(stack.environment())
    _function_logs(verbose)  # the functions' JSON logs would bury the CLI's answer
    return stack


def _moment(value: datetime) -> str:
    """A moment as the CLI shows it: to the minute, in UTC."""
    return f"{value.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


def _day(value: date) -> str:
    return value.isoformat()


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
            render_walkthrough(demo, api.url, moto_port, dynamodb_port, stack.config.clock_file),
            highlight=False,
            soft_wrap=True,
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
    dynamodb_port: Annotated[
        int, typer.Option(help="Port of the running local stack's DynamoDB Local (--wait reads the outcome there)")
    ] = 8042,
    wait: Annotated[
        bool, typer.Option(help="Wait until the meter function has consumed the queue, then say what it made of it")
    ] = False,
    clock_file: ClockFile = DEFAULT_CLOCK_FILE,
    verbose: Annotated[bool, typer.Option(help="Also print the message sent (JSON)")] = False,
) -> None:
    """Send a daily report (metering message schema v1) to the local metering queue, as an agent would. With
    --wait, exits 1 if the meter rejected it (and says why)."""
    from infra.agent import send_daily_report, wait_until_consumed
    from infra.local_clock import LocalClock

    _require_answering(None, moto_port)
    clock = LocalClock(clock_file)
    # Seen "now" on the test clock (the stack's: give its --clock-file), so a report after `clock advance`
    # belongs to the advanced day; a clock ahead of the stack's makes the meter reject it as from the future.
    sent_on = clock.now()
    try:
        with _stack_calls():
            report = send_daily_report(moto_port, workspace, device, sent_on)
            console.print(
                f"sent daily report {report.message_id} with {len(device)} device(s) for {workspace}, "
                f"observed at {_moment(report.observed_at)} on the test clock",
                soft_wrap=True,
                highlight=False,
                markup=False,
            )
            if verbose:
                console.print(report.body, soft_wrap=True, highlight=False, markup=False)
            if not wait:
                return
            wait_until_consumed(moto_port)
    except LocalStackError as error:
        _fail(str(error))
    _print_report_outcome(report, dynamodb_port, [sent_on.date(), clock.now().date(), datetime.now(UTC).date()])


def _print_report_outcome(report: SentReport, dynamodb_port: int, meter_days: list[date]) -> None:
    from infra.agent import report_outcome

    try:
        if not _answers(dynamodb_port):
            raise LocalStackError(f"DynamoDB Local on 127.0.0.1:{dynamodb_port} does not answer")
        outcome = report_outcome(dynamodb_port, report, meter_days)
    except LocalStackError as error:
        # Consumed all the same: `up` prints this command without --dynamodb-port, whatever its port.
        console.print(
            f"consumed by the meter function; not checked whether it was counted ({error}; "
            "give the stack's --dynamodb-port)",
            soft_wrap=True,
            highlight=False,
            markup=False,
        )
        return
    if outcome.rejection is not None:
        future = "ahead of the server clock" in outcome.rejection
        hint = " (is --clock-file the running stack's clock file?)" if future else ""
        _fail(f"the meter rejected the report: {outcome.rejection}{hint}", EXIT_NO)
    if not outcome.found:
        console.print(
            f"consumed by the meter function, but DynamoDB Local on 127.0.0.1:{dynamodb_port} holds no record of it "
            "(is --dynamodb-port the running stack's?)",
            soft_wrap=True,
            highlight=False,
            markup=False,
        )
        return
    counts: dict[str, int] = {}
    for billability in [*outcome.counted_now.values(), *outcome.counted_before.values()]:
        counts[billability] = counts.get(billability, 0) + 1
    described = {
        "billable": "billable",
        "late": "billable as late usage (its month was already charged)",
        "not_on_plan": "not billable (the workspace is not on the plan)",
        "unknown_workspace": f"not billable (no workspace {report.workspace_id} is known)",
    }
    month = f"{report.observed_at.astimezone(UTC):%Y-%m}"
    parts = [f"{count} device(s) {described.get(kind, kind)}" for kind, count in sorted(counts.items())]
    already = f"; {len(outcome.counted_before)} of them already recorded earlier" if outcome.counted_before else ""
    verdict = "counted it" if {"billable", "late"} & set(counts) else "accepted it but counts no seat"
    console.print(
        f"the meter {verdict} for {month}: {', '.join(parts)}{already}", soft_wrap=True, highlight=False, markup=False
    )
    if outcome.recorded_at is not None and outcome.recorded_at - report.observed_at > STALE_REPORT:
        console.print(
            f"[yellow]note:[/] observed at {_moment(report.observed_at)}, but the meter's clock read "
            f"{_moment(outcome.recorded_at)}: is --clock-file the running stack's clock file?",
            soft_wrap=True,
            highlight=False,
        )


@app.command("charge")
def charge_month(
    month: Annotated[str | None, typer.Option(help="Month to charge, YYYY-MM (default: last month, UTC)")] = None,
    dynamodb_port: DynamoDBPort = 8042,
    moto_port: MotoPort = 5042,
    clock_file: ClockFile = DEFAULT_CLOCK_FILE,
    verbose: Verbose = False,
) -> None:
    """Start a monthly charge run on the running local stack (as the schedule does on the 1st): one charge
    message per live plan, which the stack delivers to the charge worker. Re-running a month is harmless."""
    from billing_core.domain.errors import BillingError, InvalidRequest

    stack = _running_stack(dynamodb_port, moto_port, clock_file, verbose=verbose)
    try:
        with _stack_calls():
            result = stack.invoke("MonthlyRunDispatcherFunction", {"month": month} if month else {})
    except (BillingError, ValueError) as error:  # a month not ended yet, or not YYYY-MM
        problems = error.problems if isinstance(error, InvalidRequest) else []
        _fail("; ".join(f"{p.field}: {p.message}" for p in problems) or str(error))
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
    for column in ("partner", "month", "status", "attempts", "seats", "licences", "total", "expected", "check"):
        numeric = column in ("attempts", "seats", "licences", "total", "expected")
        table.add_column(column, justify="right" if numeric else "left")
    for check in result.checks:
        table.add_row(
            check.partner.name,
            str(check.month),
            check.status,
            str(check.attempts),
            str(check.seats),
            f"{check.licences_minor / 100:.2f}" if check.licences_minor else "",
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
    verbose: Verbose = False,
) -> None:
    """Show a partner's plan and invoices on the running local stack (dates in UTC). Exits 1 for a partner
    that never activated the monthly billing option."""
    _running_stack(dynamodb_port, moto_port, clock_file, verbose=verbose)
    from billing_core.domain.identity import PartnerIdentity
    from billing_core.domain.plan import PlanState
    from billing_core.wiring import services

    identity = PartnerIdentity(partner, Role.OWNER, "msp-billing-cli")
    with _stack_calls():
        status = services().activation.plan_status(identity)
        if status.state == PlanState.INACTIVE and status.activated_at is None:
            workspaces = len(services().store.list_workspaces(partner))
            _fail(
                f"partner {partner} never activated the monthly billing option"
                + (f" (it has {workspaces} workspace(s))" if workspaces else " (no plan, no workspaces)"),
                EXIT_NO,
            )
        invoices = services().history.list_invoices(identity, limit=50, after=None).items
    console.print(
        f"[bold]{escape(partner)}[/]: {status.state.replace('_', ' ')}"
        + (f" (activated {_moment(status.activated_at)})" if status.activated_at else "")
        + (f", ends on {_day(status.cancellation_ends_on)}" if status.cancellation_ends_on else "")
        + (f", ended on {_day(status.ended_on)}" if status.ended_on else "")
        + (f", next charge {_day(status.next_charge_date)}" if status.next_charge_date else ""),
        soft_wrap=True,
        highlight=False,
    )
    if not invoices:
        console.print("no invoices yet")
        return
    table = Table("month", "status", "total", "attempts", "paid at", "next retry", highlight=False)
    for invoice in invoices:
        table.add_row(
            invoice.month,
            invoice.status.replace("_", " "),
            invoice.total.display,
            str(invoice.payment_attempts),
            _moment(invoice.paid_at) if invoice.paid_at else "",
            _day(invoice.next_retry_on) if invoice.next_retry_on else "",
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
    verbose: Verbose = False,
) -> None:
    """Move the test clock forward on the running local stack, firing everything due on the way in order
    (the monthly runs, the end-of-plan schedules); queued work is consumed before the next firing."""
    from billing_core.domain.calendar import BillingMonth

    if sum((to is not None, next_first, days > 0)) != 1:
        raise typer.BadParameter("give exactly one of --to, --next-first, --days")
    stack = _running_stack(dynamodb_port, moto_port, clock_file, verbose=verbose)
    now = stack.clock.now()
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
        with _stack_calls(), console.status(f"Advancing to {target:%Y-%m-%d %H:%M} UTC…"):
            fired = stack.schedules().advance_to(target)
    except ValueError as error:
        _fail(str(error))
    for entry in fired:
        console.print(f"  fired {entry}", soft_wrap=True, highlight=False)
    console.print(f"The local clock is at {stack.clock.now():%Y-%m-%d %H:%M:%S} UTC ({len(fired)} firing(s)).")


@catalog_app.command("load")
def catalog_load(
    file: Annotated[
        Path, typer.Argument(help="A price-list document (YAML or JSON), e.g. catalog/price-list-2026-01.yaml")
    ],
    dynamodb_port: DynamoDBPort = 8042,
    moto_port: MotoPort = 5042,
    clock_file: ClockFile = DEFAULT_CLOCK_FILE,
) -> None:
    """Validate a price list and publish it on the running local stack. Loading the same file again changes
    nothing; a published version is never rewritten (publish a new version with a later effective_from)."""
    from billing_core.adapters.dynamodb.catalog import DynamoCatalogStore
    from billing_core.domain.errors import Conflict, InvalidRequest
    from billing_core.wiring import services
    from infra.catalog import PriceListFileError, read_price_list_document

    try:
        document = read_price_list_document(file)
    except PriceListFileError as error:
        _fail(str(error))
    stack = _running_stack(dynamodb_port, moto_port, clock_file)
    with _stack_calls():
        services()  # binds the billing table's models
        try:
            published, created = DynamoCatalogStore(services().settings.aws_region).publish(document, stack.clock.now())
        except InvalidRequest as error:
            for problem in error.problems:
                console.print(f"  {problem.field}: {problem.message}", soft_wrap=True, highlight=False, markup=False)
            _fail(
                f"{file} is not a valid price list ({len(error.problems)} problem(s) above); nothing was published",
                EXIT_NO,
            )
        except Conflict as error:
            _fail(str(error), EXIT_NO)
    verb = "published" if created else "already published with the same content, unchanged:"
    console.print(
        f"{verb} price list {published.version}, in effect from {_day(published.effective_from)}",
        soft_wrap=True,
        highlight=False,
    )


@catalog_app.command("show")
def catalog_show(
    dynamodb_port: DynamoDBPort = 8042,
    moto_port: MotoPort = 5042,
    clock_file: ClockFile = DEFAULT_CLOCK_FILE,
    version: Annotated[str | None, typer.Option(help="Print this version's document (YAML)")] = None,
) -> None:
    """List the published price lists (which one is in effect today), or print one version's document."""
    import yaml

    from billing_core.adapters.dynamodb.catalog import DynamoCatalogStore
    from billing_core.wiring import services

    stack = _running_stack(dynamodb_port, moto_port, clock_file)
    with _stack_calls():
        services()
        published = DynamoCatalogStore(services().settings.aws_region).published()
    if version is not None:
        chosen = next((p for p in published if p.version == version), None)
        if chosen is None:
            _fail(
                f"no price list {version} is published; published: {', '.join(p.version for p in published) or 'none'}",
                EXIT_NO,
            )
        print(yaml.safe_dump(chosen.document, sort_keys=False, allow_unicode=True, default_flow_style=None), end="")
        return
    if not published:
        _fail("no price list is published yet: load one with `msp-billing catalog load FILE`", EXIT_NO)
    today = stack.clock.now().date()
    in_effect = max(
        (p for p in published if p.effective_from <= today), key=lambda p: p.effective_from, default=published[0]
    )
    table = Table("version", "in effect from", "published at", "products", "SKUs", "promotions", "", highlight=False)
    for entry in published:
        document = entry.document
        table.add_row(
            entry.version,
            _day(entry.effective_from),
            _moment(entry.published_at),
            str(len(document.get("products", []))),
            str(sum(len(p.get("skus", [])) for p in document.get("products", []))),
            str(len(document.get("promotions", []))),
            "in effect today" if entry is in_effect else "",
        )
    console.print(table)


def _describe_created(created: dict[str, list[str]]) -> str:
    parts = [f"{len(names)} {kind} created" for kind, names in created.items() if names]
    return ", ".join(parts) if parts else "all present already"


def main() -> None:
    app()

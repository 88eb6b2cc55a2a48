"""`msp-billing`: run the local system and work with it."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from billing_core.domain.identity import Role
from infra.dev_tokens import development_token
from infra.processes import LocalStackError
from infra.stack import DEFAULT_DATA_DIR, LocalStack, StackConfig, reset_local_data

app = typer.Typer(
    help="msp-billing on this machine: local AWS stack, partner API, development tokens.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
console = Console()


@app.command()
def up(
    api_port: Annotated[int, typer.Option(help="Port of the partner API")] = 8080,
    dynamodb_port: Annotated[int, typer.Option(help="Port of DynamoDB Local")] = 8042,
    moto_port: Annotated[int, typer.Option(help="Port of the moto server (SQS, S3, SES, Scheduler)")] = 5042,
    data_dir: Annotated[Path, typer.Option(help="Where DynamoDB Local keeps its data")] = DEFAULT_DATA_DIR,
    in_memory: Annotated[bool, typer.Option(help="Keep DynamoDB data in memory only")] = False,
    reset: Annotated[bool, typer.Option(help="Delete local data before starting")] = False,
    serve: Annotated[bool, typer.Option(help="Keep serving after the walk-through (--no-serve exits)")] = True,
) -> None:
    """Start DynamoDB Local and the moto server, create resources from template.yaml, seed a demo
    partner, print a curl walk-through and serve the partner API until Ctrl-C."""
    if reset and reset_local_data(data_dir):
        console.print(f"[yellow]Deleted local data in {data_dir}[/]")
    config = StackConfig(
        api_port=api_port, dynamodb_port=dynamodb_port, moto_port=moto_port, data_dir=None if in_memory else data_dir
    )
    stack = LocalStack(config)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    started_at = time.monotonic()
    try:
        with console.status("Starting DynamoDB Local and the moto server…"):
            created = stack.start()
        console.print(
            f"[green]✓[/] DynamoDB Local on {stack.dynamodb.endpoint_url} "
            f"({'in memory' if in_memory else data_dir}); moto server on {stack.moto_url}"
        )
        console.print(f"[green]✓[/] Resources from template.yaml: {_describe_created(created)}")
        api = stack.serve_api()
        pollers = stack.start_event_sources()
        from infra.walkthrough import render_walkthrough, seed_demo_partner

        demo = seed_demo_partner()
        deliveries = ", ".join(f"{p.source.queue_logical_id} -> {p.source.function_logical_id}" for p in pollers)
        console.print(f"[green]✓[/] Queue deliveries from template.yaml: {deliveries or 'none'}")
        console.print(f"[green]✓[/] Partner API on {api.url} (ready in {time.monotonic() - started_at:.1f}s)\n")
        console.print(render_walkthrough(demo, api.url, moto_port), highlight=False, soft_wrap=True)
        if serve:
            # Ctrl-C and SIGTERM both end the serving loop (SIGINT explicitly: a shell may start us with it ignored).
            signal.signal(signal.SIGINT, lambda *_: stopping.set())
            console.print("\n[bold]Serving. Press Ctrl-C to stop.[/]")
            while not stopping.wait(0.5):
                pass
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
) -> None:
    """Send a daily report (metering message schema v1) to the local metering queue, as an agent would."""
    from infra.agent import send_daily_report, wait_until_consumed

    message_id = send_daily_report(moto_port, workspace, device)
    console.print(f"sent daily report {message_id} with {len(device)} device(s) for {workspace}")
    if wait:
        wait_until_consumed(moto_port)
        console.print("consumed by the meter function")


@app.command("charge")
def charge_month(
    month: Annotated[str | None, typer.Option(help="Month to charge, YYYY-MM (default: last month, UTC)")] = None,
    dynamodb_port: Annotated[int, typer.Option(help="Port of the running stack's DynamoDB Local")] = 8042,
    moto_port: Annotated[int, typer.Option(help="Port of the running stack's moto server")] = 5042,
) -> None:
    """Start a monthly charge run on the running local stack (as the schedule does on the 1st): one charge
    message per live plan, which the stack delivers to the charge worker. Re-running a month is harmless."""
    from infra.stack import LocalStack, StackConfig

    stack = LocalStack(StackConfig(dynamodb_port=dynamodb_port, moto_port=moto_port))
    os.environ.update(stack.environment())
    result = stack.invoke("MonthlyRunDispatcherFunction", {"month": month} if month else {})
    console.print(f"queued {result['partners']} partner(s) for {result['month']}")


@app.command()
def reset(data_dir: Annotated[Path, typer.Option(help="DynamoDB Local data folder")] = DEFAULT_DATA_DIR) -> None:
    """Delete local DynamoDB data (the next `up` starts empty)."""
    console.print("Deleted local data." if reset_local_data(data_dir) else "No local data to delete.")


def _describe_created(created: dict[str, list[str]]) -> str:
    parts = [f"{len(names)} {kind} created" for kind, names in created.items() if names]
    return ", ".join(parts) if parts else "all present already"


def main() -> None:
    app()

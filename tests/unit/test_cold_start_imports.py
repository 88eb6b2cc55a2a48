"""Importing a handler module (what a Lambda cold start does) loads only what that function uses.

Each handler module is imported in a fresh interpreter and the test looks at ``sys.modules``, not at times
(``make bench-import`` measures those): a regression of the import structure shows here in a few seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from infra import PROJECT_ROOT

# Never loaded by importing a handler: pydantic-settings (settings are a plain model), asyncio and Powertools'
# batch utility and event data classes (billing_core.sqs_batch answers SQS batches), the parser models, and
# anything that talks to AWS or a payment provider (the wiring builds adapters on first use).
NEVER = (
    "pydantic_settings",
    "asyncio",
    "aws_lambda_powertools.utilities.batch",
    "aws_lambda_powertools.utilities.data_classes",
    "aws_lambda_powertools.utilities.parser",
    "aws_lambda_powertools.utilities.idempotency",
    "boto3",
    "stripe",
    "pynamodb.connection",
)
API_ONLY = ("chalice", "billing_core.api", "billing_core.schemas", "billing_core.subscription_schemas")

# (function directory, handler module, whether it serves the partner API, the services it may import).
HANDLERS = (
    ("activate", "app", True, ()),
    ("workspaces", "app", True, ()),
    ("portal", "app", True, ("history", "views")),  # MAX_PAGE_SIZE, which the route validates
    ("cancel", "app", True, ()),
    ("cancel", "finaliser", False, ()),
    ("meter", "app", False, ("metering",)),  # InboundMessage, what the handler hands the service
    ("monthly_charge", "app", False, ()),
    ("subscriptions", "app", True, ()),
)


def modules_loaded_by(directory: str, module: str) -> set[str]:
    environment = os.environ | {"PYTHONPATH": str(PROJECT_ROOT / "src")}
    result = subprocess.run(
        [sys.executable, "-c", f"import json, sys\nimport {module}\nprint(json.dumps(sorted(sys.modules)))"],
        cwd=PROJECT_ROOT / "functions" / directory,
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )
    return set(json.loads(result.stdout))


def loaded(modules: set[str], name: str) -> bool:
    return any(module == name or module.startswith(name + ".") for module in modules)


@pytest.mark.parametrize(("directory", "module", "serves_api", "services_used"), HANDLERS)
def test_a_handler_import_loads_only_what_its_function_uses(
    directory: str, module: str, serves_api: bool, services_used: tuple[str, ...]
) -> None:
    modules = modules_loaded_by(directory, module)

    assert [name for name in NEVER if loaded(modules, name)] == []
    # No adapter before first use; the API's error mapping needs only the retryable DynamoDB codes.
    adapters = {name for name in modules if name.startswith("billing_core.adapters.")}
    assert adapters <= {"billing_core.adapters.dynamodb", "billing_core.adapters.dynamodb.retryable"}
    # No other function's service.
    services = {
        name.removeprefix("billing_core.services.") for name in modules if name.startswith("billing_core.services.")
    }
    assert services <= set(services_used)
    if not serves_api:
        assert [name for name in API_ONLY if loaded(modules, name)] == []
    if directory != "subscriptions":
        assert "billing_core.subscription_schemas" not in modules

"""The local stack for integration tests: DynamoDB Local (in memory) and the moto server on free
loopback ports, tables created from template.yaml, started once per test session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from chalice.app import Chalice
from chalice.test import Client

from billing_core.settings import BillingSettings
from billing_core.wiring import services
from infra.local_api import composed_partner_api
from infra.processes import free_port
from infra.stack import LocalStack, StackConfig


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    stack = LocalStack(
        StackConfig(
            dynamodb_port=free_port(),
            moto_port=free_port(),
            api_port=free_port(),
            data_dir=None,
            stack_name="msp-test",
            clock_file=tmp_path_factory.mktemp("clock") / "clock.json",
        )
    )
    stack.start()
    services.cache_clear()  # build the process-wide services from the stack's environment
    yield stack
    stack.stop()


@pytest.fixture(scope="session")
def settings(local_stack: LocalStack) -> BillingSettings:
    return BillingSettings.from_environment()


@pytest.fixture(scope="session")
def partner_api(local_stack: LocalStack) -> Chalice:
    return composed_partner_api(local_stack.template)


@pytest.fixture
def client(partner_api: Chalice) -> Iterator[Client]:
    with Client(partner_api) as test_client:
        yield test_client

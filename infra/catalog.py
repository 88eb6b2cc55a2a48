"""The shipped example price list (`catalog/price-list-2026-01.yaml`) and reading price-list files: the
local stack publishes the example when it starts, as an operator would with `msp-billing catalog load`,
and the demo and the tests read it like any other list."""

from __future__ import annotations

import functools
import logging
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from billing_core.catalog_documents import parse_price_list
from billing_core.domain.pricing import PriceList
from infra import PROJECT_ROOT

EXAMPLE_PRICE_LIST_FILE = PROJECT_ROOT / "catalog" / "price-list-2026-01.yaml"


class PriceListFileError(ValueError):
    """The file cannot be read or is not a price-list document (its content is checked on parsing)."""


def read_price_list_document(path: Path) -> dict[str, Any]:
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise PriceListFileError(f"cannot read {path}: {error}") from None
    if not isinstance(document, dict):
        raise PriceListFileError(f"{path} is not a price-list document (a mapping with version, effective_from, ...)")
    return document


@functools.cache
def example_price_list() -> PriceList:
    """The example list as the system bills with it (parsed and validated like any published list)."""
    return parse_price_list(read_price_list_document(EXAMPLE_PRICE_LIST_FILE))[1]


def publish_example_price_list(region: str, now: datetime) -> None:
    """Publish the example list on the billing table the models are bound to (unchanged if it is there). Local
    data kept from an older example keeps its own list: say so, and how to start afresh."""
    from billing_core.adapters.dynamodb.catalog import DynamoCatalogStore
    from billing_core.domain.errors import Conflict

    try:
        DynamoCatalogStore(region).publish(read_price_list_document(EXAMPLE_PRICE_LIST_FILE), now)
    except Conflict as error:
        logging.getLogger("msp-billing.local").warning(
            "kept the price lists already published in the local data (%s); `msp-billing reset` starts afresh", error
        )

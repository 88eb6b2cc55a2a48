"""Published price lists on DynamoDB Local: each version once and never rewritten, one list per effective
day (also when two operators race), and the price book read back from the store."""

from __future__ import annotations

import copy
import threading
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import yaml

from billing_core.adapters.dynamodb.catalog import DynamoCatalogStore, PublishedPriceBook
from billing_core.domain.errors import Conflict, InvalidRequest
from billing_core.settings import BillingSettings
from billing_core.wiring import services
from infra import PROJECT_ROOT
from infra.stack import LocalStack
from tests.helpers import PRICE_LIST_2026_01

pytestmark = pytest.mark.integration
NOW = datetime(2026, 12, 7, 12, tzinfo=UTC)


@pytest.fixture
def store(local_stack: LocalStack, settings: BillingSettings) -> DynamoCatalogStore:
    services()  # binds the billing table's models to the stack's table
    return DynamoCatalogStore(settings.aws_region)


def example(version: str, effective_from: date) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((PROJECT_ROOT / "catalog" / "price-list-2026-01.yaml").read_text())
    return {**document, "version": version, "effective_from": effective_from.isoformat()}


def unique_day() -> date:
    """A day no other test publishes on (the catalog is shared by the whole session)."""
    number = uuid.uuid4().int
    return date(2100 + number % 800, 1 + number // 800 % 12, 1 + number // 9600 % 28)


def test_publishing_the_same_document_again_changes_nothing(store: DynamoCatalogStore) -> None:
    version = f"v-{uuid.uuid4().hex[:8]}"
    document = example(version, unique_day())
    published, created = store.publish(document, NOW)
    assert created and published.version == version
    again, created_again = store.publish(copy.deepcopy(document), datetime(2026, 12, 8, tzinfo=UTC))
    assert not created_again and again.published_at == published.published_at
    assert [p.version for p in store.published()].count(version) == 1


def test_a_published_version_is_never_rewritten(store: DynamoCatalogStore) -> None:
    version = f"v-{uuid.uuid4().hex[:8]}"
    document = example(version, unique_day())
    store.publish(document, NOW)
    changed = copy.deepcopy(document)
    changed["activation_fee"]["USD"] = 1
    with pytest.raises(Conflict) as refused:
        store.publish(changed, NOW)
    assert refused.value.code == "price_list_version_published"
    stored = next(p for p in store.published() if p.version == version)
    assert stored.document["activation_fee"]["USD"] == 1000


def test_one_price_list_per_effective_day(store: DynamoCatalogStore) -> None:
    day = unique_day()
    store.publish(example(f"v-{uuid.uuid4().hex[:8]}", day), NOW)
    with pytest.raises(Conflict) as refused:
        store.publish(example(f"v-{uuid.uuid4().hex[:8]}", day), NOW)
    assert refused.value.code == "effective_day_taken"


def test_a_bad_document_is_refused_naming_the_entry_and_nothing_is_written(store: DynamoCatalogStore) -> None:
    version = f"v-{uuid.uuid4().hex[:8]}"
    document = example(version, unique_day())
    document["products"][0]["skus"][0]["prices"]["P1Y/annual"]["USD"] = "cheap"
    with pytest.raises(InvalidRequest) as refused:
        store.publish(document, NOW)
    assert refused.value.problems[0].field == "products.0.skus.0.prices.P1Y/annual.USD"
    assert version not in [p.version for p in store.published()]


def test_two_operators_racing_on_one_effective_day_cannot_both_win(store: DynamoCatalogStore) -> None:
    day = unique_day()
    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def publish(version: str) -> None:
        barrier.wait()
        try:
            store.publish(example(version, day), NOW)
            outcomes.append("published")
        except Conflict as refused:
            outcomes.append(refused.code)

    threads = [threading.Thread(target=publish, args=(f"v-{uuid.uuid4().hex[:8]}",)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["effective_day_taken", "published"]


def test_the_price_book_prices_each_day_from_the_list_in_effect(store: DynamoCatalogStore) -> None:
    day = unique_day()
    version = f"v-{uuid.uuid4().hex[:8]}"
    store.publish(example(version, day), NOW)
    book = store.price_book()
    assert book.on(day).version == version
    in_effect = book.on(day)
    assert in_effect.licence_prices == PRICE_LIST_2026_01.licence_prices


def test_the_services_see_a_list_published_after_they_started(store: DynamoCatalogStore) -> None:
    elapsed = [0.0]  # real seconds since the book was built
    book = PublishedPriceBook(store, max_age=timedelta(minutes=5), monotonic=lambda: elapsed[0])
    day = unique_day()
    before = book.on(day).version  # loads the book now
    version = f"v-{uuid.uuid4().hex[:8]}"
    store.publish(example(version, day), NOW)
    elapsed[0] = 4 * 60.0
    assert book.on(day).version == before  # read less than five minutes ago
    elapsed[0] = 6 * 60.0
    assert book.on(day).version == version

"""The vendor's price lists on the billing table: each version published once, never rewritten.

Publishing writes the document and a guard item of its effective day in one transaction, both only if
absent: loading the same file again changes nothing, another document under a published version or a
second list for a taken effective day is refused, and two operators racing cannot both win.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from pynamodb.connection import Connection
from pynamodb.exceptions import TransactWriteError
from pynamodb.transactions import TransactWrite

from billing_core.adapters.dynamodb.models import PriceListItem
from billing_core.catalog_documents import document_fingerprint, parse_price_list
from billing_core.domain.errors import Conflict, TransientFailure
from billing_core.domain.pricing import PriceBook, PriceList

CATALOG_PK = "CATALOG"
PUBLISH_ATTEMPTS = 3


@dataclass(frozen=True)
class PublishedPriceList:
    version: str
    effective_from: date
    fingerprint: str
    published_at: datetime
    document: dict[str, Any]


class DynamoCatalogStore:
    def __init__(self, region: str) -> None:
        self._connection = Connection(region=region)

    def publish(self, document: dict[str, Any], now: datetime) -> tuple[PublishedPriceList, bool]:
        """Publish a validated price-list document. Returns it and whether it was new (False: the same
        document was published before, nothing changed). ``InvalidRequest`` for a bad document,
        ``Conflict`` for another document under a published version or a taken effective day."""
        effective_from, prices = parse_price_list(document)
        fingerprint = document_fingerprint(document)
        existing = self._load(prices.version)
        if existing is not None:
            return self._same_or_refuse(existing, fingerprint), False
        item = PriceListItem(
            CATALOG_PK,
            f"PRICELIST#{prices.version}",
            version=prices.version,
            effective_from=effective_from.isoformat(),
            fingerprint=fingerprint,
            document=document,
            published_at=now,
        )
        guard = PriceListItem(
            CATALOG_PK,
            f"EFFECTIVE#{effective_from.isoformat()}",
            version=prices.version,
            effective_from=effective_from.isoformat(),
            fingerprint=fingerprint,
            published_at=now,
        )
        for _ in range(PUBLISH_ATTEMPTS):
            try:
                with TransactWrite(connection=self._connection) as transaction:
                    transaction.save(item, condition=PriceListItem.pk.does_not_exist())
                    transaction.save(guard, condition=PriceListItem.pk.does_not_exist())
                return _published(item), True
            except TransactWriteError:
                raced = self._load(prices.version)
                if raced is not None:  # published meanwhile, by us (a retry) or another operator
                    return self._same_or_refuse(raced, fingerprint), False
                try:
                    taken = PriceListItem.get(guard.pk, guard.sk, consistent_read=True)
                except PriceListItem.DoesNotExist:
                    continue  # a concurrent transaction on the same items was cancelled too: try again
                raise Conflict(
                    f"price list {taken.version} already takes effect on {effective_from}: "
                    "give this one another effective_from",
                    code="effective_day_taken",
                ) from None
        raise TransientFailure(f"publishing price list {prices.version} kept conflicting; try again")

    def published(self) -> list[PublishedPriceList]:
        """Every published price list, by effective day."""
        items = PriceListItem.query(CATALOG_PK, PriceListItem.sk.startswith("PRICELIST#"), consistent_read=True)
        return sorted((_published(item) for item in items), key=lambda p: p.effective_from)

    def price_book(self) -> PriceBook:
        """The price book of every published list (``Conflict`` if none is published yet)."""
        lists = self.published()
        if not lists:
            raise Conflict(
                "no price list is published yet: load one with `msp-billing catalog load`", code="no_price_list"
            )
        return PriceBook(tuple(_price_list_of(published) for published in lists))

    def _load(self, version: str) -> PublishedPriceList | None:
        try:
            return _published(PriceListItem.get(CATALOG_PK, f"PRICELIST#{version}", consistent_read=True))
        except PriceListItem.DoesNotExist:
            return None

    @staticmethod
    def _same_or_refuse(existing: PublishedPriceList, fingerprint: str) -> PublishedPriceList:
        if existing.fingerprint != fingerprint:
            raise Conflict(
                f"price list {existing.version} is published with other content (a published version never "
                "changes): give the new list a new version and a later effective_from",
                code="price_list_version_published",
            )
        return existing


def _published(item: PriceListItem) -> PublishedPriceList:
    return PublishedPriceList(
        version=item.version,
        effective_from=date.fromisoformat(item.effective_from),
        fingerprint=item.fingerprint,
        published_at=item.published_at,
        document=dict(item.document or {}),
    )


def _price_list_of(published: PublishedPriceList) -> tuple[date, PriceList]:
    return parse_price_list(published.document)


class PublishedPriceBook:
    """The published price lists as the services see them: read from the store on first use and again when
    the copy is older than ``max_age`` of real (monotonic) time, so a warm function picks up a list published
    after it started. Real time, not the billing clock: a test clock jumping months ahead says nothing about
    how fresh the copy is. Publish a list at least ``max_age`` before its effective day."""

    def __init__(
        self,
        store: DynamoCatalogStore,
        max_age: timedelta = timedelta(minutes=5),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._max_age_s = max_age.total_seconds()
        self._monotonic = monotonic
        self._book: PriceBook | None = None
        self._loaded_at = 0.0

    def on(self, day: date) -> PriceList:
        now = self._monotonic()
        if self._book is None or now - self._loaded_at > self._max_age_s:
            self._book = self._store.price_book()
            self._loaded_at = now
        return self._book.on(day)

"""A price list as the vendor's own document (YAML or JSON): products, SKUs and add-ons, licence prices
per cycle and currency, edition seat prices (the usage product), the activation fee and promotions.

``parse_price_list`` validates a document and turns it into the domain's ``PriceList`` with the day it
takes effect; every problem is a ``FieldProblem`` naming the entry, e.g. ``products.1.skus.0.prices.P1Y/
monthly.EUR``. ``price_list_document`` is the inverse (what ``catalog show`` prints and the store keeps).
No AWS and no file I/O here: the CLI reads files, the store keeps the validated document.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import date
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from billing_core.domain.catalog import BillingFrequency, Catalog, Cycle, Product, ProductKind, Promotion, Sku, Term
from billing_core.domain.errors import FieldProblem, InvalidRequest
from billing_core.domain.pricing import SEAT_CYCLE, PriceList

Code = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")]
PromotionCode = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
MinorUnits = Annotated[int, Field(ge=0, le=10**12, strict=True)]
Name = Annotated[str, Field(min_length=1, max_length=200)]


class DocumentModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SkuDocument(DocumentModel):
    code: Code
    name: Name
    add_on_for: list[Code] = Field(default_factory=list, description="Base SKUs this add-on may be bought with")
    trial: bool = False
    prices: dict[str, dict[Currency, MinorUnits]] = Field(
        description="Per cycle ('P1Y/monthly'): the price of one unit for one billing period, per currency"
    )


class ProductDocument(DocumentModel):
    code: Code
    name: Name
    kind: Literal["licence", "usage"] = Field(
        default="licence",
        description="usage: the monthly plan (its SKUs are the editions, a seat priced per P1M/monthly); "
        "licence: subscriptions with a term",
    )
    skus: list[SkuDocument] = Field(min_length=1)


class PromotionDocument(DocumentModel):
    code: PromotionCode
    description: Name
    skus: list[Code] = Field(min_length=1)
    cycles: list[str] = Field(min_length=1)
    percent_off_basis_points: int = Field(ge=1, le=10_000, strict=True, description="2000 = 20 %")
    starts_on: date
    ends_on: date


class PriceListDocument(DocumentModel):
    version: str = Field(pattern=r"^[0-9A-Za-z][0-9A-Za-z._-]{0,31}$")
    effective_from: date = Field(description="First day (UTC) periods are priced from this list")
    activation_fee: dict[Currency, MinorUnits] = Field(
        min_length=1, description="Per currency; its keys are the currencies"
    )
    products: list[ProductDocument] = Field(default_factory=list)
    promotions: list[PromotionDocument] = Field(default_factory=list)


def _parse_cycle(text: str, where: str, problems: list[FieldProblem]) -> Cycle | None:
    term, _, frequency = text.partition("/")
    try:
        return Cycle(Term(term), BillingFrequency(frequency))
    except ValueError:
        terms, frequencies = "/".join(t.value for t in Term), "/".join(f.value for f in BillingFrequency)
        problems.append(
            FieldProblem(
                where,
                f"{text!r} is not a cycle: write term/frequency, e.g. P1Y/monthly ({terms}; {frequencies}), "
                "the frequency no longer than the term",
            )
        )
        return None


SEAT_CYCLE_TEXT = f"{SEAT_CYCLE.term.value}/{SEAT_CYCLE.frequency.value}"


def _check_usage_product(product: ProductDocument, where: str, problems: list[FieldProblem]) -> None:
    """The usage product's SKUs are editions: a seat's monthly price, no add-ons, no trials."""
    for index, sku in enumerate(product.skus):
        sku_where = f"{where}.skus.{index}"
        for cycle_text in sku.prices:
            if cycle_text != SEAT_CYCLE_TEXT:
                problems.append(
                    FieldProblem(
                        f"{sku_where}.prices.{cycle_text}",
                        f"an edition is priced per seat and month: {SEAT_CYCLE_TEXT} only",
                    )
                )
        if sku.add_on_for or sku.trial:
            problems.append(FieldProblem(sku_where, "an edition is neither an add-on nor a trial"))


def parse_price_list(data: Mapping[str, Any]) -> tuple[date, PriceList]:
    """The price list a document describes and the day it takes effect; ``InvalidRequest`` names every
    problem's entry."""
    try:
        document = PriceListDocument.model_validate(data)
    except ValidationError as error:
        raise InvalidRequest(
            [
                FieldProblem(".".join(str(part) for part in problem["loc"]) or "document", problem["msg"])
                for problem in error.errors()
            ]
        ) from None
    problems: list[FieldProblem] = []
    currencies = set(document.activation_fee)

    def check_currencies(prices: Mapping[str, int], where: str) -> None:
        for currency in sorted(set(prices) - currencies):
            problems.append(
                FieldProblem(
                    f"{where}.{currency}",
                    f"{currency} is not a currency of this list (activation_fee names {', '.join(sorted(currencies))})",
                )
            )
        for currency in sorted(currencies - set(prices)):
            problems.append(FieldProblem(where, f"no price in {currency}: every currency of the list needs one"))

    products: dict[str, Product] = {}
    skus: dict[str, Sku] = {}
    sku_fields: dict[str, str] = {}
    licence_prices: dict[str, dict[tuple[str, Cycle], int]] = {currency: {} for currency in sorted(currencies)}
    for p_index, product in enumerate(document.products):
        where = f"products.{p_index}"
        if product.code in products:
            problems.append(
                FieldProblem(f"{where}.code", f"{product.code} is already the code of a product or edition")
            )
        for s_index, sku in enumerate(product.skus):
            sku_where = f"{where}.skus.{s_index}"
            if sku.code in skus:
                problems.append(FieldProblem(f"{sku_where}.code", f"SKU {sku.code} is listed twice"))
            if not sku.prices:
                problems.append(FieldProblem(f"{sku_where}.prices", "a SKU needs the price of at least one cycle"))
            for cycle_text, prices in sku.prices.items():
                cycle = _parse_cycle(cycle_text, f"{sku_where}.prices.{cycle_text}", problems)
                check_currencies(prices, f"{sku_where}.prices.{cycle_text}")
                if cycle is not None:
                    for currency, amount in prices.items():
                        if currency in licence_prices:
                            licence_prices[currency][(sku.code, cycle)] = amount
            skus[sku.code] = Sku(sku.code, sku.name, product.code, frozenset(sku.add_on_for), sku.trial)
            sku_fields[sku.code] = sku_where
        kind = ProductKind(product.kind)
        if kind is ProductKind.USAGE:
            _check_usage_product(product, where, problems)
        products[product.code] = Product(product.code, product.name, kind, tuple(s.code for s in product.skus))
    usage = [index for index, product in enumerate(document.products) if product.kind == "usage"]
    if len(usage) != 1:
        problems.append(
            FieldProblem(
                "products",
                f"a price list has exactly one product of kind usage (the monthly plan's editions); found {len(usage)}",
            )
        )
    for code, add_on in skus.items():
        for b_index, base in enumerate(sorted(add_on.add_on_for)):
            where = f"{sku_fields[code]}.add_on_for.{b_index}"
            if base not in skus:
                problems.append(FieldProblem(where, f"{base} is not a SKU of this list"))
            elif skus[base].is_add_on or skus[base].product != add_on.product:
                problems.append(FieldProblem(where, f"{base} must be a base SKU of product {add_on.product}"))

    promotions: list[Promotion] = []
    for index, promotion in enumerate(document.promotions):
        where = f"promotions.{index}"
        if promotion.ends_on < promotion.starts_on:
            problems.append(FieldProblem(f"{where}.ends_on", "ends before it starts"))
        if any(p.code == promotion.code for p in promotions):
            problems.append(FieldProblem(f"{where}.code", f"promotion {promotion.code} is listed twice"))
        for s_index, sku_code in enumerate(promotion.skus):
            if sku_code not in skus:
                problems.append(FieldProblem(f"{where}.skus.{s_index}", f"{sku_code} is not a SKU of this list"))
        cycles = [
            _parse_cycle(text, f"{where}.cycles.{c_index}", problems) for c_index, text in enumerate(promotion.cycles)
        ]
        promotions.append(
            Promotion(
                promotion.code,
                promotion.description,
                frozenset(promotion.skus),
                frozenset(c for c in cycles if c is not None),
                promotion.percent_off_basis_points,
                promotion.starts_on,
                promotion.ends_on,
            )
        )
    if problems:
        raise InvalidRequest(problems)
    price_list = PriceList(
        version=document.version,
        activation_fee_minor=dict(document.activation_fee),
        catalog=Catalog(products, skus),
        licence_prices=licence_prices,
        promotions=tuple(promotions),
    )
    return document.effective_from, price_list


def price_list_document(prices: PriceList, effective_from: date) -> dict[str, Any]:
    """The document of a price list (``parse_price_list`` gives the same list back)."""

    def by_cycle(sku: str) -> dict[str, dict[str, int]]:
        table: dict[str, dict[str, int]] = {}
        for currency, entries in sorted(prices.licence_prices.items()):
            for (code, cycle), amount in entries.items():
                if code == sku:
                    table.setdefault(f"{cycle.term.value}/{cycle.frequency.value}", {})[currency] = amount
        return table

    return {
        "version": prices.version,
        "effective_from": effective_from.isoformat(),
        "activation_fee": dict(prices.activation_fee_minor),
        "products": [
            {
                "code": product.code,
                "name": product.name,
                **({"kind": product.kind.value} if product.kind is ProductKind.USAGE else {}),
                "skus": [
                    {
                        "code": sku.code,
                        "name": sku.name,
                        **({"add_on_for": sorted(sku.add_on_for)} if sku.add_on_for else {}),
                        **({"trial": True} if sku.trial else {}),
                        "prices": by_cycle(sku.code),
                    }
                    for sku in (prices.catalog.skus[code] for code in product.skus)
                ],
            }
            for product in prices.catalog.products.values()
        ],
        "promotions": [
            {
                "code": p.code,
                "description": p.description,
                "skus": sorted(p.skus),
                "cycles": [f"{c.term.value}/{c.frequency.value}" for c in sorted(p.cycles)],
                "percent_off_basis_points": p.percent_off_basis_points,
                "starts_on": p.starts_on.isoformat(),
                "ends_on": p.ends_on.isoformat(),
            }
            for p in prices.promotions
        ],
    }


def document_fingerprint(document: Mapping[str, Any]) -> str:
    """The same content always gives the same fingerprint (key order and layout do not matter)."""
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()

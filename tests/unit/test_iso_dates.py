"""Dates are dates (issue 27, item 8): a string of digits (or a number) is never taken as a Unix time, in
the partner API or on the metering queue; only ISO 8601 text is accepted, and every refusal names the
field."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import pytest
from pydantic import ValidationError

from billing_core.messages import SightingMessage
from billing_core.schemas import CancelPlanRequest


def sighting(observed_at: object) -> SightingMessage:
    message = {
        "schema_version": 1,
        "type": "sighting",
        "event_id": "e-1",
        "workspace_id": "ws_1",
        "device_id": "LAPTOP-1",
        "observed_at": observed_at,
    }
    return SightingMessage.model_validate_json(json.dumps(message))


@pytest.mark.parametrize("ends_on", ["1806451200", 1806451200, "2026-12-31T00:00:00Z", "31.12.2026", "2026-13-01"])
def test_an_end_date_that_is_not_an_iso_date_is_refused_naming_the_field(ends_on: object) -> None:
    with pytest.raises(ValidationError) as refused:
        CancelPlanRequest.model_validate_json(json.dumps({"ends_on": ends_on}))
    assert [error["loc"] for error in refused.value.errors()] == [("ends_on",)]


def test_an_iso_end_date_is_accepted() -> None:
    assert CancelPlanRequest.model_validate_json('{"ends_on": "2026-12-31"}').ends_on == date(2026, 12, 31)


@pytest.mark.parametrize(
    "observed_at", ["1796666193", 1796666193, 1796666193.5, "2026-11-22", "2026-11-22T14:03:00", "2026-11-31T10:00:00Z"]
)
def test_an_observed_at_that_is_not_an_iso_timestamp_with_a_zone_is_refused_naming_the_field(
    observed_at: object,
) -> None:
    with pytest.raises(ValidationError) as refused:
        sighting(observed_at)
    assert [error["loc"] for error in refused.value.errors()] == [("observed_at",)]


def test_an_iso_timestamp_with_a_zone_is_accepted() -> None:
    assert sighting("2026-11-22T15:03:00+01:00").observed_at == datetime(2026, 11, 22, 14, 3, tzinfo=UTC)

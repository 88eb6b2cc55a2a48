"""Metering rules and the batch use case, against in-memory fakes (no sockets)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from billing_core.domain.calendar import BillingMonth
from billing_core.domain.metering import RecordedDevice, count_seats
from billing_core.domain.plan import Plan
from billing_core.domain.workspace import Workspace
from billing_core.services.metering import InboundMessage, MeteringService
from tests.fakes import FixedClock, InMemoryBillingStore, InMemoryUsageStore, InMemoryWorkspaceDirectory
from tests.helpers import PRICE_LIST_2026_01

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
NOVEMBER = BillingMonth(2026, 11)


def live_plan(partner_id: str) -> Plan:
    start = NOW - timedelta(days=60)
    return (
        Plan(partner_id)
        .begin_activation(start)
        .complete_activation(
            now=start, currency="USD", price_list_version="2026-01", customer_ref="c", payment_method_ref="pm"
        )
    )


def world(max_devices: int = 100) -> tuple[InMemoryBillingStore, InMemoryUsageStore, MeteringService]:
    store = InMemoryBillingStore()
    store.plans["p1"] = live_plan("p1")
    workspace = Workspace("ws1", "p1", "Acme", created_at=NOW - timedelta(days=50)).put_on_plan(
        plan=store.plans["p1"],
        prices=PRICE_LIST_2026_01,
        edition="anti-malware",
        max_devices=max_devices,
        now=NOW - timedelta(days=50),
    )
    store.workspaces["ws1"] = workspace
    store.workspaces["ws-off"] = Workspace("ws-off", "p1", "Off plan", created_at=NOW - timedelta(days=50))
    usage = InMemoryUsageStore()
    return store, usage, MeteringService(usage, InMemoryWorkspaceDirectory(store), FixedClock(NOW))


def sighting(event_id: str, device: str, *, workspace: str = "ws1", at: datetime = NOW) -> InboundMessage:
    body = {
        "type": "sighting",
        "event_id": event_id,
        "workspace_id": workspace,
        "device_id": device,
        "observed_at": at.isoformat(),
    }
    return InboundMessage(f"m-{event_id}", json.dumps(body))


def report(event_id: str, devices: list[str], *, workspace: str = "ws1", at: datetime = NOW) -> InboundMessage:
    body = {
        "type": "daily_report",
        "event_id": event_id,
        "workspace_id": workspace,
        "device_ids": devices,
        "observed_at": at.isoformat(),
        "agent": {"product": "protect", "version": "9.1"},
    }
    return InboundMessage(f"m-{event_id}", json.dumps(body))


def test_the_same_batch_delivered_twice_counts_once_and_writes_nothing_more() -> None:
    store, usage, metering = world()
    batch = [sighting("e1", "d1"), sighting("e2", "d2"), report("e3", ["d1", "d2", "d3"]), sighting("e4", "d1")]
    first = metering.record_batch(batch)
    assert (first.sightings, first.first_sightings_written, first.failed_message_ids) == (6, 3, set())
    assert usage.seats("ws1", NOVEMBER) == {"d1", "d2", "d3"}
    writes = usage.writes
    second = metering.record_batch(batch)
    assert second.first_sightings_written == 0
    assert usage.writes == writes  # known device-months cost no write at all
    # Another container (empty cache) reads instead of writing.
    reads = usage.reads
    other_container = MeteringService(usage, InMemoryWorkspaceDirectory(store), FixedClock(NOW))
    assert other_container.record_batch(batch).first_sightings_written == 0
    assert usage.writes == writes and usage.reads == reads + 3


def test_mixed_batch_rejects_only_the_bad_messages() -> None:
    _, usage, metering = world()
    batch = [
        sighting("ok", "d1"),
        InboundMessage("m-not-json", "{nope"),
        InboundMessage(
            "m-no-device",
            json.dumps({"type": "sighting", "event_id": "x", "workspace_id": "ws1", "observed_at": NOW.isoformat()}),
        ),
        InboundMessage(
            "m-naive-time",
            json.dumps(
                {
                    "type": "sighting",
                    "event_id": "y",
                    "workspace_id": "ws1",
                    "device_id": "d9",
                    "observed_at": "2026-11-20T10:00:00",
                }
            ),
        ),
        sighting("future", "d2", at=NOW + timedelta(minutes=6)),
        sighting("skew-ok", "d3", at=NOW + timedelta(minutes=4)),
        sighting("unknown", "d4", workspace="ws-nobody"),
        sighting("off-plan", "d5", workspace="ws-off"),
    ]
    outcome = metering.record_batch(batch)
    assert outcome.failed_message_ids == set()
    assert set(outcome.rejected) == {"m-not-json", "m-no-device", "m-naive-time", "m-future"}
    assert "device_id" in outcome.rejected["m-no-device"]
    assert "ahead of the server clock" in outcome.rejected["m-future"]
    assert usage.rejections.keys() == outcome.rejected.keys()
    assert usage.seats("ws1", NOVEMBER) == {"d1", "d3"}
    assert outcome.by_billability == {"billable": 2, "unknown_workspace": 1, "not_on_plan": 1}
    not_billable = {key.device_id for (key, billable) in usage.devices if not billable}
    assert not_billable == {"d4", "d5"}


def test_a_throttled_write_fails_only_the_messages_carrying_that_device() -> None:
    _, usage, metering = world()
    usage.throttled_devices = {"d2"}
    batch = [sighting("a", "d1"), sighting("b", "d2"), report("c", ["d2", "d3"]), sighting("d", "d3")]
    outcome = metering.record_batch(batch)
    assert outcome.failed_message_ids == {"m-b", "m-c"}
    assert usage.seats("ws1", NOVEMBER) == {"d1", "d3"}
    usage.throttled_devices = set()
    retry = metering.record_batch([m for m in batch if m.message_id in outcome.failed_message_ids])
    assert retry.failed_message_ids == set()
    assert usage.seats("ws1", NOVEMBER) == {"d1", "d2", "d3"}


def test_devices_seen_before_joining_the_plan_are_not_billed_until_seen_on_it() -> None:
    store, usage, metering = world()
    joined = NOW - timedelta(hours=1)
    store.workspaces["ws1"] = replace(store.workspaces["ws1"], joined_plan_at=joined)
    metering.record_batch([sighting("early", "d1", at=joined - timedelta(minutes=1))])
    assert usage.seats("ws1", NOVEMBER) == set()
    metering.record_batch([sighting("later", "d1", at=joined + timedelta(minutes=1))])
    assert usage.seats("ws1", NOVEMBER) == {"d1"}


def test_a_sighting_for_a_charged_month_is_late_usage_recorded_once() -> None:
    store, usage, metering = world()
    store.plans["p1"] = replace(store.plans["p1"], last_charged_month=BillingMonth(2026, 10))
    october = datetime(2026, 10, 30, 8, 0, tzinfo=UTC)
    metering = MeteringService(usage, InMemoryWorkspaceDirectory(store), FixedClock(NOW))
    metering.record_batch([sighting("late-1", "d1", at=october), sighting("late-2", "d1", at=october)])
    metering.record_batch([sighting("late-3", "d1", at=october + timedelta(hours=1))])
    assert [(partner, str(key.month), key.device_id, str(bill_in)) for partner, key, bill_in in usage.late] == [
        ("p1", "2026-10", "d1", "2026-11")  # billed on the November invoice
    ]
    metering.record_batch([sighting("now", "d1")])
    assert len(usage.late) == 1 and usage.seats("ws1", NOVEMBER) == {"d1"}


def test_the_cap_bills_the_first_devices_by_first_sighting() -> None:
    devices = [RecordedDevice(f"d{i}", NOW + timedelta(minutes=10 - i)) for i in range(5)]
    seats = count_seats(devices, max_devices=3)
    assert seats.seats == 3
    assert [d.device_id for d in seats.billed] == ["d4", "d3", "d2"]
    assert [d.device_id for d in seats.over_cap] == ["d1", "d0"]
    assert count_seats(devices, max_devices=10).seats == 5


def test_directory_lookups_are_cached_within_the_ttl() -> None:
    store = world()[0]
    directory = InMemoryWorkspaceDirectory(store)
    clock = FixedClock(NOW)
    metering = MeteringService(InMemoryUsageStore(), directory, clock, directory_ttl=timedelta(seconds=60))
    metering.record_batch([sighting("a", "d1")])
    metering.record_batch([sighting("b", "d2")])
    assert directory.lookups == 1
    clock.advance(timedelta(seconds=61))
    metering.record_batch([sighting("c", "d3")])
    assert directory.lookups == 2


SIGHTINGS = st.lists(
    st.tuples(
        st.sampled_from(["ws1", "ws-off", "ws-nobody"]),
        st.sampled_from([f"d{i}" for i in range(12)]),
        st.integers(min_value=0, max_value=40 * 24),  # hours before NOW: spans two months
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(sightings=SIGHTINGS, data=st.data())
def test_any_reordering_and_duplication_gives_the_same_seats(
    sightings: list[tuple[str, str, int]], data: st.DataObject
) -> None:
    messages = [
        sighting(f"e{i}", device, workspace=ws, at=NOW - timedelta(hours=h))
        for i, (ws, device, h) in enumerate(sightings)
    ]
    _, reference_usage, reference = world(max_devices=5)
    reference.record_batch(messages)

    shuffled = data.draw(st.permutations(messages))
    duplicated = shuffled + data.draw(st.lists(st.sampled_from(messages), max_size=20))
    split = data.draw(st.integers(min_value=0, max_value=len(duplicated)))
    _, usage, metering = world(max_devices=5)
    metering.record_batch(duplicated[:split])
    metering.record_batch(duplicated[split:])

    # The same device-months, in the same partitions (billable or not), whatever the order...
    assert set(usage.devices) == set(reference_usage.devices)
    # ...and so the same seats per workspace and month.
    for month in (BillingMonth(2026, 10), NOVEMBER):
        assert usage.seats("ws1", month) == reference_usage.seats("ws1", month)


def test_schema_version_and_observed_at_accept_only_their_own_json_types() -> None:
    """Lax parsing once took ``true`` or ``1.0`` as schema version 1 and a number of seconds as a timestamp."""
    _, usage, metering = world()
    good = {
        "type": "sighting",
        "event_id": "e",
        "workspace_id": "ws1",
        "device_id": "d1",
        "observed_at": NOW.isoformat(),
    }
    wrong_types = {
        "m-version-true": {**good, "event_id": "a", "schema_version": True},
        "m-version-float": {**good, "event_id": "b", "schema_version": 1.0},
        "m-version-string": {**good, "event_id": "c", "schema_version": "1"},
        "m-epoch-seconds": {**good, "event_id": "d", "observed_at": int(NOW.timestamp())},
    }
    batch = [InboundMessage(message_id, json.dumps(payload)) for message_id, payload in wrong_types.items()]
    batch.append(InboundMessage("m-ok", json.dumps({**good, "schema_version": 1})))
    outcome = metering.record_batch(batch)
    assert set(outcome.rejected) == set(wrong_types)
    assert "schema_version" in outcome.rejected["m-version-true"]
    assert "observed_at" in outcome.rejected["m-epoch-seconds"]
    assert usage.seats("ws1", NOVEMBER) == {"d1"}

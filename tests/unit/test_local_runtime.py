"""The local event runtime's pure parts: AWS cron expressions and the file-backed test clock."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from infra.local_clock import ClockError, LocalClock
from infra.local_schedules import AwsCron, template_cron_rules
from infra.template import load_template


def test_the_monthly_run_rule_of_the_template_fires_on_the_1st_3rd_5th_and_7th_at_00_05() -> None:
    (rule,) = template_cron_rules(load_template())
    assert rule.function_logical_id == "MonthlyRunDispatcherFunction"
    moment = datetime(2026, 12, 31, 23, 0, tzinfo=UTC)
    firings = []
    for _ in range(5):
        next_firing = rule.cron.next_after(moment)
        assert next_firing is not None
        firings.append(next_firing)
        moment = next_firing
    assert [f.strftime("%m-%d %H:%M") for f in firings] == [
        "01-01 00:05",
        "01-03 00:05",
        "01-05 00:05",
        "01-07 00:05",
        "02-01 00:05",
    ]
    # Strictly after: a firing at the very moment does not count again.
    assert rule.cron.next_after(datetime(2027, 1, 1, 0, 5, tzinfo=UTC)) == datetime(2027, 1, 3, 0, 5, tzinfo=UTC)


def test_cron_ranges_steps_and_day_names() -> None:
    weekdays_every_15 = AwsCron.parse("cron(0/15 9-10 ? * MON-FRI *)")
    saturday = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
    assert weekdays_every_15.next_after(saturday) == datetime(2026, 11, 23, 9, 0, tzinfo=UTC)  # Monday
    assert weekdays_every_15.next_after(datetime(2026, 11, 23, 10, 45, tzinfo=UTC)) == datetime(
        2026, 11, 24, 9, 0, tzinfo=UTC
    )
    only_2027 = AwsCron.parse("cron(0 0 1 JAN ? 2027)")
    assert only_2027.next_after(saturday) == datetime(2027, 1, 1, tzinfo=UTC)
    assert only_2027.next_after(datetime(2027, 1, 1, tzinfo=UTC)) is None
    with pytest.raises(ValueError, match="not an AWS cron"):
        AwsCron.parse("rate(5 minutes)")
    with pytest.raises(ValueError, match="unsupported"):
        AwsCron.parse("cron(0 0 L * ? *)")


def test_the_clock_moves_forward_only_and_is_shared_through_its_file(tmp_path: Path) -> None:
    clock = LocalClock(tmp_path / "clock.json")
    assert abs(clock.now() - datetime.now(UTC)) < timedelta(seconds=1)  # no file: real time
    target = datetime(2027, 1, 1, 0, 5, tzinfo=UTC)
    clock.set(target)
    other_process = LocalClock(tmp_path / "clock.json")
    assert timedelta(0) <= other_process.now() - target < timedelta(seconds=1)
    with pytest.raises(ClockError, match="only moves forward"):
        clock.set(target - timedelta(days=1))
    with pytest.raises(ClockError, match="UTC"):
        clock.set(datetime(2027, 2, 1))
    first = clock.fired_through()
    assert clock.fired_through() == first  # recorded at the first look


def test_free_port_never_hands_out_the_same_port_twice_even_when_the_os_offers_it_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from infra import processes

    offered = iter([47001, 47001, 47001, 47002])

    class ProbeOfferingAReleasedPortAgain:
        def __enter__(self) -> ProbeOfferingAReleasedPortAgain:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def bind(self, address: tuple[str, int]) -> None:
            self.port = next(offered)

        def getsockname(self) -> tuple[str, int]:
            return ("127.0.0.1", self.port)

    monkeypatch.setattr(socket, "socket", lambda *a: ProbeOfferingAReleasedPortAgain())
    monkeypatch.setattr(processes, "_handed_out_ports", set())
    assert [processes.free_port(), processes.free_port()] == [47001, 47002]

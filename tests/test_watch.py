"""Tests for supervisor_bluegreen.listener.watch: the window after a go-live, with a fake clock and fake probes."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from conftest import FakeClock

from supervisor_bluegreen.host.health import Probe
from supervisor_bluegreen.listener.watch import Outcome, Verdict, observe
from supervisor_bluegreen.shared.config import Watch
from supervisor_bluegreen.shared.model import OPENED_BY, Window

GOOD = Probe(True, 200, "status 200", 1.0, {})
BAD = Probe(False, 500, "status 500, expected 200", 1.0, {})
TEN_SECONDS = Watch(seconds=10, interval=1, failures=3)


def run(
    probes: list[Probe],
    config: Watch = TEN_SECONDS,
    crash_at: float | None = None,
    stop_at: float | None = None,
    probe_cost: float = 0.01,
) -> tuple[Outcome, FakeClock, int]:
    clock = FakeClock()
    window = Window("green", "blue", clock.now, clock.now + config.seconds, 7)
    done: list[Probe] = []

    def probe() -> Probe:
        clock.now += probe_cost
        result = probes[min(len(done), len(probes) - 1)]
        done.append(result)
        return result

    def after(at: float | None, value: Callable[[], object]) -> Callable[[], object]:
        return lambda: value() if at is not None and clock.now - 1000.0 >= at else None

    outcome = observe(
        window,
        config,
        crashed=after(crash_at, lambda: "shop_green went EXITED"),  # type: ignore[arg-type]
        probe=probe,
        interrupted=after(stop_at, lambda: Outcome(Verdict.ENDED, "cut short by rollback job 9")),  # type: ignore[arg-type]
        wait=clock.sleep,
        clock=clock,
    )
    return outcome, clock, len(done)


def test_a_color_that_keeps_answering_passes_its_window() -> None:
    outcome, clock, probes = run([GOOD])
    assert outcome == Outcome(Verdict.PASSED)
    assert 10.0 <= clock.now - 1000.0 < 10.1
    assert probes == 10  # one a second


def test_k_failed_probes_in_a_row_roll_back() -> None:
    outcome, clock, probes = run([GOOD, BAD, BAD, BAD])
    assert outcome.verdict is Verdict.ROLLBACK
    assert outcome.reason == "3 health probes failed in a row, the last: status 500, expected 200"
    assert probes == 4 and clock.now - 1000.0 < 4


def test_failures_that_are_not_in_a_row_do_not_roll_back() -> None:
    outcome, _, _ = run([BAD, BAD, GOOD, BAD, BAD, GOOD] * 3)
    assert outcome == Outcome(Verdict.PASSED)


def test_a_crash_rolls_back_at_once_with_its_reason() -> None:
    outcome, clock, _ = run([GOOD], crash_at=2.5)
    assert outcome == Outcome(Verdict.ROLLBACK, "shop_green went EXITED")
    assert clock.now - 1000.0 < 3.1


def test_a_crash_is_seen_before_the_window_passes_even_at_its_last_instant() -> None:
    outcome, _, _ = run([GOOD], crash_at=9.99)
    assert outcome.verdict is Verdict.ROLLBACK


def test_a_person_taking_over_ends_the_window() -> None:
    outcome, clock, _ = run([GOOD], stop_at=4)
    assert outcome == Outcome(Verdict.ENDED, "cut short by rollback job 9")
    assert 4 <= clock.now - 1000.0 < 5.1


def test_waits_never_overshoot_the_window() -> None:
    _, clock, _ = run([GOOD], config=Watch(seconds=2.5, interval=1, failures=3))
    assert clock.now - 1000.0 == pytest.approx(2.5)  # the probes' own time is part of the interval
    assert all(w <= 1.0 for w in clock.slept)


@pytest.mark.parametrize(
    ("kind", "previous", "seconds", "opens"),
    [
        ("deploy", "blue", 60, True),
        ("switch", "blue", 60, True),
        ("rollback", "blue", 60, False),  # going back to what served before: watching it would roll forward
        ("deploy", "", 60, False),  # the first go-live: nothing to go back to
        ("deploy", "blue", 0, False),  # watch = 0 turns it off
        ("deploy", "green", 60, False),
    ],
)
def test_which_go_lives_open_a_window(kind: str, previous: str, seconds: float, opens: bool) -> None:
    window = Window.opened("green", previous, 3, Watch(seconds=seconds), kind in OPENED_BY, now=50.0)
    assert (window is not None) is opens
    if opens:
        assert window == Window("green", previous, 50.0, 50.0 + seconds, 3)


def test_a_window_round_trips_through_the_state_file_and_damaged_records_are_none() -> None:
    window = Window("green", "blue", 10.0, 70.0, 4)
    assert Window.from_state(window.record()) == window
    assert window.remaining(now=40.0) == 30.0 and window.remaining(now=80.0) == 0.0
    for damaged in (None, "", {}, {"color": "green"}, {**window.record(), "until": "soon"}):
        assert Window.from_state(damaged) is None

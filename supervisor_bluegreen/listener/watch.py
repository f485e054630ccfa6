"""The watch window: after a go-live, the previous color stays warm while the new one is watched.

A release can pass its health gate and die a few seconds later (a crash on the first real
request, a memory leak, a worker that exits). For ``watch`` seconds after every change of the
live color by a deploy or a switch, the previous color is left RUNNING and untouched, and the
listener watches the new live color: a crash event of its program (EXITED, BACKOFF, FATAL, even
one supervisord restarts at once) or ``watch_failures`` failed health probes in a row over its
own socket roll traffic back to the previous color by themselves.

The window is state (the app state's ``watch`` in the store, shared/model.py's Window), not a thread's
memory: a listener restarted during it resumes it, and a deploy asked for during it waits in the queue, so
the rollback target is never drained while the window runs. A switch or rollback asked for during it ends
the window at once: a person took over.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass

from supervisor_bluegreen.host.health import Probe
from supervisor_bluegreen.shared.config import Watch
from supervisor_bluegreen.shared.model import Window


class Verdict(str, enum.Enum):
    PASSED = "passed"  # the new color held for the whole window
    ROLLBACK = "rolled back"  # it crashed or failed its probes: traffic goes back
    ENDED = "ended"  # cut short by a person's switch or rollback
    SUSPENDED = "suspended"  # the listener stops: the window stays recorded and resumes on its next start


@dataclass(frozen=True)
class Outcome:
    """How a window ended, and why."""

    verdict: Verdict
    reason: str = ""


def observe(
    window: Window,
    config: Watch,
    crashed: Callable[[], str | None],
    probe: Callable[[], Probe],
    interrupted: Callable[[], Outcome | None],
    wait: Callable[[float], None],
    clock: Callable[[], float] = time.time,
) -> Outcome:
    """Watch ``window.color`` until the window passes or a signal says roll back.

    ``crashed`` names a crash of the live program seen since the window opened; ``probe`` is one
    health check over its own socket; ``interrupted`` ends the watch early (a person's job, the
    listener stopping); ``wait`` sleeps up to the given seconds, and returns early when an event
    arrives. Pure but for these, so every path is tested with fakes.
    """
    failures, next_probe = 0, clock()
    while True:
        why = crashed()
        if why:
            return Outcome(Verdict.ROLLBACK, why)
        stop = interrupted()
        if stop is not None:
            return stop
        now = clock()
        if now >= window.until:
            return Outcome(Verdict.PASSED)
        if now >= next_probe:
            result = probe()
            failures = 0 if result.ok else failures + 1
            if failures >= config.failures:
                return Outcome(Verdict.ROLLBACK, f"{failures} health probes failed in a row, the last: {result.detail}")
            next_probe = clock() + config.interval
        wait(max(0.0, min(next_probe, window.until) - clock()))

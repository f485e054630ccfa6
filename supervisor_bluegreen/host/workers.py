"""Worker programs (Celery): restarted gracefully through supervisor, confirmed on the new code.

supervisor's stop is the graceful part: its ``stopsignal`` (TERM is Celery's warm shutdown: running
tasks finish; with ``acks_late``, tasks not started stay in the broker) within ``stopwaitsecs``.
A worker runs from the ``live_root`` link, so after the restart its directory must be the live
color's checkout, and it must stay up: RUNNING (past supervisor's ``startsecs``) is not enough for a
worker that dies a few seconds later, after its broker connection or its first task, and is restarted
by supervisor again and again. It must then run ``settle`` seconds with no exit.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import psutil

from supervisor_bluegreen.host.supervisor import BAD_STATES, ShuttingDown, Supervisor, SupervisorError
from supervisor_bluegreen.shared.config import Color
from supervisor_bluegreen.shared.errors import BluegreenError

if TYPE_CHECKING:
    from supervisor_bluegreen.host.supervisor import ProcessWatch


class WorkerError(BluegreenError):
    """A worker did not come back, or came back on other code."""


def until_stopped(sup: Supervisor, program: str, timeout: float) -> None:
    """Wait while ``program`` is STOPPING: supervisor refuses to stop it again, and a start would not take."""
    deadline = time.monotonic() + timeout
    while sup.state(program) == "STOPPING":
        if time.monotonic() > deadline:
            raise WorkerError(f"worker {program} is still STOPPING after {timeout:g} s")
        time.sleep(0.2)


def restart(
    sup: Supervisor,
    watch: ProcessWatch,
    program: str,
    target: Color,
    timeout: float,
    log: Callable[[str], None],
    stopped: Callable[[], None] = lambda: None,
    settle: float = 0.0,
) -> None:
    """stop, start, wait until RUNNING (a crash ends the wait at once), confirm its checkout, then see it
    stay up for ``settle`` seconds: an exit (or a new pid: supervisor restarted it) fails it.

    ``stopped`` is called between the stop and the start (the fault tests kill the listener there).
    """
    try:
        sup.stop(program)
        until_stopped(sup, program, timeout)  # a stop begun by a listener that was killed meanwhile
        stopped()
        since = time.monotonic()
        sup.start(program)
        deadline = since + timeout
        while True:
            state = sup.state(program)
            crashed = watch.crashed_since(program, since)
            if state == "RUNNING":
                break
            if crashed or state in BAD_STATES or time.monotonic() > deadline:
                raise WorkerError(f"worker {program} did not come back: {crashed or state}")
            time.sleep(0.2)
        pid = sup.info(program)["pid"]
        confirm_checkout(program, pid, target)
        stays_up(sup, watch, program, pid, settle)
    except ShuttingDown:
        raise  # supervisord is on its way out: the job is interrupted, not failed
    except SupervisorError as exc:
        raise WorkerError(str(exc)) from None
    log(f"worker {program} pid {pid} runs {target.name}'s checkout" + (f", up for {settle:g} s" if settle else ""))


def confirm_checkout(program: str, pid: int, target: Color) -> None:
    """The worker's directory is the live color's checkout (through the live_root link), or it runs old code."""
    try:
        cwd = psutil.Process(pid).cwd()
    except psutil.Error as exc:
        raise WorkerError(f"worker {program} (pid {pid}): cannot read its directory: {exc}") from None
    if os.path.realpath(cwd) != os.path.realpath(target.checkout):
        raise WorkerError(
            f"worker {program} runs in {cwd}, not in {target.name}'s checkout {target.checkout}: "
            "set its directory to the live_root link"
        )


def stays_up(sup: Supervisor, watch: ProcessWatch, program: str, pid: int, settle: float) -> None:
    """``program`` keeps running as ``pid`` for ``settle`` seconds: no crash event, no restart by supervisor."""
    since = time.monotonic()
    deadline = since + settle
    while time.monotonic() < deadline:
        time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        crashed = watch.crashed_since(program, since)
        info = sup.info(program)
        if crashed or info["statename"] != "RUNNING" or info["pid"] != pid:
            up = time.monotonic() - since
            now = crashed or info["statename"]
            raise WorkerError(f"worker {program} (pid {pid}) exited {up:.1f} s after it was RUNNING (now {now})")

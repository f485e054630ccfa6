"""Worker programs (Celery): handed over to the new color's, or restarted, through supervisor, confirmed on
the new code.

supervisor's stop is the graceful part: its ``stopsignal`` (TERM is Celery's warm shutdown: running
tasks finish; with ``acks_late``, tasks not started stay in the broker) within ``stopwaitsecs``.
A color's own worker (``workers = app_celery_%(color)s``) runs that color's release: the new color's
starts before the old color's stops, so a consumer is always there (hand_over). A worker that follows
the ``live_root`` link is one program: it is stopped, then started again (restart), with a gap.
Either way its directory must be the live color's checkout, and it must stay up: RUNNING (past
supervisor's ``startsecs``) is not enough for a worker that dies a few seconds later, after its broker
connection or its first task, and is restarted by supervisor again and again. It must then run
``settle`` seconds with no exit, and answer ``worker_ping`` when one is set.
"""

from __future__ import annotations

import contextlib
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


DOWN = ("STOPPED", "EXITED", "FATAL")  # nothing to stop


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

    A worker that follows the live_root link: one program, so there is a gap with no consumer between its
    stop and its start. ``stopped`` is called there (the fault tests kill the listener at that point).
    """
    try:
        sup.stop(program)
        until_stopped(sup, program, timeout)  # a stop begun by a listener that was killed meanwhile
        stopped()
        pid = come_up(sup, watch, program, target, timeout, settle=settle)
    except ShuttingDown:
        raise  # supervisord is on its way out: the job is interrupted, not failed
    except SupervisorError as exc:
        raise WorkerError(str(exc)) from None
    log(f"worker {program} pid {pid} runs {target.name}'s checkout" + (f", up for {settle:g} s" if settle else ""))


def hand_over(
    sup: Supervisor,
    watch: ProcessWatch,
    new: str,
    old: str,
    target: Color,
    timeout: float,
    log: Callable[[str], None],
    settle: float = 0.0,
    ready: Callable[[str], bool] | None = None,
    started: Callable[[], None] = lambda: None,
    quiesce: Callable[[str], bool] | None = None,
) -> None:
    """``target``'s own worker ``new`` takes over from the other color's ``old``: no moment without a consumer.

    ``new`` starts (or, already running ``target``'s checkout, is kept), must run that checkout, answer
    ``ready`` (it consumes: Celery's ping) and stay up ``settle`` seconds; only then does ``old`` get its warm
    shutdown (supervisor's stop: TERM, running tasks finish; with acks_late what it had not started goes
    back to the broker for ``new``). A ``new`` that fails is stopped and ``old`` keeps consuming, untouched.
    ``started`` is called once ``new`` passed, before ``old`` stops (the fault tests kill the listener there).
    ``quiesce`` first tells ``old`` to stop consuming: what it had fetched but not started then runs at once,
    instead of waiting in its buffer until its shutdown returns it to the broker.
    """
    try:
        pid = running_checkout(sup, new, target)
        if pid:
            log(f"worker {new} pid {pid} already runs {target.name}'s checkout")
        elif sup.state(new) not in DOWN:  # still on the release its color ran before (a failed handover)
            sup.stop(new)
            until_stopped(sup, new, timeout)
        try:
            if not pid:
                pid = come_up(sup, watch, new, target, timeout, ready=ready, settle=settle)
                log(f"worker {new} pid {pid} runs {target.name}'s checkout" + answered(ready, settle))
        except WorkerError:
            with contextlib.suppress(SupervisorError):
                sup.stop(new)  # crash-looping or mute: it must not consume; old goes on
            raise
        started()
        if sup.state(old) not in DOWN:
            t0 = time.monotonic()
            if quiesce is not None and not quiesce(old):
                log(f"worker {old} did not confirm it stopped consuming (worker_quiesce): stopping it anyway")
            sup.stop(old)  # blocks while its running tasks finish (stopwaitsecs)
            log(f"worker {old} stopped (warm shutdown) in {time.monotonic() - t0:.2f} s")
    except ShuttingDown:
        raise
    except SupervisorError as exc:
        raise WorkerError(str(exc)) from None


def answered(ready: Callable[[str], bool] | None, settle: float) -> str:
    """What a started worker proved before the other color's one stopped."""
    said = [what for what, yes in (("answers its ping", ready), (f"up for {settle:g} s", settle)) if yes]
    return (", " + " and ".join(said)) if said else ""


def running_checkout(sup: Supervisor, program: str, target: Color) -> int:
    """The pid of ``program`` when it is RUNNING in ``target``'s checkout, else 0."""
    info = sup.info(program)
    if info["statename"] != "RUNNING":
        return 0
    try:
        confirm_checkout(program, info["pid"], target)
    except WorkerError:
        return 0
    return int(info["pid"])


def come_up(
    sup: Supervisor,
    watch: ProcessWatch,
    program: str,
    target: Color,
    timeout: float,
    ready: Callable[[str], bool] | None = None,
    settle: float = 0.0,
) -> int:
    """Start ``program``, wait until RUNNING (a crash ends the wait at once), confirm its checkout, wait until
    it answers ``ready`` (within ``timeout`` of the start), see it stay up ``settle`` s; its pid."""
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
    while ready is not None and not ready(program):
        info = sup.info(program)
        if watch.crashed_since(program, since) or info["pid"] != pid:
            now = watch.crashed_since(program, since) or info["statename"]
            raise WorkerError(f"worker {program} (pid {pid}) exited before it answered its ping (now {now})")
        if time.monotonic() > deadline:
            raise WorkerError(f"worker {program} (pid {pid}) did not answer its ping within {timeout:g} s")
        time.sleep(0.2)
    stays_up(sup, watch, program, pid, settle)
    return int(pid)


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


def worker_argv(argv: tuple[str, ...], program: str, hostname: str) -> list[str]:
    """``worker_ping`` or ``worker_quiesce`` for one worker: ``%(worker)s`` is its program, ``%(hostname)s``
    this host's name (Celery's ``%h``), so ``--destination %(worker)s@%(hostname)s`` asks exactly the node
    ``-n %(program_name)s@%%h`` named."""
    return [w.replace("%(worker)s", program).replace("%(hostname)s", hostname) for w in argv]

"""One job being executed (Run) and how a step fails (StepFailed, Interrupted).

A step either completes or raises StepFailed with a message that says what went wrong; the
sequence then stops and the job ends failed.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from supervisor_bluegreen.host import notify, runner
from supervisor_bluegreen.host.migrations.gate import GateReport
from supervisor_bluegreen.host.supervisor import ProcessWatch, ShuttingDown, Supervisor, SupervisorError
from supervisor_bluegreen.listener import failpoint
from supervisor_bluegreen.shared.config import App
from supervisor_bluegreen.shared.errors import BluegreenError
from supervisor_bluegreen.shared.model import OPENED_BY, Job
from supervisor_bluegreen.shared.store import Store
from supervisor_bluegreen.shared.textsafe import escape_controls

if TYPE_CHECKING:
    from supervisor_bluegreen.host.appprobe import Probed

T = TypeVar("T")


class StepFailed(BluegreenError):
    """A step could not complete; the message is shown to the user as the reason."""


class Interrupted(StepFailed):
    """The listener is stopping: no new step starts before the switch; the job ends "interrupted"."""


class Cancelled(StepFailed):
    """Someone asked to cancel the job before its switch: no new step starts; the job ends "cancelled"."""


def supervisor_failed(exc: SupervisorError) -> StepFailed:
    """A refusal of supervisord as a step's failure; while supervisord shuts down the job is interrupted."""
    if isinstance(exc, ShuttingDown):
        return Interrupted(f"interrupted: supervisord is shutting down ({exc})")
    return StepFailed(str(exc))


class Run:
    """One job being executed: where its log goes, its timings, and the handles it needs."""

    def __init__(
        self,
        app: App,
        store: Store,
        job: Job,
        sup: Supervisor,
        watch: ProcessWatch,
        stopping: threading.Event | None = None,
    ):
        self.app, self.store, self.job, self.sup, self.watch = app, store, job, sup, watch
        self.stopping = stopping or threading.Event()  # set when supervisord stops the listener
        self.started = time.monotonic()
        self.steps: list[dict[str, Any]] = []
        self.live_before: str | None = None  # set by reconcile: what "unchanged" means in a failure
        self.gate: GateReport | None = None  # the migration gate's report: what migrate may run before the switch
        self.db_changed: list[str] = []  # migrations a failed migrate applied: the database is not "unchanged"
        self.cancellable = True  # until traffic moves: then a deploy finishes what it started
        self.allow_unsafe = False  # deploy --allow-unsafe-migrations: the gate's refusal is overridden
        self.watched = job.kind in OPENED_BY  # its go-live opens a watch window (rollback --to sets it too)
        self.branch_after = ""  # a deploy of a push: the branch the hook moves to its commit once it is live
        self.probed: Probed | None = None  # the deploy's one probe of its release (appprobe): asked once
        self.probe_lock = threading.Lock()  # lanes side by side ask it at once: one runs it, the others wait
        self._lane = threading.local()  # in a lane's thread: its step's name (the log's tag) and the stage's stop

    def forced(self) -> bool:
        """True once someone asked to cancel this job with --force: even a migrate is killed."""
        return self.cancellable and self.store.cancel_requested(self.job.id, force=True)

    def cancelled(self) -> bool:
        """True once someone asked to cancel this job (and it is still before its switch)."""
        stop = getattr(self._lane, "stop", None)
        return self.cancellable and (self.store.cancel_requested(self.job.id) or bool(stop and stop.is_set()))

    def log(self, message: str) -> None:
        """A line of the job's log; the listener's own log (supervisord's) repeats it but for commands' output."""
        tag = getattr(self._lane, "name", "")
        if tag:  # a step side by side with others: each of its lines says whose it is
            out = message.startswith(runner.OUTPUT)
            message = f"{runner.OUTPUT}[{tag}] {message[len(runner.OUTPUT) :]}" if out else f"[{tag}] {message}"
        line = f"[{time.monotonic() - self.started:6.2f}s] {message}"
        self.store.append_log(self.job.id, line)
        if not message.startswith(runner.OUTPUT):
            print(f"{self.app.name} job {self.job.id}: {escape_controls(message)}", file=sys.stderr, flush=True)

    def step(self, name: str, fn: Callable[..., T], *args: Any) -> T:
        """Run one named step, log it with its duration, and record it in the job."""
        if self.cancelled():
            raise Cancelled(f"cancelled before {name}")
        if self.cancellable and self.stopping.is_set():
            raise Interrupted(f"interrupted before {name}: the listener is stopping")
        failpoint.hit(self.store.dir, name)
        self.log(f"{name} ...")
        self.store.update_job(self.job.id, step=name)
        t0 = time.monotonic()
        ok = False
        try:
            result = fn(self, *args)
            ok = True
            return result
        finally:
            seconds = round(time.monotonic() - t0, 3)
            self.steps.append({"name": name, "seconds": seconds, "ok": ok, "ended": time.time()})
            self.store.update_job(self.job.id, steps=self.steps)
            self.log(f"{name} {'done' if ok else 'FAILED'} in {seconds:.2f} s")

    def side_by_side(self, lanes: Sequence[Sequence[tuple[Any, ...]]]) -> None:
        """Lanes of steps ``(name, fn, *args)`` at once, each lane's steps in order; returns when all ended.

        The first failure stops the others (a running command is killed as by a cancel, no next step starts)
        and is raised; each line a lane logs is tagged with its step, so outputs stay apart in one log.
        """
        if len(lanes) == 1:
            for name, fn, *args in lanes[0]:
                self.step(name, fn, *args)
            return
        stop, failures = threading.Event(), []

        def lane(steps: Sequence[tuple[Any, ...]]) -> None:
            self._lane.stop = stop
            for name, fn, *args in steps:
                self._lane.name = name
                try:
                    self.step(name, fn, *args)
                except BaseException as exc:  # noqa: BLE001 (raised again by the caller's thread)
                    if failures and stop.is_set():
                        self.log(f"stopped: {failures[0]}")
                    failures.append(exc)
                    stop.set()
                    return

        threads = [threading.Thread(target=lane, args=(steps,), name=f"lane-{steps[0][0]}") for steps in lanes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failures:
            raise failures[0]

    def announce(self, event: str, text: str, **fields: Any) -> None:
        """Tell the app's webhooks; a webhook that is down only shows in the log."""
        notify.announce(self.app, self.job.id, self.log, event, text, **fields)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

"""The thread that guards an app's watch window (watch.py) from the instant of the go-live.

It runs beside the app's job worker, not after it: a deploy is still restarting Celery for
seconds after its record step, and a release that dies then must not wait for that. The workers
run the new release too: a crash of one of them during the window rolls back as the web color's does. On a crash
event or failed probes it runs the automatic rollback job at once, in this thread; the workers
handover is serialized with any other (golive.hand_over_workers follows whatever is live).
The window itself is state: a listener restarted during it resumes it here. A supervisord that
shuts down or reloads stops the new color itself (its probes fail) and refuses to start anything:
that is no crash, so the window is suspended, never rolled back, and resumes on the next start.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from supervisor_bluegreen.host import health, links
from supervisor_bluegreen.host.supervisor import ProcessWatch, Supervisor, SupervisorError
from supervisor_bluegreen.listener.jobs import execute
from supervisor_bluegreen.listener.run import Run
from supervisor_bluegreen.listener.watch import Outcome, Verdict, observe
from supervisor_bluegreen.shared.config import App
from supervisor_bluegreen.shared.jobargs import RollbackArgs, stored
from supervisor_bluegreen.shared.model import ACTIVE, Kind, Status, Window
from supervisor_bluegreen.shared.store import Store


class Guarded(Protocol):
    """What the guard needs of the app's job worker (loop.AppWorker): the app, its store and events."""

    app: App
    store: Store
    watch: ProcessWatch  # crash events
    stopping: threading.Event  # the listener stops
    wake: threading.Event  # set when the window ends: deploys that waited for it go on

    def new_run(self, store: Store, job: dict[str, Any]) -> Run: ...


class WindowGuard(threading.Thread):
    """Watches the open window of one app, if any, and rolls back by itself when the new color fails."""

    def __init__(self, worker: Guarded, log: Callable[[str], None]) -> None:
        super().__init__(name=f"bluegreen-{worker.app.name}-guard", daemon=True)
        self.worker, self.log = worker, log
        self.wake = threading.Event()
        worker.watch.subscribe(self.wake)  # crash events, and a go-live's notify, wake it at once

    def run(self) -> None:
        while not self.worker.stopping.is_set():
            try:
                store = self.worker.store
                window = Window.from_state(store.read().get("watch"))
                if window is not None:
                    self.guard(store, window)
            except Exception as exc:  # noqa: BLE001 (keep guarding; the next loop reads the state again)
                self.log(f"{self.worker.app.name}: watch: {type(exc).__name__}: {exc}")
                time.sleep(1.0)
            self.wake.wait(timeout=1.0)
            self.wake.clear()

    def guard(self, store: Store, window: Window) -> None:
        """Watch ``window.color`` until its window passes, ends, or rolls back."""
        app = self.worker.app
        try:
            color = app.color(window.color)
            app.color(window.previous)
            live = links.live_color(app)
        except (KeyError, links.LiveLinkError) as exc:
            self.end(store, window, Outcome(Verdict.ENDED, f"window dropped: {exc}"))
            return
        if live != window.color:
            self.end(store, window, Outcome(Verdict.ENDED, f"{window.color} is no longer live"))
            return
        self.wait_started(color.program, window)
        # they run the new release too: theirs are its crashes
        workers = (*color.workers, *(app.deploy.workers if app.deploy else ()))
        since = time.monotonic() - max(0.0, time.time() - window.since)  # crash events from the go-live on
        self.log(f"{app.name}: watching {window.color} for {window.remaining():.0f} s more")
        outcome = observe(
            window,
            app.watch,
            crashed=lambda: self.crashed((color.program, *workers), since),
            probe=lambda: health.probe(color.socket, app.health),
            interrupted=lambda: self.interruption(store, window),
            wait=self.wake.wait,
        )
        if outcome.verdict is Verdict.ROLLBACK and Supervisor.from_env().stopping():
            self.log(f"{app.name}: {outcome.reason}, but supervisord is stopping: no rollback, the window waits")
            outcome = Outcome(Verdict.SUSPENDED)
        if outcome.verdict is Verdict.SUSPENDED:
            self.log(f"{app.name}: watch window suspended; it resumes when the listener is back")
            return
        if outcome.verdict is Verdict.ROLLBACK:
            store.append_log(window.job, f"rolling back automatically: {outcome.reason}")
            args = stored(RollbackArgs(reason=outcome.reason, failed=window.color))
            job = store.claim(store.enqueue(Kind.ROLLBACK, args, "bluegreen watch")["id"])
            if job:
                execute(self.worker.new_run(store, job))
                done = store.read_job(job["id"]) or {}
                if done.get("status") == Status.INTERRUPTED:  # supervisord or the listener stopping: resumed on restart
                    self.log(f"{app.name}: automatic rollback interrupted; the window resumes on the next start")
                    return
                if done.get("status") != Status.SUCCEEDED:
                    outcome = Outcome(Verdict.ENDED, f"automatic rollback failed: {done.get('message', '')}")
        self.end(store, window, outcome)  # wakes the worker: deploys that waited for the window go on

    def wait_started(self, program: str, window: Window) -> None:
        """A window resumed after supervisord started again finds the color STARTING: not answering yet is no failure.

        Bounded by the window; a release that crashes on start leaves STARTING with a crash event the watch sees.
        """
        sup = Supervisor.from_env()
        said = False
        while not self.worker.stopping.is_set() and window.remaining() > 0:
            try:
                if sup.state(program) != "STARTING":
                    return
            except (SupervisorError, OSError):
                return
            if not said:
                self.log(f"{self.worker.app.name}: {program} is STARTING; watching it once it runs")
                said = True
            self.worker.stopping.wait(timeout=0.3)

    def crashed(self, programs: tuple[str, ...], since: float) -> str | None:
        """A crash event of one of ``programs`` (the live color's, its workers') since the go-live, named."""
        for program in programs:
            state = self.worker.watch.crashed_since(program, since)
            if state:
                return f"{program} went {state}"
        return None

    def interruption(self, store: Store, window: Window) -> Outcome | None:
        """Why a window ends before its time: the listener stops, or a person switched or asked to."""
        if self.worker.stopping.is_set():
            return Outcome(Verdict.SUSPENDED)
        try:
            live = links.live_color(self.worker.app)  # a readlink: cheap enough for every turn
        except links.LiveLinkError:
            live = None
        if live != window.color:
            return Outcome(Verdict.ENDED, f"{window.color} is no longer live")
        if not self.wake.is_set():
            return None
        self.wake.clear()
        for job in store.jobs(ACTIVE):
            if job["kind"] in (Kind.SWITCH, Kind.ROLLBACK) and not job.get("args", {}).get("reason"):
                return Outcome(Verdict.ENDED, f"cut short by {job['kind']} job {job['id']}")
        return None

    def end(self, store: Store, window: Window, outcome: Outcome) -> None:
        """Close the window in the state and tell the job that opened it (its log and ``watch``)."""
        if Window.from_state(store.read().get("watch")) == window:
            store.update(watch=None)
        text = {
            Verdict.PASSED: f"watch: {window.color} held for {window.until - window.since:g} s",
            Verdict.ROLLBACK: f"rolled back automatically: {outcome.reason}",
            Verdict.ENDED: f"watch ended: {outcome.reason}",
        }[outcome.verdict]
        store.append_log(window.job, text)
        store.update_job(window.job, watch={"state": outcome.verdict.value, "reason": outcome.reason})
        self.log(f"{self.worker.app.name}: {text}")
        self.worker.wake.set()

"""The sequences the listener runs for a job: switch, rollback, health; each step a named call.

A step either completes or raises StepFailed with a message that says what went wrong; the
sequence then stops and the job ends failed. Nothing before ``flip`` touches live traffic, and
``flip`` restores the links itself when it fails, so a failed job always leaves live as it was.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections import defaultdict
from typing import Any, Callable, TypeVar

from . import failpoint, health, notify, steps, switch, workers
from .config import App, Color
from .jobargs import HealthArgs, NoArgs, RollbackArgs, SwitchArgs
from .migration_gate import GateReport
from .state import Store
from .supervisor_api import CRASH_STATES, ShuttingDown, Supervisor, SupervisorError
from .textsafe import escape_controls
from .watch import Window

T = TypeVar("T")
_WORKERS_LOCKS: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)  # per app, across its threads


class StepFailed(Exception):
    """A step could not complete; the message is shown to the user as the reason."""


class Interrupted(StepFailed):
    """The listener is stopping: no new step starts before the switch; the job ends "interrupted"."""


def supervisor_failed(exc: SupervisorError) -> StepFailed:
    """A refusal of supervisord as a step's failure; while supervisord shuts down the job is interrupted."""
    if isinstance(exc, ShuttingDown):
        return Interrupted(f"interrupted: supervisord is shutting down ({exc})")
    return StepFailed(str(exc))


class ProcessWatch:
    """The last crash PROCESS_STATE events reported of each program, and when.

    Crashes are kept, not the latest state: supervisord may restart a crashed program at once,
    so EXITED is followed by STARTING and RUNNING before a health gate looks again.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._crashed: dict[str, tuple[str, float]] = {}
        self._subscribers: list[threading.Event] = []

    def subscribe(self, event: threading.Event) -> None:
        """Have ``event`` set on every crash: a watch window wakes at once instead of at its next probe."""
        self._subscribers.append(event)

    def notify(self) -> None:
        """Wake every subscriber now (a go-live opened a window: watch it from this instant)."""
        for event in self._subscribers:
            event.set()

    def update(self, program: str, state: str) -> None:
        if state in CRASH_STATES:
            with self._lock:
                self._crashed[program] = (state, time.monotonic())
            for event in self._subscribers:
                event.set()

    def crashed_since(self, program: str, t0: float) -> str | None:
        """The last crash state (BACKOFF, FATAL, EXITED) ``program`` entered after ``t0``, if any."""
        with self._lock:
            state, when = self._crashed.get(program, ("", 0.0))
        return state if state and when >= t0 else None


class Run:
    """One job being executed: where its log goes, its timings, and the handles it needs."""

    def __init__(
        self,
        app: App,
        store: Store,
        job: dict[str, Any],
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

    def forced(self) -> bool:
        """True once someone asked to cancel this job with --force: even a migrate is killed."""
        return self.cancellable and self.store.cancel_requested(self.job["id"], force=True)

    def cancelled(self) -> bool:
        """True once someone asked to cancel this job (and it is still before its switch)."""
        return self.cancellable and self.store.cancel_requested(self.job["id"])

    def log(self, message: str) -> None:
        """A line of the job's log; the listener's own log (supervisord's) repeats it but for commands' output."""
        line = f"[{time.monotonic() - self.started:6.2f}s] {message}"
        self.store.append_log(self.job["id"], line)
        if not message.startswith(steps.OUTPUT):
            print(f"{self.app.name} job {self.job['id']}: {escape_controls(message)}", file=sys.stderr, flush=True)

    def step(self, name: str, fn: Callable[..., T], *args: Any) -> T:
        """Run one named step, log it with its duration, and record it in the job."""
        if self.cancelled():
            raise StepFailed(f"cancelled before {name}")
        if self.cancellable and self.stopping.is_set():
            raise Interrupted(f"interrupted before {name}: the listener is stopping")
        failpoint.hit(self.store.dir, name)
        self.log(f"{name} ...")
        self.store.update_job(self.job["id"], step=name)
        t0 = time.monotonic()
        ok = False
        try:
            result = fn(self, *args)
            ok = True
            return result
        finally:
            seconds = round(time.monotonic() - t0, 3)
            self.steps.append({"name": name, "seconds": seconds, "ok": ok, "ended": time.time()})
            self.store.update_job(self.job["id"], steps=self.steps)
            self.log(f"{name} {'done' if ok else 'FAILED'} in {seconds:.2f} s")

    def announce(self, event: str, text: str, **fields: Any) -> None:
        """Tell the app's webhooks; a webhook that is down only shows in the log."""
        notify.announce(self.app, self.job, self.log, event, text, **fields)

    def elapsed(self) -> float:
        return time.monotonic() - self.started


# -- steps ---------------------------------------------------------------------------------
def checkout_version(app: App, color: Color) -> str:
    """The short commit of a color's checkout ('' when it has none or is not a git work tree).

    git runs as the app's user, never as whoever owns what the path leads to: the app user can make its
    checkout a link to a folder of root's, and git would then run as root there.
    """
    if not color.checkout:
        return ""
    user = app.deploy.user if app.deploy else ""
    try:
        out = steps.capture(["git", "-C", color.checkout, "rev-parse", "--short", "HEAD"], user=user, timeout=10)
    except (OSError, KeyError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def reconcile_links(app: App, store: Store, log: Callable[[str], None]) -> str | None:
    """Take the live color from the links (the real world), repair a half-moved set, record it.

    A job killed between moving traffic and recording it left a ``switching`` intent: when the
    links say its target is live, the move happened, so the color it left is the rollback target
    and a watch window opens, as if the job had finished its record step. LiveLinkError when the
    deciding link points at no color.
    """
    live = switch.live_color(app)
    if live is not None:
        switch.point(app, app.color(live))
    state = store.read()
    if state.get("live") != live:
        log(f"state said live={state.get('live')}, links say {live}: recording {live}")
    versions = {c.name: {"version": checkout_version(app, c)} for c in app.colors}
    changes: dict[str, Any] = {"live": live, "colors": versions}
    pending = state.get("switching")
    if isinstance(pending, dict):
        if live == pending.get("to") and pending.get("from") != live:
            log(f"an interrupted {pending.get('kind')} job {pending.get('job')} had made {live} live: recorded")
            previous = pending.get("previous") or None
            changes.update(previous=previous, switched_at=time.time(), workers_restarting=live)
            window = Window.opened(
                live, previous or "", int(pending.get("job") or 0), app.watch, str(pending.get("kind"))
            )
            changes["watch"] = window.record() if window else None
        changes["switching"] = None
    store.update(**changes)
    return live


def reconcile(run: Run) -> str | None:
    try:
        run.live_before = reconcile_links(run.app, run.store, run.log)
    except switch.LiveLinkError as exc:
        raise StepFailed(f"refusing to act: {exc}") from None
    return run.live_before


def choose_target(app: App, live: str | None, wanted: str) -> Color:
    """The color to switch to: ``wanted`` if named, else the one that is not live."""
    if wanted:
        target = app.color(wanted)
    elif live is None:
        raise StepFailed(f"no color is live yet: name the first one (one of {', '.join(app.color_names)})")
    else:
        target = app.other(live)
    if target.name == live:
        raise StepFailed(f"{target.name} is already live")
    return target


def require_running(run: Run, target: Color) -> float:
    """The target must already run under supervisor: switch and rollback never build or start.

    Returns the instant of the check, from which its crashes count: one that dies right after it
    answered RUNNING ends the health gate at once, named as a crash.
    """
    since = time.monotonic()
    try:
        state = run.sup.state(target.program)
    except SupervisorError as exc:
        raise supervisor_failed(exc) from None
    if state != "RUNNING":
        raise StepFailed(f"{target.name} ({target.program}) is {state}, not RUNNING")
    return since


def health_gate(run: Run, target: Color, since: float | None = None) -> None:
    """N consecutive good GETs over the target's own socket; abort at once if it stops running.

    ``since``: process events from that instant on count (a deploy passes when it started the target).
    """
    t0 = time.monotonic() if since is None else since

    def aborted() -> str | None:
        if run.cancelled():
            return "cancelled"
        state = run.watch.crashed_since(target.program, t0)
        return f"{target.program} went {state}" if state else None

    result = health.gate(target.socket, run.app.health, aborted, report=lambda p: run.log(f"  probe: {p.describe()}"))
    run.store.update(last_health=health_record(target.name, result.last))
    if not result.ok:
        tail = stderr_summary(run.sup.stderr_tail(target.program))
        detail = f"\n--- {target.program} stderr (errors, then the last lines) ---\n{tail}" if tail else ""
        raise StepFailed(f"{target.name} is not healthy: {result.reason}{detail}")


def stderr_summary(tail: str, last: int = 12) -> str:
    """The error lines of a stderr tail (``RuntimeError: ...``), then its last lines: why it died, briefly."""
    lines = tail.splitlines()[1:]  # the first line is cut by the byte offset
    errors = [line for line in lines[:-last] if re.match(r"^[\w.]*(Error|Exception)\b", line)]
    return "\n".join(errors[-5:] + lines[-last:]).strip()


def health_record(color: str, probe: health.Probe | None) -> dict[str, Any]:
    return {
        "color": color,
        "ok": bool(probe and probe.ok),
        "detail": probe.detail if probe else "no probe",
        "at": time.time(),
    }


def flip(run: Run, target: Color) -> None:
    """Move traffic, with the intent recorded first: a kill before ``go_live`` is finished on restart."""
    run.cancellable = False
    automatic = bool(run.job.get("args", {}).get("reason"))  # the color it leaves failed: no rollback target
    run.store.update(
        switching={
            "job": run.job["id"],
            "kind": run.job["kind"],
            "from": run.live_before,
            "to": target.name,
            "previous": None if automatic else run.live_before,
        }
    )
    try:
        switch.flip(run.app, target, run.log)
    except switch.SwitchError as exc:
        run.store.update(switching=None)
        raise StepFailed(f"could not switch: {exc}; links restored") from None


def public_probe(app: App) -> health.Probe:
    return health.probe(app.public_url, app.health, host=app.public_host or app.health.host)


def marker(app: App, probe: health.Probe) -> str:
    """The color a response through nginx says it came from ('' when not configured)."""
    header = "x-bluegreen-site" if app.switch_mode == "nginx" else app.color_header.lower()
    return probe.headers.get(header, "") if header else ""


def verify_public(run: Run, target: Color, live: str | None) -> None:
    """Through the public nginx listener, the new color answers; otherwise switch back."""
    app, deadline = run.app, time.monotonic() + 5.0
    while True:
        probe = public_probe(app)
        seen = marker(app, probe)
        if probe.ok and seen in ("", target.name):
            run.log(f"public {app.public_url}: {probe.describe()} from {seen or 'the live socket'}")
            return
        if time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    reason = f"public {app.public_url} answered {probe.detail}" + (f" from {seen}" if seen else "")
    try:
        if live is not None:
            switch.flip(app, app.color(live), run.log)
        else:
            switch.restore(app, {link: None for link, _ in switch.planned_links(app, target)})
    except (switch.SwitchError, OSError) as exc:
        raise StepFailed(f"{reason}; switching back failed too: {exc}") from None
    finally:
        run.store.update(switching=None)
    raise StepFailed(f"{reason}; " + (f"switched back to {live}" if live else "links removed again"))


def restart_workers(run: Run, target: Color) -> None:
    """Restart each worker program gracefully through supervisor and see it run the new live checkout.

    After every change of the live color, deploy, switch or rollback alike: the workers follow the
    live_root link, and until restarted they keep running the code traffic just left.
    """
    config = run.app.deploy
    if not config or not config.workers:
        return
    with _WORKERS_LOCKS[run.app.name]:  # the watch window's rollback may restart them at the same time
        live = live_by_links_now(run.app)
        if live and live != target.name:
            run.log(f"{target.name} is no longer live: the workers follow {live}")
            target = run.app.color(live)
        run.store.update(workers_restarting=target.name)  # a kill from here on: the next start restarts them
        for program in config.workers:
            try:
                workers.restart(
                    run.sup,
                    run.watch,
                    program,
                    target,
                    config.worker_timeout,
                    run.log,
                    stopped=lambda: failpoint.hit(run.store.dir, "workers.stopped"),
                )
            except workers.WorkerError as exc:
                if live_by_links_now(run.app) not in (None, target.name):  # an automatic rollback moved traffic
                    run.log(f"{exc}; traffic moved meanwhile: the rollback restarts them again")
                    return
                raise StepFailed(str(exc)) from None
        run.store.update(workers_restarting=None)


def live_by_links_now(app: App) -> str | None:
    """The live color as the links say (None when they say nothing sure)."""
    try:
        return switch.live_color(app)
    except switch.LiveLinkError:
        return None


def go_live(run: Run, live: str | None, target: Color, automatic: bool = False, **changes: Any) -> Window | None:
    """Record ``target`` as live and ``live`` as the rollback target, and open the watch window.

    One atomic state write: live, previous, the window and the end of the ``switching`` intent
    are never seen apart, nor is the note that the workers must follow. An ``automatic`` rollback
    leaves no rollback target (the color it left failed); only a deploy or a switch opens a window
    (a rollback goes back to what served before).
    """
    previous = None if automatic else live
    if run.job["kind"] != "deploy":  # a switch's or rollback's history row: the color and commit that went live
        recorded = (changes.get("colors") or run.store.read().get("colors") or {}).get(target.name) or {}
        run.store.update_job(
            run.job["id"], color=target.name, commit=recorded.get("commit") or recorded.get("version") or ""
        )
    window = Window.opened(target.name, previous or "", run.job["id"], run.app.watch, run.job["kind"])
    run.store.update(
        live=target.name,
        previous=previous,
        switched_at=time.time(),
        switching=None,
        watch=window.record() if window else None,
        rollback_cleared=None,
        # the workers still run the code traffic just left: a kill before they are restarted is repaired on start
        workers_restarting=target.name if run.app.deploy and run.app.deploy.workers else None,
        **changes,
    )
    if window:
        run.store.update_job(run.job["id"], watch={"state": "running", "until": window.until})
        run.watch.notify()
    return window


def watching(window: Window | None, app: App, job_id: int) -> str:
    """What the end of a deploy or switch says about the window that runs after it."""
    if window is None:
        return ""
    return (
        f"\nwatching {window.color} for {window.until - window.since:g} s: a crash or "
        f"{app.watch.failures} failed probes in a row switch back to {window.previous} by themselves "
        f"(supervisorctl bluegreen status {app.name}; supervisorctl bluegreen log {app.name} {job_id} -f)"
    )


# -- sequences -----------------------------------------------------------------------------
def switch_to(run: Run, args: SwitchArgs) -> str:
    """Health-gated switch: like the seed's hook, but only to a color that really answers."""
    live = run.step("reconcile", reconcile)
    target = choose_target(run.app, live, args.wanted)
    since = run.step("check target", require_running, target)
    run.step("health gate", health_gate, target, since)
    run.step("switch", flip, target)
    run.step("verify", verify_public, target, live)
    window = run.step("record", go_live, live, target)
    if run.app.deploy and run.app.deploy.workers:
        run.step("workers", restart_workers, target)
    was = f" (was {live})" if live else ""
    message = f"{run.app.name}: {target.name} live{was} in {run.elapsed():.1f} s"
    return message + watching(window, run.app, run.job["id"])


def rollback(run: Run, args: RollbackArgs) -> str:
    """Back to the previous color, still running and warm: the same gate, no rebuild.

    With ``reason`` it is the watch window's automatic rollback: the live color is dying and
    every moment costs requests, so traffic moves as soon as supervisor says the previous color
    runs (it served a minute ago, and its health is checked right after); the color that failed
    is stopped and is no rollback target.
    """
    reason, failed = args.reason, args.failed
    previous = run.store.read().get("previous")
    if not previous:
        raise StepFailed("nothing to roll back to: no previous color recorded")
    if not reason:
        message = switch_to(run, SwitchArgs(previous))
        run.announce("rollback", message, color=previous)
        return message
    live = run.step("live color", live_by_links)
    if failed and live != failed:
        raise StepFailed(f"{failed} is no longer live ({live or 'none'} is): nothing to roll back")
    target = run.app.color(previous)
    run.log(f"rolling back automatically: {reason}")
    run.step("check target", require_running, target)
    run.step("switch", flip, target)
    run.step("record", go_live, live, target, True)
    run.step("probe", probe_once, target)
    if live:
        run.step("stop failed color", stop_failed, run.app.color(live))
    if run.app.deploy and run.app.deploy.workers:
        run.step("workers", restart_workers, target)
    message = f"{run.app.name}: rolled back automatically to {previous}: {reason}"
    run.announce("rollback", message, color=previous, reason=reason)
    return message


def live_by_links(run: Run) -> str | None:
    """The live color as the links say, without reconcile's repairs and git reads: fast, for a rollback."""
    try:
        run.live_before = switch.live_color(run.app)
    except switch.LiveLinkError as exc:
        raise StepFailed(f"refusing to act: {exc}") from None
    return run.live_before


def probe_once(run: Run, target: Color) -> None:
    """One GET over the color just made live: it answered a minute ago, so this only reports."""
    probe = health.probe(target.socket, run.app.health)
    run.store.update(last_health=health_record(target.name, probe))
    run.log(f"{target.name}: {probe.describe()}")
    if not probe.ok:
        raise StepFailed(f"{target.name} is live again but does not answer either: {probe.describe()}")


def stop_failed(run: Run, color: Color) -> None:
    """Show why the rolled-back color failed (its stderr, in the log only), then stop it."""
    tail = stderr_summary(run.sup.stderr_tail(color.program))
    if tail:
        run.log(f"--- {color.program} stderr (errors, then the last lines) ---\n{tail}")
    try:
        run.sup.stop(color.program)
    except SupervisorError as exc:
        run.log(f"could not stop {color.program}: {exc}")


def recover(run: Run, args: NoArgs) -> str:
    """After a listener restart: finish the record of an interrupted go-live, restart the workers it left."""
    live = run.step("reconcile", reconcile)
    if live and run.store.read().get("workers_restarting"):
        run.step("workers", restart_workers, run.app.color(live))
    return f"{run.app.name}: repaired after a listener restart: {live or 'no color'} live"


def check_health(run: Run, args: HealthArgs) -> str:
    """Probe a color (default: the live one) now, once, and record the result."""
    try:
        name = args.color or switch.live_color(run.app)
    except switch.LiveLinkError as exc:
        raise StepFailed(str(exc)) from None
    if not name:
        raise StepFailed("no color is live yet: name one")
    target = run.app.color(name)
    probe = health.probe(target.socket, run.app.health)
    run.store.update(last_health=health_record(target.name, probe))
    if not probe.ok:
        raise StepFailed(f"{run.app.name} {target.name}: {probe.describe()}")
    return f"{run.app.name} {target.name}: {probe.describe()}"

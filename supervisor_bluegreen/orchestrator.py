"""The sequences the listener runs for a job: switch, rollback, health; each step a named call.

A step either completes or raises StepFailed with a message that says what went wrong; the
sequence then stops and the job ends failed. Nothing before ``flip`` touches live traffic, and
``flip`` restores the links itself when it fails, so a failed job always leaves live as it was.
"""

from __future__ import annotations

import os
import pwd
import re
import subprocess
import sys
import threading
import time
from typing import Any, Callable, TypeVar

from . import health, notify, steps, switch, workers
from .config import App, Color
from .state import Store
from .supervisor_api import CRASH_STATES, Supervisor, SupervisorError

T = TypeVar("T")


class StepFailed(Exception):
    """A step could not complete; the message is shown to the user as the reason."""


class ProcessWatch:
    """The last crash PROCESS_STATE events reported of each program, and when.

    Crashes are kept, not the latest state: supervisord may restart a crashed program at once,
    so EXITED is followed by STARTING and RUNNING before a health gate looks again.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._crashed: dict[str, tuple[str, float]] = {}

    def update(self, program: str, state: str) -> None:
        if state in CRASH_STATES:
            with self._lock:
                self._crashed[program] = (state, time.monotonic())

    def crashed_since(self, program: str, t0: float) -> str | None:
        """The last crash state (BACKOFF, FATAL, EXITED) ``program`` entered after ``t0``, if any."""
        with self._lock:
            state, when = self._crashed.get(program, ("", 0.0))
        return state if state and when >= t0 else None


class Run:
    """One job being executed: where its log goes, its timings, and the handles it needs."""

    def __init__(self, app: App, store: Store, job: dict[str, Any], sup: Supervisor, watch: ProcessWatch):
        self.app, self.store, self.job, self.sup, self.watch = app, store, job, sup, watch
        self.started = time.monotonic()
        self.steps: list[dict[str, Any]] = []
        self.live_before: str | None = None  # set by reconcile: what "unchanged" means in a failure
        self.cancellable = True  # until traffic moves: then a deploy finishes what it started

    def cancelled(self) -> bool:
        """True once someone asked to cancel this job (and it is still before its switch)."""
        return self.cancellable and os.path.exists(self.store.cancel_path(self.job["id"]))

    def log(self, message: str) -> None:
        line = f"[{time.monotonic() - self.started:6.2f}s] {message}"
        self.store.append_log(self.job["id"], line)
        print(f"{self.app.name} job {self.job['id']}: {message}", file=sys.stderr, flush=True)

    def step(self, name: str, fn: Callable[..., T], *args: Any) -> T:
        """Run one named step, log it with its duration, and record it in the job."""
        if self.cancelled():
            raise StepFailed(f"cancelled before {name}")
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
def checkout_version(color: Color) -> str:
    """The short commit of a color's checkout ('' when it has none or is not a git work tree)."""
    if not color.checkout:
        return ""
    try:
        owner = pwd.getpwuid(os.stat(color.checkout).st_uid).pw_name  # git refuses others' work trees
        out = steps.capture(["git", "-C", color.checkout, "rev-parse", "--short", "HEAD"], user=owner, timeout=10)
    except (OSError, KeyError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def reconcile_links(app: App, store: Store, log: Callable[[str], None]) -> str | None:
    """Take the live color from the links (the real world), repair a half-moved set, record it."""
    live = switch.live_color(app)
    if live is not None:
        switch.point(app, app.color(live))
    state = store.read()
    if state.get("live") != live:
        log(f"state said live={state.get('live')}, links say {live}: recording {live}")
    store.update(live=live, colors={c.name: {"version": checkout_version(c)} for c in app.colors})
    return live


def reconcile(run: Run) -> str | None:
    run.live_before = reconcile_links(run.app, run.store, run.log)
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


def require_running(run: Run, target: Color) -> None:
    """The target must already run under supervisor: switch and rollback never build or start."""
    try:
        state = run.sup.state(target.program)
    except SupervisorError as exc:
        raise StepFailed(str(exc)) from None
    if state != "RUNNING":
        raise StepFailed(f"{target.name} ({target.program}) is {state}, not RUNNING")


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
    run.cancellable = False
    try:
        switch.flip(run.app, target, run.log)
    except switch.SwitchError as exc:
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
    if live is not None:
        switch.flip(app, app.color(live), run.log)
        raise StepFailed(f"{reason}; switched back to {live}")
    switch.restore(app, {link: None for link, _ in switch.planned_links(app, target)})
    raise StepFailed(f"{reason}; links removed again")


def restart_workers(run: Run, target: Color) -> None:
    """Restart each worker program gracefully through supervisor and see it run the new live checkout.

    After every change of the live color, deploy, switch or rollback alike: the workers follow the
    live_root link, and until restarted they keep running the code traffic just left.
    """
    config = run.app.deploy
    for program in config.workers if config else ():
        try:
            workers.restart(run.sup, run.watch, program, target, config.worker_timeout, run.log)
        except workers.WorkerError as exc:
            raise StepFailed(str(exc)) from None


def record_switch(run: Run, live: str | None, target: Color) -> None:
    run.store.update(live=target.name, previous=live, switched_at=time.time())


# -- sequences -----------------------------------------------------------------------------
def switch_to(run: Run, wanted: str = "") -> str:
    """Health-gated switch: like the seed's hook, but only to a color that really answers."""
    live = run.step("reconcile", reconcile)
    target = choose_target(run.app, live, wanted)
    run.step("check target", require_running, target)
    run.step("health gate", health_gate, target)
    run.step("switch", flip, target)
    run.step("verify", verify_public, target, live)
    run.step("record", record_switch, live, target)
    if run.app.deploy and run.app.deploy.workers:
        run.step("workers", restart_workers, target)
    was = f" (was {live})" if live else ""
    return f"{run.app.name}: {target.name} live{was} in {run.elapsed():.1f} s"


def rollback(run: Run) -> str:
    """Back to the previous color, still running and warm: the same gate, no rebuild."""
    previous = run.store.read().get("previous")
    if not previous:
        raise StepFailed("nothing to roll back to: no previous color recorded")
    message = switch_to(run, previous)
    run.announce("rollback", message, color=previous)
    return message


def check_health(run: Run, color: str = "") -> str:
    """Probe a color (default: the live one) now, once, and record the result."""
    name = color or switch.live_color(run.app)
    if not name:
        raise StepFailed("no color is live yet: name one")
    target = run.app.color(name)
    probe = health.probe(target.socket, run.app.health)
    run.store.update(last_health=health_record(target.name, probe))
    if not probe.ok:
        raise StepFailed(f"{run.app.name} {target.name}: {probe.describe()}")
    return f"{run.app.name} {target.name}: {probe.describe()}"

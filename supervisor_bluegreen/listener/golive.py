"""The steps every traffic move shares: reconcile, check and gate the target, flip, verify, record, workers.

Nothing before ``flip`` touches live traffic, and ``flip`` restores the links itself when it fails, so
a failed job always leaves live as it was. deploy, switch, rollback and recover are made of these.
"""

from __future__ import annotations

import re
import socket
import subprocess
import threading
import time
from collections import defaultdict
from typing import Any, Callable

from supervisor_bluegreen.host import health, links, releases, runner, workers
from supervisor_bluegreen.host.supervisor import Supervisor, SupervisorError
from supervisor_bluegreen.listener import failpoint
from supervisor_bluegreen.listener.run import Run, StepFailed, supervisor_failed
from supervisor_bluegreen.shared import maintenance
from supervisor_bluegreen.shared.config import App, Color
from supervisor_bluegreen.shared.model import OPENED_BY, Kind, Window
from supervisor_bluegreen.shared.store import Store

_WORKERS_LOCKS: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)  # per app, across its threads


def checkout_commit(app: App, color: Color) -> str:
    """The commit of a color's checkout ('' when it has none or is not a git work tree): status shows its
    first 7 digits, and a fleet's tools compare the whole id.

    git runs as the app's user, never as whoever owns what the path leads to: the app user can make its
    checkout a link to a folder of root's, and git would then run as root there.
    """
    if not color.checkout:
        return ""
    try:
        out = runner.capture(["git", "-C", color.checkout, "rev-parse", "HEAD"], user=app.user, timeout=10)
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
    live = links.live_color(app)
    if live is not None:
        links.point(app, app.color(live))
    state = store.read()
    if state.get("live") != live:
        log(f"state said live={state.get('live')}, links say {live}: recording {live}")
    running = releases.running(app) if app.deploy else {}  # what each color's root link leads to
    commits = {c.name: checkout_commit(app, c) for c in app.colors}
    versions = {
        c.name: {
            "version": commits[c.name][:7],
            "commit": commits[c.name],
            **({"release": running[c.name]} if c.name in running else {}),
        }
        for c in app.colors
    }
    changes: dict[str, Any] = {"live": live, "colors": versions}
    pending = state.get("switching")
    if isinstance(pending, dict):
        if live == pending.get("to") and pending.get("from") != live:
            log(f"an interrupted {pending.get('kind')} job {pending.get('job')} had made {live} live: recorded")
            previous = pending.get("previous") or None
            changes.update(previous=previous, switched_at=time.time(), workers_restarting=live)
            window = Window.opened(
                live,
                previous or "",
                int(pending.get("job") or 0),
                app.watch,
                bool(pending.get("watched", pending.get("kind") in OPENED_BY)),  # a record from before "watched"
            )
            changes["watch"] = window.record() if window else None
        changes["switching"] = None
    store.update(**changes)
    return live


def reconcile(run: Run) -> str | None:
    try:
        run.live_before = reconcile_links(run.app, run.store, run.log)
    except links.LiveLinkError as exc:
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
    automatic = bool(run.job.args.get("reason"))  # the color it leaves failed: no rollback target
    run.store.update(
        switching={
            "job": run.job.id,
            "kind": run.job.kind,
            "from": run.live_before,
            "to": target.name,
            "previous": None if automatic else run.live_before,
            "watched": run.watched,
        }
    )
    try:
        links.flip(run.app, target, run.log)
    except links.SwitchError as exc:
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
        if probe.status == 503 and maintenance.page_exists(app):
            run.log(
                f"public {app.public_url}: 503, the maintenance page (bluegreen maintenance on): not checked through "
                f"nginx; {target.name} passed its own health gate"
            )
            return
        if time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    reason = f"public {app.public_url} answered {probe.detail}" + (f" from {seen}" if seen else "")
    try:
        if live is not None:
            links.flip(app, app.color(live), run.log)
        else:
            links.restore(app, {link: None for link, _ in links.planned_links(app, target)})
    except (links.SwitchError, OSError) as exc:
        raise StepFailed(f"{reason}; switching back failed too: {exc}") from None
    finally:
        run.store.update(switching=None)
    raise StepFailed(f"{reason}; " + (f"switched back to {live}" if live else "links removed again"))


def hand_over_workers(run: Run, target: Color) -> None:
    """The workers follow the new live color, after every change of it (deploy, switch, rollback alike).

    A color's own workers (``workers = NAME_%(color)s``) are handed over: ``target``'s start and answer
    before the other color's get their warm shutdown, so tasks never wait for a consumer. Workers that
    follow the live_root link are restarted (they ran the code traffic just left). Serialized per app: the
    watch window's rollback may move them at the same time, and each follows whatever is live by then.
    """
    app = run.app
    if not app.has_workers:
        return
    timeout, settle = (app.deploy.worker_timeout, app.deploy.worker_settle) if app.deploy else (120.0, 5.0)
    with _WORKERS_LOCKS[app.name]:
        live = live_by_links_now(app)
        if live and live != target.name:
            run.log(f"{target.name} is no longer live: the workers follow {live}")
            target = app.color(live)
        run.store.update(workers_restarting=target.name)  # a kill from here on: the next start moves them
        ready = worker_command(run, target, "worker_ping")
        quiesce = worker_command(run, target, "worker_quiesce")
        for new, old in zip(target.workers, app.other(target.name).workers):
            try:
                workers.hand_over(run.sup, run.watch, new, old, target, timeout, run.log, settle, ready,
                                  started=lambda: failpoint.hit(run.store.dir, "workers.started"),
                                  quiesce=quiesce)  # fmt: skip
            except workers.WorkerError as exc:
                raise StepFailed(worker_failed(run, new, target, exc)) from None
        for program in app.deploy.workers if app.deploy else ():
            try:
                workers.restart(
                    run.sup,
                    run.watch,
                    program,
                    target,
                    timeout,
                    run.log,
                    stopped=lambda: failpoint.hit(run.store.dir, "workers.stopped"),
                    settle=settle,
                )
            except workers.WorkerError as exc:
                raise StepFailed(worker_failed(run, program, target, exc)) from None
        run.store.update(workers_restarting=None)


def workers_astray(app: App, sup: Supervisor) -> bool:
    """Whether the colors' own workers are not as the live color needs them (its running, the other's down): after
    supervisord started (they do not start by themselves: which color's should, only the links say); a recover
    job then hands them over."""
    live = live_by_links_now(app)
    if not live:
        return False
    try:
        for color in app.colors:
            for program in color.workers:
                if (sup.state(program) in workers.DOWN) == (color.name == live):
                    return True
    except SupervisorError:
        return False
    return False


def worker_command(run: Run, target: Color, key: str) -> Callable[[str], bool] | None:
    """``worker_ping`` (Celery's ``inspect ping`` of one node: True once it answers, that is, consumes) or
    ``worker_quiesce`` (``control cancel_consumer``: True once it stopped consuming) for one worker program, as
    the app's user in ``target``'s checkout. None when it is not configured."""
    argv = getattr(run.app.deploy, key) if run.app.deploy else ()
    if not argv:
        return None
    env = runner.environment(target, run.app.user)
    host = socket.gethostname()

    def ask(program: str) -> bool:
        words = workers.worker_argv(runner.expand(argv, target), program, host)
        try:
            done = runner.capture(words, cwd=target.checkout, env=env, user=run.app.user, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return False
        return done.returncode == 0

    return ask


def workers_follow(run: Run, target: Color, message: str) -> str:
    """Traffic moved: the command that asked returns now, saying ``message``; this job goes on and hands the
    workers over (``status``, ``log -f`` show it; a failure there is the watch window's to roll back)."""
    if not run.app.has_workers:
        return message
    run.store.update_job(run.job.id, live=message)
    run.step("workers", hand_over_workers, target)
    return message


def worker_failed(run: Run, program: str, target: Color, exc: workers.WorkerError) -> str:
    """Why a worker failed, with its stderr, and what happens next: its crash is the window's to roll back."""
    tail = stderr_summary(run.sup.stderr_tail(program))
    detail = f"\n--- {program} stderr (errors, then the last lines) ---\n{tail}" if tail else ""
    live = live_by_links_now(run.app)
    if live not in (None, target.name):  # an automatic rollback moved traffic meanwhile
        return f"{exc}; traffic moved back to {live} meanwhile: its rollback restarts the workers there{detail}"
    window = Window.from_state(run.store.read().get("watch"))
    if window is not None and window.color == target.name:
        return f"{exc}; the watch window rolls back to {window.previous}, workers included{detail}"
    return f"{exc}{detail}"


def live_by_links_now(app: App) -> str | None:
    """The live color as the links say (None when they say nothing sure)."""
    try:
        return links.live_color(app)
    except links.LiveLinkError:
        return None


def go_live(run: Run, live: str | None, target: Color, automatic: bool = False, **changes: Any) -> Window | None:
    """Record ``target`` as live and ``live`` as the rollback target, and open the watch window.

    One atomic state write: live, previous, the window and the end of the ``switching`` intent
    are never seen apart, nor is the note that the workers must follow. An ``automatic`` rollback
    leaves no rollback target (the color it left failed); only a deploy or a switch opens a window
    (a rollback goes back to what served before).
    """
    previous = None if automatic else live
    if run.job.kind != Kind.DEPLOY:  # a switch's or rollback's history row: the color and commit that went live
        recorded = (changes.get("colors") or run.store.read().get("colors") or {}).get(target.name) or {}
        run.store.update_job(
            run.job.id, color=target.name, commit=recorded.get("commit") or recorded.get("version") or ""
        )
    window = Window.opened(target.name, previous or "", run.job.id, run.app.watch, run.watched)
    run.store.update(
        live=target.name,
        previous=previous,
        switched_at=time.time(),
        switching=None,
        watch=window.record() if window else None,
        rollback_cleared=None,
        # the workers still run the code traffic just left: a kill before they are restarted is repaired on start
        workers_restarting=target.name if run.app.has_workers else None,
        **changes,
    )
    if window:
        run.store.update_job(run.job.id, watch={"state": "running", "until": window.until})
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


def live_by_links(run: Run) -> str | None:
    """The live color as the links say, without reconcile's repairs and git reads: fast, for a rollback."""
    try:
        run.live_before = links.live_color(run.app)
    except links.LiveLinkError as exc:
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
    stop_color(run, color)


def stop_color(run: Run, color: Color) -> None:
    """Stop a color nobody is served by (a failed one, a build that never went live, a cleared rollback
    target): a refusal of supervisord is logged, never fatal, since no traffic depends on it."""
    try:
        run.sup.stop(color.program)
    except SupervisorError as exc:
        run.log(f"could not stop {color.program}: {exc}")

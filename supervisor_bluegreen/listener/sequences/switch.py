"""The sequences that move or check traffic without a build: switch, rollback, recover, health."""

from __future__ import annotations

from supervisor_bluegreen.host import health, links
from supervisor_bluegreen.listener.golive import (
    choose_target,
    flip,
    go_live,
    hand_over_workers,
    health_gate,
    health_record,
    live_by_links,
    probe_once,
    reconcile,
    require_running,
    stop_failed,
    verify_public,
    watching,
    workers_astray,
    workers_follow,
)
from supervisor_bluegreen.listener.run import Run, StepFailed
from supervisor_bluegreen.listener.sequences.release import cold_rollback, rollback_to
from supervisor_bluegreen.shared import releaselist
from supervisor_bluegreen.shared.jobargs import HealthArgs, NoArgs, RollbackArgs, SwitchArgs


def switch_to(run: Run, args: SwitchArgs) -> str:
    """Health-gated switch: like the seed's hook, but only to a color that really answers."""
    live = run.step("reconcile", reconcile)
    target = choose_target(run.app, live, args.wanted)
    since = run.step("check target", require_running, target)
    run.step("health gate", health_gate, target, since)
    run.step("switch", flip, target)
    run.step("verify", verify_public, target, live)
    window = run.step("record", go_live, live, target)
    was = f" (was {live})" if live else ""
    message = f"{run.app.name}: {target.name} live{was} in {run.elapsed():.1f} s"
    return workers_follow(run, target, message + watching(window, run.app, run.job.id))


def rollback(run: Run, args: RollbackArgs) -> str:
    """Back to the previous color, still running and warm: the same gate, no rebuild.

    With ``to`` (or when no previous color runs but releases are kept): a kept release started again
    in the idle color (release.py).

    With ``reason`` it is the watch window's automatic rollback: the live color is dying and
    every moment costs requests, so traffic moves as soon as supervisor says the previous color
    runs (it served a minute ago, and its health is checked right after); the color that failed
    is stopped and is no rollback target.
    """
    reason, failed = args.reason, args.failed
    if args.to:
        return rollback_to(run, args)
    previous = run.store.read().get("previous")
    if not previous and not reason and releaselist.recorded(run.store.read()):
        return cold_rollback(run, args)
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
    if run.app.has_workers:
        run.step("workers", hand_over_workers, target)
    message = f"{run.app.name}: rolled back automatically to {previous}: {reason}"
    run.announce("rollback", message, color=previous, reason=reason)
    return message


def recover(run: Run, args: NoArgs) -> str:
    """After a listener restart: finish the record of an interrupted go-live, move the workers it left (or that
    supervisord's start left: the live color's own ones stopped, the idle one's running)."""
    live = run.step("reconcile", reconcile)
    if live and (run.store.read().get("workers_restarting") or workers_astray(run.app, run.sup)):
        run.step("workers", hand_over_workers, run.app.color(live))
    return f"{run.app.name}: repaired after a listener restart: {live or 'no color'} live"


def check_health(run: Run, args: HealthArgs) -> str:
    """Probe a color (default: the live one) now, once, and record the result."""
    try:
        name = args.color or links.live_color(run.app)
    except links.LiveLinkError as exc:
        raise StepFailed(str(exc)) from None
    if not name:
        raise StepFailed("no color is live yet: name one")
    target = run.app.color(name)
    probe = health.probe(target.socket, run.app.health)
    run.store.update(last_health=health_record(target.name, probe))
    if not probe.ok:
        raise StepFailed(f"{run.app.name} {target.name}: {probe.describe()}")
    return f"{run.app.name} {target.name}: {probe.describe()}"

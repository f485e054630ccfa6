"""The sequences that start a kept release instead of building one: ``rollback --to`` and ``restart``.

Both put a release that already built into the idle color and go live the way a deploy does (drain,
point, start, health gate, switch, verify, record, workers), watched by a window, so a release that no
longer starts, or an environment value that makes the app crash, is switched back by itself. Neither
ever migrates: a rollback is refused when a contract migration of a later release was applied (the
older code may need what it removed).
"""

from __future__ import annotations

import dataclasses

from supervisor_bluegreen.host import releases
from supervisor_bluegreen.listener.golive import (
    flip,
    go_live,
    health_gate,
    reconcile,
    verify_public,
    watching,
    workers_follow,
)
from supervisor_bluegreen.listener.run import Run, StepFailed
from supervisor_bluegreen.listener.sequences.deploy import (
    drain_idle,
    idle_color,
    point_color,
    start_color,
    stop_unless_live,
)
from supervisor_bluegreen.shared import releaselist
from supervisor_bluegreen.shared.config import Color
from supervisor_bluegreen.shared.jobargs import NoArgs, RollbackArgs
from supervisor_bluegreen.shared.model import Window


def contract_refusal(contracts: list[dict], release: releaselist.Release) -> str:
    """Why ``release`` may not serve again ('' when it may): another release's contract migrations ran after it
    was built (its own contract, dropping what its code no longer reads, does not stop it)."""
    later = [c for c in contracts if c.get("release") != release.id and float(c.get("at") or 0) > release.built]
    if not later:
        return ""
    names = ", ".join(m for c in later for m in c.get("migrations") or ())
    return (
        f"refusing to roll back to {release.commit[:7]} ({release.id}): contract migrations of a later release "
        f"were applied after it ({names}); its code may need what they removed"
    )


def choose_release(run: Run, live: str | None, to: str) -> releaselist.Release:
    """The kept release ``to`` names, if it may serve again (not live already, no later contract applied)."""
    state = run.store.read()
    built = releaselist.recorded(state)
    live_id = releases.running(run.app).get(live or "", "")
    try:
        release = releaselist.pick(built, live_id, to)
    except releaselist.ReleaseError as exc:
        raise StepFailed(str(exc)) from None
    if release.id == live_id:
        raise StepFailed(f"release {release.commit[:7]} ({release.id}) is already live")
    refusal = contract_refusal(list(state.get("contracts") or ()), release)
    if refusal:
        raise StepFailed(refusal)
    run.log(f"release {release.id} at {release.commit[:7]}, built by job {release.job}")
    return release


def live_release(run: Run, live: str | None) -> releaselist.Release:
    """The release the live color runs (restart starts it again, in the idle color)."""
    if not live:
        raise StepFailed("no color is live yet: deploy first")
    release_id = releases.running(run.app).get(live)
    if not release_id:
        raise StepFailed(
            f"{live} runs no release yet (its own folder, from before releases): deploy once, then restart"
        )
    known = {r.id: r for r in releaselist.recorded(run.store.read())}
    commit = (run.store.read().get("colors") or {}).get(live, {}).get("commit", "")
    return known.get(release_id) or releaselist.Release(release_id, commit, 0.0, 0)


def start_release(run: Run, live: str | None, release: releaselist.Release) -> tuple[Color, Window | None]:
    """The idle color drained, pointed at ``release``, started, gated, switched, recorded (workers follow after)."""
    target = idle_color(run, live)
    run.store.update_job(run.job.id, commit=release.commit, release=release.id)
    at = releases.view(target, releases.folder(run.app, release.id))
    started = False
    try:
        run.step("drain", drain_idle, target)
        run.step("point", point_color, target, at, release.commit)
        since = run.step("start", start_color, target)
        started = True
        run.step("health gate", health_gate, target, since)
        run.step("switch", flip, target)
        run.step("verify", verify_public, target, live)
        window = run.step("record", go_live, live, target)
    except Exception:
        if started:
            stop_unless_live(run, target)
        raise
    return target, window


def rollback_to(run: Run, args: RollbackArgs) -> str:
    """A kept release back in the idle color (cold: it starts again as it was built), watched."""
    live = run.step("reconcile", reconcile)
    release = run.step("choose release", choose_release, live, args.to)
    run.watched = True  # not the plain way back: the release it leaves is the window's rollback target
    target, window = start_release(run, live, release)
    message = f"{run.app.name}: rolled back to {release.commit[:7]} (release {release.id}) in {run.elapsed():.1f} s"
    run.announce("rollback", message, commit=release.commit)
    return workers_follow(run, target, message + watching(window, run.app, run.job.id))


def restart(run: Run, args: NoArgs) -> str:
    """The live release started again in the idle color with the current environment, switched, watched."""
    live = run.step("reconcile", reconcile)
    release = run.step("live release", live_release, live)
    target, window = start_release(run, live, release)
    message = f"{run.app.name}: restarted {release.commit[:7]} in {target.name} (was {live}) in {run.elapsed():.1f} s"
    return workers_follow(run, target, message + watching(window, run.app, run.job.id))


def cold_rollback(run: Run, args: RollbackArgs) -> str:
    """The plain rollback when no previous color runs: the release before the live one, started again."""
    return rollback_to(run, dataclasses.replace(args, to="-1"))

"""The contract phase: migrations that must wait until the old code no longer serves.

A deploy's migration gate holds back the migrations marked ``bluegreen = "contract"`` (and any that
depend on one): dropping the column the old release still reads is only safe once that release is
gone. They run as a job of their own after the new color went live and its watch window passed (a
window that rolled back drops them: the old code serves again). From then on the rollback target is
cleared and stopped, because the code it runs no longer matches the schema.
"""

from __future__ import annotations

import time

from supervisor_bluegreen.host import releases, runner
from supervisor_bluegreen.host.migrations import gate
from supervisor_bluegreen.listener.golive import reconcile, stop_color
from supervisor_bluegreen.listener.run import Run, StepFailed
from supervisor_bluegreen.listener.sequences.deploy import settings, uncut
from supervisor_bluegreen.shared.config import Color
from supervisor_bluegreen.shared.jobargs import NoArgs


def contract(run: Run, args: NoArgs) -> str:
    """Run the held-back migrations in the live color, then clear the rollback target."""
    pending = run.store.read().get("contract") or {}
    live = run.step("reconcile", reconcile)
    if not pending or live != pending.get("color"):
        run.store.update(contract=None)
        return f"{run.app.name}: no contract migration to run ({pending.get('color') or 'nothing'} is not live)"
    target = run.app.color(live)
    run.cancellable = False  # past the switch: a contract runs to its end
    run.step("contract migrate", migrate_rest, target)
    previous = run.step("clear rollback target", clear_rollback_target, pending)
    done = ", ".join(pending.get("migrations") or ())
    return (
        f"{run.app.name}: contract migrations applied on {live}: {done}; rollback target {previous or 'none'} "
        "cleared and stopped (rolling back past them is not safe)"
    )


def migrate_rest(run: Run, target: Color) -> None:
    """``migrate`` in the live checkout: everything the gate held back, never cut in half."""
    config = settings(run.app)
    argv = runner.expand(gate.contract_argv(), target)
    run.log("$ " + " ".join(argv))
    step = runner.BuildStep("migrate", argv, uncut=True)
    try:
        runner.run(
            argv, cwd=target.checkout, env=runner.environment(target, config.user), user=config.user,
            timeout=config.step_timeout, log=run.log, uncut=uncut(run, step),
        )  # fmt: skip
    except runner.StepError as exc:
        raise StepFailed(f"contract migrate failed: {exc}; the rollback target is kept") from None
    finally:
        run.store.update_job(run.job.id, uncut=None)


def clear_rollback_target(run: Run, pending: dict) -> str | None:
    """No way back past a contract migration: forget the previous color and stop it."""
    state = run.store.read()
    previous = state.get("previous")
    applied = {
        "at": time.time(),
        "job": run.job.id,
        "release": releases.running(run.app).get(str(state.get("live") or ""), ""),
        "migrations": list(pending.get("migrations") or ()),
    }  # rollback --to a release older than this one is refused (release.contract_refusal)
    run.store.update(
        previous=None,
        contract=None,
        rollback_cleared={"job": pending.get("job"), "contract": run.job.id, "at": time.time()},
        contracts=[*list(state.get("contracts") or ())[-49:], applied],
    )
    if previous:
        stop_color(run, run.app.color(previous))
    return previous

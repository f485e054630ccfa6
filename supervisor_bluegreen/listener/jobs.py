"""Run one job to its end: pick its sequence, record how it ended, never leave it "running"."""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

from supervisor_bluegreen.host import links
from supervisor_bluegreen.host.supervisor import ShuttingDown, SupervisorError
from supervisor_bluegreen.listener.run import Cancelled, Interrupted, Run, StepFailed
from supervisor_bluegreen.listener.sequences.contract import contract
from supervisor_bluegreen.listener.sequences.deploy import deploy
from supervisor_bluegreen.listener.sequences.release import restart
from supervisor_bluegreen.listener.sequences.switch import check_health, recover, rollback, switch_to
from supervisor_bluegreen.shared import jobargs
from supervisor_bluegreen.shared.model import Kind, Status, lock_refusal

# each takes (run, its kind's typed arguments: jobargs.KINDS)
SEQUENCES: dict[Kind, Callable[[Run, Any], str]] = {
    Kind.SWITCH: switch_to,
    Kind.ROLLBACK: rollback,
    Kind.HEALTH: check_health,
    Kind.DEPLOY: deploy,
    Kind.RECOVER: recover,
    Kind.CONTRACT: contract,
    Kind.RESTART: restart,
}


def failure_message(run: Run, reason: str) -> str:
    """What failed, and what is live now: "unchanged" only when it really is."""
    try:
        live = links.live_color(run.app)
    except links.LiveLinkError as exc:
        return f"{run.app.name}: {run.job.kind} failed: {reason}\nno color is surely live: {exc}"
    where = f"{live or 'no color'} live" + (", unchanged" if live == run.live_before else "")
    if run.db_changed:
        where += f" (its code; the database changed: {', '.join(run.db_changed)} applied)"
    return f"{run.app.name}: {run.job.kind} failed: {reason}\n{where}"


def execute(run: Run) -> None:
    """Run the job's sequence (already claimed: status running) and record how it ended; never raises.

    Every way a sequence can end (success, a failed step, a cancel, the listener stopping, a bug)
    ends the job with a status and a message naming the live color, and a failure tells the webhooks.
    """
    store, job = run.store, run.job
    status, message = Status.FAILED, ""
    with contextlib.suppress(links.LiveLinkError):  # what "unchanged" means, even before the first step
        run.live_before = links.live_color(run.app)
    try:
        args = jobargs.parse(job.kind, job.args)
        refused = lock_refusal(run.app.name, store.read(), job.kind, job.args)
        if refused:  # queued before the lock was taken: it does not run while the lock holds
            raise StepFailed(refused.split(" refused: ", 1)[1] + "; it was queued before the lock")
        message = SEQUENCES[job.kind](run, args)
        status = Status.SUCCEEDED
    except jobargs.BadArguments as exc:  # queued by something that skipped the RPC's check: refused, not a crash
        message = failure_message(run, f"bad arguments: {exc}")
    except (Interrupted, ShuttingDown) as exc:
        status, message = Status.INTERRUPTED, failure_message(run, str(exc))
    except (StepFailed, SupervisorError) as exc:
        if isinstance(exc, Cancelled) or run.cancelled():
            status = Status.CANCELLED
        message = failure_message(run, str(exc))
    except Exception as exc:  # noqa: BLE001 (a bug must still end the job with a message, never leave it "running")
        traceback.print_exc(file=sys.stderr)
        message = failure_message(run, f"internal error {type(exc).__name__}: {exc}")
    finally:
        store.finish(job.id, status, message)
        for path in (store.cancel_path(job.id), store.cancel_path(job.id, True)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        store.prune()
    if status != Status.SUCCEEDED and job.kind != Kind.HEALTH:
        commit = (store.read_job(job.id) or {}).get("commit", "")
        run.announce("failure", message.replace("\n", "; "), commit=commit)

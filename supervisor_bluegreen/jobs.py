"""Run one job to its end: pick its sequence, record how it ended, never leave it "running"."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable

from . import switch
from .deploy import deploy
from .orchestrator import Run, StepFailed, check_health, rollback, switch_to
from .supervisor_api import SupervisorError

SEQUENCES: dict[str, Callable[..., str]] = {
    "switch": switch_to,
    "rollback": rollback,
    "health": check_health,
    "deploy": deploy,
}


def failure_message(run: Run, reason: str) -> str:
    """What failed, and what is live now: "unchanged" only when it really is."""
    live = switch.live_color(run.app)
    where = f"{live or 'no color'} live" + (", unchanged" if live == run.live_before else "")
    return f"{run.app.name}: {run.job['kind']} failed: {reason}\n{where}"


def execute(run: Run) -> None:
    """Run the job's sequence (already claimed: status running) and record how it ended; never raises for a step."""
    store, job = run.store, run.job
    status, message = "failed", ""
    try:
        message = SEQUENCES[job["kind"]](run, **job.get("args", {}))
        status = "succeeded"
    except (StepFailed, SupervisorError) as exc:
        if run.cancelled() or str(exc).startswith("cancelled"):
            status = "cancelled"
        message = failure_message(run, str(exc))
    except Exception as exc:  # a bug must still end the job with a message, never leave it "running"
        message = f"{run.app.name}: {job['kind']} failed: internal error {type(exc).__name__}: {exc}"
        raise
    finally:
        store.update_job(job["id"], status=status, message=message, finished=time.time(), step="")
        store.update(last_job={"id": job["id"], "kind": job["kind"], "status": status, "message": message})
        with contextlib.suppress(FileNotFoundError):
            os.unlink(store.cancel_path(job["id"]))
        store.prune()

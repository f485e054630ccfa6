"""The words every process shares about a job: its kind and its status. Standard library only.

supervisord's side queues jobs and answers status and history; the listener runs them and records how
they ended; supervisorctl prints them. Each is a string in the store (JSON, SQLite) and over XML-RPC, so
the enums below are strings too: equal to, hashed like and printed as their plain value, never "Kind.DEPLOY".
What each kind takes is shared/jobargs.py. A watch window (listener/watch.py watches it) is state too:
supervisord's status reads the same Window the listener records.
"""

from __future__ import annotations

import enum
import time
from dataclasses import asdict, dataclass
from typing import Any

from supervisor_bluegreen.shared.config import Watch


class Word(str, enum.Enum):
    """A name stored and sent as its plain string: ``Status.FAILED == "failed"``, as a dict key too."""

    __hash__ = str.__hash__

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class Kind(Word):
    DEPLOY = "deploy"  # git -> live: build the idle color, gate, switch, watch
    SWITCH = "switch"  # to the other (running) color, health-gated, no build
    ROLLBACK = "rollback"  # back to the previous color (or, with a reason, the watch window's own)
    HEALTH = "health"  # probe a color now
    RECOVER = "recover"  # after a listener restart: finish an interrupted go-live, restart the workers
    CONTRACT = "contract"  # contract migrations, once the old code no longer serves
    RESTART = "restart"  # the live release started again in the idle color (a changed environment), watched
    # records only (never queued, never run): what a person did, for history
    LOCK = "lock"  # deploys, switches, a person's rollbacks and pushes refused, with a reason
    UNLOCK = "unlock"
    MAINTENANCE = "maintenance"  # nginx's 503 page on or off


class Status(Word):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"  # asked to stop before its switch; live untouched
    INTERRUPTED = "interrupted"  # the listener or supervisord stopped; a restarted listener reconciles


ACTIVE = (Status.QUEUED, Status.RUNNING)
RECORDS = (Kind.LOCK, Kind.UNLOCK, Kind.MAINTENANCE)  # finished as they are made (Store.record)
FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED, Status.INTERRUPTED)


@dataclass(frozen=True)
class Job:
    """A job as the listener claimed it: what to run, for whom. How it goes (status, steps, log) is the
    store's record, which the run updates; ``kind`` is a Kind when it is one (jobargs refuses the rest)."""

    id: int
    kind: str
    args: dict[str, Any]
    who: str = ""

    @classmethod
    def of(cls, record: dict[str, Any]) -> Job:
        """The job of a store record (``Store.claim``'s answer)."""
        kind = str(record.get("kind", ""))
        args = record.get("args")
        return cls(
            int(record["id"]),
            Kind(kind) if kind in Kind._value2member_map_ else kind,
            dict(args) if isinstance(args, dict) else {},
            str(record.get("who") or ""),
        )


OPENED_BY = (Kind.DEPLOY, Kind.SWITCH, Kind.RESTART)
LOCKED_OUT = (
    Kind.DEPLOY,
    Kind.SWITCH,
    Kind.ROLLBACK,
    Kind.RESTART,
)  # refused while a person's lock holds (a push is a deploy)


def when(timestamp: Any) -> str:
    """A recorded time (epoch) as a person reads it, in the server's local time."""
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(timestamp)))
    except (TypeError, ValueError, OverflowError, OSError):
        return "?"


def lock_refusal(app: str, state: dict[str, Any], kind: str, args: dict[str, Any]) -> str:
    """Why a job of ``kind`` may not run now ('' when it may): the app's lock (``state["lock"]``), its reason, who
    took it and since when. The watch window's own rollback (it has a ``reason``) is never refused."""
    lock = state.get("lock") or {}
    if not lock or kind not in LOCKED_OUT or (kind == Kind.ROLLBACK and args.get("reason")):
        return ""
    return (
        f"{app}: {kind} refused: locked by {lock.get('who') or '?'} since {when(lock.get('since'))}: "
        f"{lock.get('reason') or '(no reason)'} (supervisorctl bluegreen unlock {app})"
    )


@dataclass(frozen=True)
class Window:
    """One watch window: ``color`` went live at ``since`` (epoch) and is watched until ``until``."""

    color: str
    previous: str
    since: float
    until: float
    job: int

    @classmethod
    def opened(
        cls, color: str, previous: str, job: int, config: Watch, watched: bool, now: float | None = None
    ) -> Window | None:
        """The window a go-live opens when it is ``watched`` (kinds in OPENED_BY, and ``rollback --to``).

        None when there is none: watch = 0, nothing to go back to, or a plain rollback (it goes back to
        what served before; watching it would roll forward to the release just left).
        """
        if not watched or config.seconds <= 0 or not previous or previous == color:
            return None
        start = time.time() if now is None else now
        return cls(color, previous, start, start + config.seconds, job)

    @classmethod
    def from_state(cls, record: Any) -> Window | None:
        """The window recorded in the app's state (None when none is open or the record is damaged)."""
        if not isinstance(record, dict):
            return None
        try:
            return cls(
                str(record["color"]),
                str(record["previous"]),
                float(record["since"]),
                float(record["until"]),
                int(record["job"]),
            )
        except (KeyError, TypeError, ValueError):
            return None

    def record(self) -> dict[str, Any]:
        return asdict(self)

    def remaining(self, now: float | None = None) -> float:
        return max(0.0, self.until - (time.time() if now is None else now))

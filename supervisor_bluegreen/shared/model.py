"""The words every process shares about a job: its kind and its status. Standard library only.

supervisord's side queues jobs and answers status and history; the listener runs them and records how
they ended; supervisorctl prints them. Each is a string in the store (JSON, SQLite) and over XML-RPC, so
the enums below are strings too: equal to, hashed like and printed as their plain value, never "Kind.DEPLOY".
What each kind takes is shared/jobargs.py.
"""

from __future__ import annotations

import enum


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


class Status(Word):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"  # asked to stop before its switch; live untouched
    INTERRUPTED = "interrupted"  # the listener or supervisord stopped; a restarted listener reconciles


ACTIVE = (Status.QUEUED, Status.RUNNING)
FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED, Status.INTERRUPTED)

"""Failpoints: kill the listener with SIGKILL at a named point of a sequence, for the fault tests.

Off unless the listener's environment has ``BLUEGREEN_FAILPOINTS=1`` (the test stacks set it;
nothing shipped does). Then a file ``failpoint`` in the app's state folder (root's, like all
state) holding a point's name makes the listener kill itself -9 when it reaches that point, once:
the file is removed first. Points are the steps' names (``drain``, ``migrate``, ``switch``,
``record``, ``workers`` ...), ``workers.started`` (the new color's worker up, the old one's still
running) and ``workers.stopped`` (a worker that follows live_root stopped, not started yet).
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterable

ENV = "BLUEGREEN_FAILPOINTS"
# the points a manual rollback passes, in order
ROLLBACK_POINTS = (
    "reconcile", "check target", "health gate", "switch", "verify", "record", "workers", "workers.started",
)  # fmt: skip
FILE = "failpoint"


def deploy_points(build: Iterable[str]) -> list[str]:
    """The points a deploy with these build steps passes, in order: the fault tests arm them one by one."""
    after = ("start", "health gate", "switch", "verify", "record", "workers", "workers.started")
    return ["resolve", "reconcile", "drain", "checkout", *build, *after]


def branch(point: str) -> str:
    """A git branch name for a deploy killed at ``point`` (a point may be "health gate": no space in a ref)."""
    return "k-" + re.sub(r"[^A-Za-z0-9_-]+", "-", point)


def hit(state_dir: str, point: str) -> None:
    """SIGKILL this process if the armed failpoint is ``point``."""
    if os.environ.get(ENV) != "1":
        return
    path = os.path.join(state_dir, FILE)
    try:
        with open(path, encoding="utf-8") as f:
            armed = f.read().strip()
    except OSError:
        return
    if armed == point:
        os.unlink(path)
        os.kill(os.getpid(), signal.SIGKILL)

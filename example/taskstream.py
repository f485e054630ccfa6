"""Celery tasks sent continuously to a stack's queue, and what became of each: run once, and how long it waited.

Each task is the example app's ``record_run`` with a token that carries its send time; the run is a TaskRun
row (token unique: a second run of one token fails, so duplicates show as IntegrityErrors, never as rows).
A task's wait is from its send to its row: with a consumer always there, it stays at the queue's baseline; a
moment without one (a worker restarted) shows as tasks that waited that long.
"""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from dataclasses import dataclass

from celery import Celery

from example import services


@dataclass(frozen=True)
class Outcome:
    """What the tasks sent between two instants became."""

    sent: int
    ran: int
    missing: int
    wait_max_s: float
    wait_median_s: float

    def record(self) -> dict[str, float | int]:
        return {
            "sent": self.sent,
            "ran": self.ran,
            "missing": self.missing,
            "wait_max_s": round(self.wait_max_s, 3),
            "wait_median_s": round(self.wait_median_s, 3),
        }


class TaskStream(threading.Thread):
    """Sends one task every ``interval`` seconds to ``queue`` until stopped; ``sent`` is (token, send time)."""

    def __init__(self, queue: str, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.queue, self.interval = queue, interval
        self.app = Celery(broker=services.BROKER_URL)
        self.sent: list[tuple[str, float]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            token = uuid.uuid4().hex
            at = time.time()
            self.app.send_task("exampleapp.tasks.record_run", args=[token], queue=self.queue)
            self.sent.append((token, at))
            self.done.wait(self.interval)

    def stop(self) -> None:
        self.done.set()
        self.join()

    def outcome(self, database: str, since: float = 0.0, until: float = float("inf"), timeout: float = 60) -> Outcome:
        """The tasks sent in [since, until): how many ran (waiting up to ``timeout`` for the last), their waits."""
        wanted = {token: at for token, at in self.sent if since <= at < until}
        deadline = time.monotonic() + timeout
        while True:
            ran = run_times(database, list(wanted))
            if len(ran) == len(wanted) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        waits = [ran[token] - at for token, at in wanted.items() if token in ran]
        return Outcome(
            sent=len(wanted),
            ran=len(ran),
            missing=len(wanted) - len(ran),
            wait_max_s=max(waits, default=0.0),
            wait_median_s=statistics.median(waits) if waits else 0.0,
        )


def run_times(database: str, tokens: list[str]) -> dict[str, float]:
    """When each of ``tokens`` ran (its TaskRun row's creation, epoch seconds; Django stores UTC)."""
    if not tokens:
        return {}
    found: dict[str, float] = {}
    with services.mariadb(database) as conn, conn.cursor() as cur:
        cur.execute("SET time_zone = '+00:00'")
        for start in range(0, len(tokens), 500):
            chunk = tokens[start : start + 500]
            marks = ", ".join(["%s"] * len(chunk))
            query = f"SELECT token, UNIX_TIMESTAMP(created) FROM exampleapp_taskrun WHERE token IN ({marks})"
            cur.execute(query, chunk)
            found.update({token: float(at) for token, at in cur.fetchall()})
    return found

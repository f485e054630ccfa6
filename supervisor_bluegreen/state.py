"""On-disk state of an app: live/previous color, jobs with their logs, and the per-app lock.

Everything shared between supervisord (the RPC extension, re-created on every reload and once
per HTTP server) and the listener process lives here, in files written atomically
(temp file + rename), so a crash at any instant leaves either the old or the new version.
Layout under ``<state_dir>/<app>/``: ``state.json``, ``jobs/<id>.json``, ``jobs/<id>.log``, ``lock``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

ACTIVE = ("queued", "running")
KEEP_JOBS = 200  # finished jobs kept for history and log
_STATE_LOCK = threading.Lock()
FINISHED = ("succeeded", "failed", "cancelled", "interrupted")


def write_json_atomic(path: str, data: Any) -> None:
    """Replace ``path`` with ``data`` as JSON so readers never see a partial file."""
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_json(path: str, default: Any = None) -> Any:
    """The JSON at ``path``, or ``default`` when it does not exist yet."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return default


class AppLock:
    """An flock on ``<app>/lock``: held by a live process only, so it dies with a crash or kill -9."""

    def __init__(self, path: str):
        self.path = path
        self.fd: int | None = None

    def acquire(self) -> bool:
        """Take the lock without waiting; False when another process holds it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def held_elsewhere(self) -> bool:
        """True while some live process holds the lock (checked by trying it, never by a pid file)."""
        if self.fd is not None:
            return True
        if not os.path.exists(self.path):
            return False
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False


class Store:
    """State files of one app."""

    def __init__(self, state_dir: str, app: str):
        self.app = app
        self.dir = os.path.join(state_dir, app)
        self.jobs_dir = os.path.join(self.dir, "jobs")
        self.state_path = os.path.join(self.dir, "state.json")
        self.lock = AppLock(os.path.join(self.dir, "lock"))

    def ensure(self) -> Store:
        os.makedirs(self.jobs_dir, mode=0o755, exist_ok=True)
        return self

    # -- app state ---------------------------------------------------------------
    def read(self) -> dict[str, Any]:
        """The recorded state: ``live``, ``previous``, ``switched_at``, ``colors``, ``last_health``."""
        return read_json(self.state_path, {}) or {}

    def update(self, **changes: Any) -> dict[str, Any]:
        """Merge ``changes`` into the state and write it atomically (single writer: the listener)."""
        with _STATE_LOCK:  # health checks run in threads beside the app's worker
            state = self.read()
            state.update(changes)
            write_json_atomic(self.state_path, state)
            return state

    # -- jobs --------------------------------------------------------------------
    def job_path(self, job_id: int) -> str:
        return os.path.join(self.jobs_dir, f"{int(job_id)}.json")

    def log_path(self, job_id: int) -> str:
        return os.path.join(self.jobs_dir, f"{int(job_id)}.log")

    def cancel_path(self, job_id: int) -> str:
        """A file whose existence asks the running job to stop before its switch."""
        return os.path.join(self.jobs_dir, f"{int(job_id)}.cancel")

    @contextlib.contextmanager
    def queue_lock(self) -> Iterator[None]:
        """Serialize queue changes between supervisord (enqueue) and the listener (claim): held for microseconds."""
        self.ensure()
        fd = os.open(os.path.join(self.dir, "queue.lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def claim(self, job_id: int) -> dict[str, Any] | None:
        """Mark a queued job running and return it as it is now; None when it was cancelled or superseded."""
        with self.queue_lock():
            job = self.read_job(job_id)
            if not job or job.get("status") != "queued":
                return None
            return self.update_job(job_id, status="running", started=time.time(), step="")

    def enqueue(self, kind: str, args: dict[str, Any], who: str = "", coalesce: bool = False) -> dict[str, Any]:
        """Add a job; with ``coalesce``, queued jobs of the same kind give way to it (the newest wins)."""
        with self.queue_lock():
            job = self.create_job(kind, args, who)
            if coalesce:
                for old in self.jobs(("queued",)):
                    if old["kind"] == kind and old["id"] != job["id"]:
                        self.update_job(
                            old["id"],
                            status="cancelled",
                            finished=time.time(),
                            message=f"{self.app}: {kind} superseded by job {job['id']}",
                        )
            return job

    def job_ids(self) -> list[int]:
        try:
            names = os.listdir(self.jobs_dir)
        except FileNotFoundError:
            return []
        return sorted(int(n[:-5]) for n in names if n.endswith(".json") and n[:-5].isdigit())

    def create_job(self, kind: str, args: dict[str, Any], who: str = "") -> dict[str, Any]:
        """Record a new queued job under the next free id (O_EXCL: two creators never share one)."""
        self.ensure()
        job_id = (self.job_ids() or [0])[-1] + 1
        while True:
            try:
                fd = os.open(self.job_path(job_id), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                os.close(fd)
                break
            except FileExistsError:
                job_id += 1
        job = {
            "id": job_id,
            "app": self.app,
            "kind": kind,
            "args": args,
            "who": who,
            "status": "queued",
            "created": time.time(),
            "started": None,
            "finished": None,
            "message": "",
            "steps": [],
        }
        write_json_atomic(self.job_path(job_id), job)
        return job

    def read_job(self, job_id: int) -> dict[str, Any] | None:
        try:
            return read_json(self.job_path(job_id))
        except json.JSONDecodeError:  # its id is taken but it is not written yet: not there for readers
            return None

    def update_job(self, job_id: int, **changes: Any) -> dict[str, Any]:
        job = self.read_job(job_id) or {"id": job_id}
        job.update(changes)
        write_json_atomic(self.job_path(job_id), job)
        return job

    def jobs(self, statuses: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        """Jobs in id order, optionally only those in ``statuses``."""
        found = (self.read_job(i) for i in self.job_ids())
        return [j for j in found if j and (not statuses or j.get("status") in statuses)]

    def append_log(self, job_id: int, line: str) -> None:
        with open(self.log_path(job_id), "a", encoding="utf-8") as f:
            f.write(line.rstrip("\n") + "\n")

    def prune(self, keep: int = KEEP_JOBS) -> None:
        """Forget all but the newest ``keep`` finished jobs, so reading the queue stays cheap."""
        finished = [j["id"] for j in self.jobs(FINISHED)]
        for job_id in finished[:-keep] if keep else finished:
            for path in (self.job_path(job_id), self.log_path(job_id), self.cancel_path(job_id)):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)

    def read_log(self, job_id: int, offset: int = 0, limit: int = 65536) -> tuple[str, int]:
        """Up to ``limit`` bytes of a job's log from byte ``offset`` on, and the offset to continue from."""
        try:
            with open(self.log_path(job_id), "rb") as f:
                f.seek(offset)
                data = f.read(limit)
        except FileNotFoundError:
            return "", offset
        end = data.rfind(b"\n") + 1  # hand out whole lines only
        return data[:end].decode("utf-8", "replace"), offset + end


HISTORY_KEYS = ("id", "kind", "status", "ref", "commit", "color", "who", "created", "finished", "backup")


def history_entry(job: dict[str, Any]) -> dict[str, Any]:
    """What ``history`` shows of a finished job: who/what/when, the outcome's first line, step timings."""
    entry = {k: job.get(k) or "" for k in HISTORY_KEYS}
    entry["message"] = (job.get("message") or "").split("\n", 1)[0]
    entry["steps"] = job.get("steps") or []
    return entry

"""On-disk state of an app: live/previous color, jobs with their logs, and the per-app lock.

Everything shared between supervisord (the RPC extension, re-created on every reload and once
per HTTP server) and the listener process lives here, in files written atomically
(temp file + rename), so a crash at any instant leaves either the old or the new version.
Layout under ``<state_dir>/<app>/``: ``state.json``, ``jobs/<id>.json``, ``jobs/<id>.log``, ``lock``.

Both processes usually run as root, so nothing here may follow a path the app user can replace:
``state_dir`` must be a directory only root (or supervisord's user) can write (``check_private_dir``),
and every file is opened with O_NOFOLLOW and O_NONBLOCK and used only when it is a regular file, so a
symlink planted at a job log or a FIFO at ``state.json`` is refused with a clear error instead of being
followed or hanging supervisord. Files are 0640 and folders 0750: not world-readable. Standard library
only: supervisord imports this module.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import grp
import json
import os
import pwd
import stat
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

from .masking import mask_credentials

ACTIVE = ("queued", "running")
KEEP_JOBS = 200  # finished jobs kept for history and log
KEEP_HEALTH = 20  # finished health probes kept beside them
_STATE_LOCK = threading.Lock()
FINISHED = ("succeeded", "failed", "cancelled", "interrupted")
FILE_MODE = 0o640  # state, jobs, logs: root (or supervisord's user) and a group of readers, never everyone
DIR_MODE = 0o750
MAX_JSON = 4 << 20  # a state or job file is a few KB; anything bigger is not ours and is not read whole


class UnsafePath(OSError):
    """A path root must not use: a symlink, not a regular file, too big, or in a folder others can write."""

    def __str__(self) -> str:  # the message alone, not "[Errno 40] ...": it is shown to users as is
        return self.strerror or super().__str__()


class Busy(Exception):
    """The app's job queue is locked by another process right now (supervisord never waits for it)."""


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISLNK, "a symbolic link"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def open_file(path: str, flags: int, mode: int = FILE_MODE) -> int:
    """``os.open`` for root in a state folder: never follows a symlink, never blocks, regular files only.

    O_NOFOLLOW refuses a symlink at ``path`` (planted to make root write elsewhere); O_NONBLOCK makes
    opening a FIFO return at once, and the fstat check then refuses anything but a plain file with a
    single link. Raises UnsafePath (an OSError) naming the path and what it is.
    """
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafePath(exc.errno, f"refusing {path}: it is a symbolic link") from None
        if exc.errno == errno.ENXIO:  # O_WRONLY|O_NONBLOCK on a FIFO nobody reads
            raise UnsafePath(exc.errno, f"refusing {path}: it is a FIFO, not a regular file") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePath(errno.EINVAL, f"refusing {path}: it is {_kind(st.st_mode)}, not a regular file")
        if st.st_nlink > 1 and flags & (os.O_WRONLY | os.O_RDWR):
            raise UnsafePath(errno.EMLINK, f"refusing {path}: it has {st.st_nlink} hard links (one is elsewhere)")
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_bounded(path: str, limit: int = MAX_JSON) -> bytes:
    """The bytes of the regular file at ``path``; UnsafePath when it holds more than ``limit``."""
    fd = open_file(path, os.O_RDONLY)
    try:
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    if size > limit:
        raise UnsafePath(errno.EFBIG, f"refusing {path}: larger than {limit} bytes")
    return b"".join(chunks)


def write_json_atomic(path: str, data: Any, sync: bool = True) -> None:
    """Replace ``path`` with ``data`` as JSON so readers never see a partial file.

    The temp file is made by mkstemp (O_EXCL, never a planted name) beside ``path``, and the rename
    replaces whatever entry is there without following it. ``sync=False`` skips the fsync: inside
    supervisord (never wait for the disk there) and under the queue lock (fsynced after release).
    """
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.flush()
            if sync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def fsync_path(path: str) -> None:
    """Flush a file written earlier without fsync (gone already: nothing to flush)."""
    try:
        fd = open_file(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_json(path: str, default: Any = None, limit: int = MAX_JSON) -> Any:
    """The JSON at ``path``, or ``default`` when it does not exist yet; UnsafePath for anything but a small file."""
    try:
        data = read_bounded(path, limit)
    except FileNotFoundError:
        return default
    return json.loads(data.decode("utf-8"))


def _owner(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _group(gid: int) -> str:
    try:
        return f"{grp.getgrgid(gid).gr_name} (gid {gid})"
    except KeyError:
        return f"gid {gid}"


def private_dir_problem(path: str, euid: int | None = None) -> str | None:
    """Why root must not keep files under ``path`` (someone else could replace them), or None when it may.

    Every directory from ``path`` up to ``/``, both as written and with symlinks resolved, must be owned
    by root or by us (``euid``) and writable by no group and no other user: whoever can write a folder
    can rename what is in it and put a symlink in its place. A sticky folder (``/tmp``) is fine above
    an existing folder of ours, since others cannot rename that; never as the folder itself, or as the
    nearest existing one when ``path`` is still to be made (someone could make it first). Stat calls only.
    """
    euid = os.geteuid() if euid is None else euid
    path = os.path.abspath(path)
    seen: set[str] = set()
    for start in (path, os.path.realpath(path)):
        d, nearest = start, True
        while True:
            if d not in seen:
                seen.add(d)
                try:
                    st = os.stat(d)
                except FileNotFoundError:
                    st = None
                except OSError as exc:
                    return f"cannot check {d}: {exc.strerror}"
                if st is not None:
                    mode = stat.S_IMODE(st.st_mode)
                    if not stat.S_ISDIR(st.st_mode):
                        return f"{d} is not a directory"
                    if st.st_uid not in (0, euid):
                        return (
                            f"{d} is owned by {_owner(st.st_uid)}, mode {mode:04o}: that user could replace "
                            "files root keeps there; use a folder only root can write"
                        )
                    sticky_ok = bool(mode & stat.S_ISVTX) and not nearest
                    if mode & (stat.S_IWGRP | stat.S_IWOTH) and not sticky_ok:
                        who = "everyone" if mode & stat.S_IWOTH else f"group {_group(st.st_gid)}"
                        return (
                            f"{d} (owner {_owner(st.st_uid)}, mode {mode:04o}) is writable by {who}: they could "
                            "replace files root keeps there; use a folder only root can write"
                        )
                    nearest = False
            elif os.path.exists(d):
                nearest = False
            parent = os.path.dirname(d)
            if parent == d:
                break
            d = parent
    return None


def check_private_dir(path: str, what: str = "") -> None:
    """Refuse (UnsafePath) a folder for state, logs or backups that the app user could write; see above."""
    problem = private_dir_problem(path)
    if problem:
        label = f"{what} {path}" if what else path
        raise UnsafePath(errno.EPERM, f"{label}: {problem}")


class AppLock:
    """An flock on ``<app>/lock``: held by a live process only, so it dies with a crash or kill -9."""

    def __init__(self, path: str):
        self.path = path
        self.fd: int | None = None

    def acquire(self) -> bool:
        """Take the lock without waiting; False when another process holds it."""
        fd = open_file(self.path, os.O_RDWR | os.O_CREAT)
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
        try:
            fd = open_file(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False


class Store:
    """State files of one app.

    ``sync``: fsync what is written (the listener); supervisord's side passes False, never waiting for
    the disk. ``lock_wait``: None waits for the queue lock (the listener); a number of seconds makes
    ``queue_lock`` give up with Busy after that long (supervisord, which must never block).
    """

    def __init__(self, state_dir: str, app: str, *, sync: bool = True, lock_wait: float | None = None):
        self.app = app
        self.state_dir = state_dir
        self.dir = os.path.join(state_dir, app)
        self.jobs_dir = os.path.join(self.dir, "jobs")
        self.state_path = os.path.join(self.dir, "state.json")
        self.lock = AppLock(os.path.join(self.dir, "lock"))
        self.sync = sync
        self.lock_wait = lock_wait
        self._held = threading.local()  # .unsynced: what this thread wrote under the queue lock, fsynced after it

    def ensure(self) -> Store:
        """Make the app's folders (0750); refuse a symlink or a non-folder in their place."""
        os.makedirs(self.state_dir, mode=DIR_MODE, exist_ok=True)
        for d in (self.dir, self.jobs_dir):
            try:
                os.mkdir(d, DIR_MODE)
            except FileExistsError:
                st = os.lstat(d)
                if not stat.S_ISDIR(st.st_mode):
                    raise UnsafePath(errno.ENOTDIR, f"refusing {d}: it is {_kind(st.st_mode)}, not a folder") from None
                if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) & 0o027:
                    os.chmod(d, stat.S_IMODE(st.st_mode) & ~0o027)  # made 0755 by an older version
        return self

    def _write(self, path: str, data: Any) -> None:
        """Write a state or job file: fsynced now, later (under the queue lock), or never (in supervisord)."""
        pending = getattr(self._held, "unsynced", None)
        if pending is not None:
            write_json_atomic(path, data, sync=False)
            pending.append(path)
        else:
            write_json_atomic(path, data, sync=self.sync)

    # -- app state ---------------------------------------------------------------
    def read(self) -> dict[str, Any]:
        """The recorded state: ``live``, ``previous``, ``switched_at``, ``colors``, ``last_health``."""
        return read_json(self.state_path, {}) or {}

    def update(self, **changes: Any) -> dict[str, Any]:
        """Merge ``changes`` into the state and write it atomically (single writer: the listener)."""
        with _STATE_LOCK:  # health checks run in threads beside the app's worker
            state = self.read()
            state.update(changes)
            self._write(self.state_path, state)
            return state

    # -- jobs --------------------------------------------------------------------
    def job_path(self, job_id: int) -> str:
        return os.path.join(self.jobs_dir, f"{int(job_id)}.json")

    def log_path(self, job_id: int) -> str:
        return os.path.join(self.jobs_dir, f"{int(job_id)}.log")

    def cancel_path(self, job_id: int, force: bool = False) -> str:
        """A file whose existence asks the running job to stop before its switch (``force``: even mid-migrate)."""
        return os.path.join(self.jobs_dir, f"{int(job_id)}.{'force' if force else 'cancel'}")

    def output_path(self, job_id: int) -> str:
        """Where a step that is never cut in half writes its output (a file outlives the listener; a pipe not)."""
        return os.path.join(self.jobs_dir, f"{int(job_id)}.out")

    def request_cancel(self, job_id: int, force: bool = False) -> None:
        """Create the cancel file(s) of a job (a planted symlink or FIFO there is refused, never followed)."""
        for path in (self.cancel_path(job_id), self.cancel_path(job_id, True))[: 2 if force else 1]:
            os.close(open_file(path, os.O_WRONLY | os.O_CREAT))

    def cancel_requested(self, job_id: int, force: bool = False) -> bool:
        """Whether the job was asked to stop (the entry itself is looked at, never followed)."""
        return os.path.lexists(self.cancel_path(job_id, force))

    @contextlib.contextmanager
    def queue_lock(self) -> Iterator[None]:
        """Serialize queue changes between supervisord (enqueue, cancel) and the listener (claim).

        Held for microseconds, and nothing is fsynced while it is held (files written under it are
        fsynced after release). With ``lock_wait`` set (supervisord) it is only tried, for that long,
        and Busy says to try again: supervisord's loop never waits on a lock another process holds.
        """
        self.ensure()
        fd = open_file(os.path.join(self.dir, "queue.lock"), os.O_RDWR | os.O_CREAT)
        pending: list[str] = []
        try:
            if self.lock_wait is None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            else:
                deadline = time.monotonic() + self.lock_wait
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() >= deadline:
                            raise Busy(
                                f"{self.app}: the job queue is busy (another process holds its lock); try again"
                            ) from None
                        time.sleep(0.005)
            self._held.unsynced = pending
            yield
        finally:
            self._held.unsynced = None
            os.close(fd)
        if self.sync:
            for path in dict.fromkeys(pending):
                fsync_path(path)

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
                fd = open_file(self.job_path(job_id), os.O_WRONLY | os.O_CREAT | os.O_EXCL)
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
        self._write(self.job_path(job_id), job)
        return job

    def read_job(self, job_id: int) -> dict[str, Any] | None:
        try:
            return read_json(self.job_path(job_id))
        except json.JSONDecodeError:  # its id is taken but it is not written yet: not there for readers
            return None

    def update_job(self, job_id: int, **changes: Any) -> dict[str, Any]:
        job = self.read_job(job_id) or {"id": job_id}
        job.update(changes)
        self._write(self.job_path(job_id), job)
        return job

    def jobs(self, statuses: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        """Jobs in id order, optionally only those in ``statuses``."""
        found = (self.read_job(i) for i in self.job_ids())
        return [j for j in found if j and (not statuses or j.get("status") in statuses)]

    def append_log(self, job_id: int, line: str) -> None:
        """Add a line to a job's log (0640, never through a symlink); ``user:password@`` of URLs masked."""
        line = mask_credentials(line)
        fd = open_file(self.log_path(job_id), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        with os.fdopen(fd, "a", encoding="utf-8") as f:
            f.write(line.rstrip("\n") + "\n")

    def prune(self, keep: int = KEEP_JOBS) -> None:
        """Forget all but the newest ``keep`` finished jobs, so reading the queue stays cheap.

        Health probes count apart (at most the newest KEEP_HEALTH stay): they never push deploys out.
        """
        jobs = self.jobs(FINISHED)
        probes = [j["id"] for j in jobs if j.get("kind") == "health"]
        finished = [j["id"] for j in jobs if j.get("kind") != "health"]
        probes_kept = min(keep, KEEP_HEALTH)
        doomed = (finished[:-keep] if keep else finished) + (probes[:-probes_kept] if probes_kept else probes)
        for job_id in doomed:
            for path in (
                self.job_path(job_id),
                self.log_path(job_id),
                self.cancel_path(job_id),
                self.cancel_path(job_id, True),
                self.output_path(job_id),
            ):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)

    def read_log(self, job_id: int, offset: int = 0, limit: int = 65536) -> tuple[str, int]:
        """Up to ``limit`` bytes of a job's log from byte ``offset`` on, and the offset to continue from."""
        try:
            fd = open_file(self.log_path(job_id), os.O_RDONLY)
        except FileNotFoundError:
            return "", offset
        with os.fdopen(fd, "rb") as f:
            f.seek(offset)
            data = f.read(limit)
        end = data.rfind(b"\n") + 1  # hand out whole lines only
        return data[:end].decode("utf-8", "replace"), offset + end


HISTORY_KEYS = (
    "id",
    "kind",
    "status",
    "ref",
    "commit",
    "color",
    "who",
    "created",
    "finished",
    "backup",
    "backup_verify",
    "unsafe_allowed",
    "watch",
)


def history_entry(job: dict[str, Any]) -> dict[str, Any]:
    """What ``history`` shows of a finished job: who/what/when, the outcome's first line, step timings."""
    entry = {k: job.get(k) or "" for k in HISTORY_KEYS}
    entry["message"] = (job.get("message") or "").split("\n", 1)[0]
    entry["steps"] = job.get("steps") or []
    return entry

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
from .textsafe import clean, escape_controls

ACTIVE = ("queued", "running")
KEEP_JOBS = 200  # finished jobs kept for history and log
KEEP_HEALTH = 20  # finished health probes kept beside them
_STATE_LOCK = threading.Lock()
FINISHED = ("succeeded", "failed", "cancelled", "interrupted")
FILE_MODE = 0o640  # state, jobs, logs: root (or supervisord's user) and a group of readers, never everyone
DIR_MODE = 0o750
MAX_JSON = 4 << 20  # a state or job file is a few KB; anything bigger is not ours and is not read whole
LOG_MAX = 16 << 20  # a job log never grows past this: its first quarter and its last lines are kept (append_log)
LINE_MAX = 64 << 10  # a log line longer than this is cut (a program printing without newlines)
STATE_BUDGET = 256 << 20  # logs and output files of finished jobs beyond this, oldest first, are removed (prune)
MARKER = "[bluegreen: "  # how the line saying what append_log left out begins


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
    the disk. ``lock_wait``: None waits for the queue and job locks (the listener); a number of seconds
    makes them give up with Busy after that long (supervisord, which must never block). ``log_max``:
    the most bytes a job log holds (append_log).
    """

    def __init__(
        self, state_dir: str, app: str, *, sync: bool = True, lock_wait: float | None = None, log_max: int = LOG_MAX
    ):
        self.app = app
        self.state_dir = state_dir
        self.dir = os.path.join(state_dir, app)
        self.jobs_dir = os.path.join(self.dir, "jobs")
        self.state_path = os.path.join(self.dir, "state.json")
        self.lock = AppLock(os.path.join(self.dir, "lock"))
        self.sync = sync
        self.lock_wait = lock_wait
        self.log_max = log_max
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
        """The recorded state: ``live``, ``previous``, ``switched_at``, ``colors``, ``last_health``.

        Its strings carry no control character (textsafe.clean): they go out through XML-RPC and onto terminals.
        """
        return clean(read_json(self.state_path, {}) or {})

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
    def _flocked(self, name: str, what: str) -> Iterator[None]:
        """An flock on ``<app>/<name>``, on a descriptor of its own (so threads of one process exclude each other too).

        With ``lock_wait`` set (supervisord) it is only tried, for that long, and Busy says to try again:
        supervisord's loop never waits on a lock another process holds. Holders keep it for microseconds.
        """
        self.ensure()
        fd = open_file(os.path.join(self.dir, name), os.O_RDWR | os.O_CREAT)
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
                                f"{self.app}: {what} is busy (another process holds its lock); try again"
                            ) from None
                        time.sleep(0.005)
            yield
        finally:
            os.close(fd)

    def _written(self, paths: list[str]) -> None:
        """Files written without fsync under a lock, now released: fsync them (the listener only)."""
        if self.sync:
            for path in dict.fromkeys(paths):
                fsync_path(path)

    @contextlib.contextmanager
    def queue_lock(self) -> Iterator[None]:
        """Serialize queue changes between supervisord (enqueue, cancel) and the listener (claim).

        Held for microseconds, and nothing is fsynced while it is held (files written under it are
        fsynced after release); supervisord only tries it (see _flocked).
        """
        pending: list[str] = []
        with self._flocked("queue.lock", "the job queue"):
            self._held.unsynced = pending
            try:
                yield
            finally:
                self._held.unsynced = None
        self._written(pending)

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
        """A job as recorded, its strings without control characters (textsafe.clean: they go out through XML-RPC)."""
        try:
            return clean(read_json(self.job_path(job_id)))
        except json.JSONDecodeError:  # its id is taken but it is not written yet: not there for readers
            return None

    def update_job(self, job_id: int, **changes: Any) -> dict[str, Any]:
        """Merge ``changes`` into a job's file and return the job as written.

        A read-modify-write under ``jobs.lock``: the job's thread, the watch thread and supervisord's
        cancel write the same file, and without it one's update was lost (175 of 300 in a stress run).
        Held for one small read and write, nothing fsynced (that comes after release), so supervisord,
        which only tries it, is never kept waiting.
        """
        path = self.job_path(job_id)
        with self._flocked("jobs.lock", f"job {int(job_id)}"):
            job = self.read_job(job_id) or {"id": job_id}
            job.update(changes)
            write_json_atomic(path, job, sync=False)
        pending = getattr(self._held, "unsynced", None)
        if pending is not None:  # under the queue lock: fsynced after that is released
            pending.append(path)
        else:
            self._written([path])
        return job

    def jobs(self, statuses: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        """Jobs in id order, optionally only those in ``statuses``."""
        found = (self.read_job(i) for i in self.job_ids())
        return [j for j in found if j and (not statuses or j.get("status") in statuses)]

    def append_log(self, job_id: int, line: str) -> None:
        """Add a line to a job's log (0640, never through a symlink); ``user:password@`` of URLs masked.

        Control characters are spelled out (``\\x1b``: the log reads back through XML-RPC and drives no
        terminal), a line is cut at LINE_MAX characters, and a log that would pass ``log_max`` bytes is
        cut to its head, a line saying how many bytes were left out, and its newest lines (_cut). Appends
        of the job's threads take turns on an flock of the log itself (the listener's only: readers never wait).
        """
        text = escape_controls(mask_credentials(line)).rstrip("\n")
        if len(text) > LINE_MAX:
            text = f"{text[:LINE_MAX]} [{len(text) - LINE_MAX} more characters left out]"
        data = f"{text}\n".encode()
        fd = open_file(self.log_path(job_id), os.O_RDWR | os.O_APPEND | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.fstat(fd).st_size + len(data) > self.log_max:
                data = self._cut(fd) + data
            while data:
                data = data[os.write(fd, data) :]
        finally:
            os.close(fd)

    def _cut(self, fd: int) -> bytes:
        """Cut a full log back to its head (the first quarter of ``log_max``, whole lines) and return what
        follows it: a line saying how many bytes are left out in all, then the newest quarter's whole lines.

        The head's bytes never change, so where it ends is found again each time: at the marker, once there is one.
        """
        size, quarter = os.fstat(fd).st_size, self.log_max // 4
        head = os.pread(fd, quarter, 0)
        cut_before = head.find(b"\n" + MARKER.encode())  # where an earlier cut left its marker
        head_end = cut_before + 1 if cut_before >= 0 else head.rfind(b"\n") + 1 or len(head)
        left_out, tail_start = 0, head_end
        marker = os.pread(fd, 256, head_end)
        count, _, rest = marker[len(MARKER) :].partition(b" ")
        if marker.startswith(MARKER.encode()) and count.isdigit() and b"\n" in rest:
            left_out, tail_start = int(count), head_end + marker.index(b"\n") + 1
        start = max(tail_start, size - quarter)
        tail = os.pread(fd, size - start, start)
        if start > tail_start:  # begin at a whole line
            tail = tail[tail.find(b"\n") + 1 :]
        left_out += size - tail_start - len(tail)
        os.ftruncate(fd, head_end)
        note = f"{MARKER}{left_out} bytes of output left out here: the log keeps its first and its newest lines]\n"
        return note.encode() + tail

    def prune(self, keep: int = KEEP_JOBS, budget: int = STATE_BUDGET) -> None:
        """Forget all but the newest ``keep`` finished jobs, so reading the queue stays cheap; then fit ``budget``.

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
        self.fit(budget)

    def fit(self, budget: int = STATE_BUDGET) -> None:
        """Keep the app's job files within ``budget`` bytes: past it, the logs and output files of the
        oldest finished jobs go (their records stay, for history). An active job's files, and those of a
        job whose watch window runs, are never touched; entries are looked at, never followed.
        """
        used = 0
        for job in reversed(self.jobs()):  # newest first
            paths = (self.log_path(job["id"]), self.output_path(job["id"]))
            sizes = []
            for path in (self.job_path(job["id"]), *paths):
                try:
                    sizes.append(os.lstat(path).st_size)
                except FileNotFoundError:
                    sizes.append(0)
            used += sizes[0]
            busy = job.get("status") not in FINISHED or (job.get("watch") or {}).get("state") == "running"
            if busy or used + sum(sizes[1:]) <= budget:
                used += sum(sizes[1:])
                continue
            for path in paths:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)

    def read_log(self, job_id: int, offset: int = 0, limit: int = 65536) -> tuple[str, int]:
        """Up to ``limit`` bytes of a job's log from byte ``offset`` on, and the offset to continue from.

        Whole lines only (a chunk without a newline is handed out as is, so a reader never stalls), with
        control characters spelled out: logs written before append_log did that read back through XML-RPC too.
        A log cut (append_log) below ``offset`` while it was followed goes on from its end.
        """
        try:
            fd = open_file(self.log_path(job_id), os.O_RDONLY)
        except FileNotFoundError:
            return "", offset
        with os.fdopen(fd, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if offset > size:
                return f"{MARKER}the log was cut while it was read: it goes on from its newest lines]\n", size
            f.seek(offset)
            data = f.read(limit)
        end = data.rfind(b"\n") + 1 or (len(data) if len(data) == limit else 0)
        return escape_controls(data[:end].decode("utf-8", "replace")), offset + end


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

"""On-disk state of an app: live/previous color, jobs with their logs, and the per-app lock.

Everything shared between supervisord (the RPC extension, re-created on every reload and once
per HTTP server) and the listener process lives here. Layout under ``<state_dir>/<app>/``:
``store.db`` (SQLite in WAL mode: the app state and the jobs, each change one transaction, active
jobs found by an index), ``jobs/<id>.log`` (and a job's cancel and output files), ``lock``. The
``state.json`` and ``jobs/<id>.json`` of older versions are taken over on first use, then removed.

Both processes usually run as root, so nothing here may follow a path the app user can replace:
``state_dir`` must be a directory only root (or supervisord's user) can write (``check_private_dir``),
and every file is opened with O_NOFOLLOW and O_NONBLOCK and used only when it is a regular file (the
database and its -wal/-shm files too, before SQLite opens them), so a symlink planted at a job log or
a FIFO at ``store.db`` is refused with a clear error instead of being followed or hanging supervisord.
Files are 0640 and folders 0750: not world-readable. Standard library only: supervisord imports this module.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import grp
import json
import os
import pwd
import re
import sqlite3
import stat
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any, NamedTuple

from supervisor_bluegreen.shared.errors import BluegreenError
from supervisor_bluegreen.shared.masking import mask_credentials
from supervisor_bluegreen.shared.model import FINISHED, Kind, Status
from supervisor_bluegreen.shared.textsafe import clean, escape_controls

KEEP_JOBS = 200  # finished jobs kept for history and log
KEEP_HEALTH = 20  # finished health probes kept beside them
FILE_MODE = 0o640  # state, jobs, logs: root (or supervisord's user) and a group of readers, never everyone
DIR_MODE = 0o750
MAX_JSON = 4 << 20  # a state or job file is a few KB; anything bigger is not ours and is not read whole
LOG_MAX = 16 << 20  # a job log never grows past this: its first quarter and its last lines are kept (append_log)
LINE_MAX = 64 << 10  # a log line longer than this is cut (a program printing without newlines)
STATE_BUDGET = 256 << 20  # logs and output files of finished jobs beyond this, oldest first, are removed (prune)
MARKER = "[bluegreen: "  # how the line saying what append_log left out begins
DB_NAME = "store.db"  # the app's state and jobs (logs, cancel and output files stay files beside it)
SCHEMA_VERSION = 1  # PRAGMA user_version of a database whose tables are made (and older JSON files taken over)
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, status TEXT NOT NULL, kind TEXT NOT NULL,"
    " data TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, id)",
)
_OPEN_LOCK = threading.Lock()  # a database file is made, and a connection opened, by one thread at a time
ANCHORS = 8  # databases whose listener keeps an idle connection open (Store._anchor)
_ANCHORS: dict[str, sqlite3.Connection] = {}
BUSY_FOREVER = 86400.0  # how long the listener waits for the write lock (supervisord: lock_wait, tens of ms)


class UnsafePath(BluegreenError, OSError):
    """A path root must not use: a symlink, not a regular file, too big, or in a folder others can write."""

    def __str__(self) -> str:  # the message alone, not "[Errno 40] ...": it is shown to users as is
        return self.strerror or super().__str__()


class Busy(BluegreenError):
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
    replaces whatever entry is there without following it (deploy stamps, backup verifications; the
    store itself is a database). ``sync=False`` skips the fsync.
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


def _dumps(data: Any) -> str:
    """JSON as the store keeps it: compact, keys sorted, ASCII only (every other character as ``\\uXXXX``)."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


# what a character escape_controls spells out looks like in _dumps's JSON: \u00XX (C0, DEL, C1), \b \f \r,
# a surrogate \udXXX, \ufffe or \uffff, or a raw DEL. Text without any of them needs no cleaning.
_UNCLEAN_JSON = re.compile(r"\\u00|\\u[dD][89a-fA-F]|\\u[fF]{3}[eEfF]|\\[bfr]|\x7f")


def _loads(text: str) -> Any:
    """A record of the store as read: its strings cleaned (textsafe.clean), a pass skipped when its JSON shows
    no character to spell out (history reads hundreds of jobs, and cleaning dominated their cost)."""
    data = json.loads(text)
    return clean(data) if _UNCLEAN_JSON.search(text) else data


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


class Unsafe(NamedTuple):
    """An entry someone but root could change: ``why`` is "owner", "writable", "not a directory", or why it
    could not be checked (then ``st`` is None)."""

    path: str
    why: str
    st: os.stat_result | None


def unsafe_entry(path: str, euid: int | None = None, file_ok: bool = False) -> Unsafe | None:
    """The first entry someone but root could change on the way from ``path`` up to ``/``, or None.

    The rule, for every caller: each entry from ``path`` up to ``/``, both as written and with symlinks
    resolved, must be owned by root or by us (``euid``) and writable by no group and no other user: whoever
    can write a folder can rename what is in it and put a symlink in its place. A sticky folder (``/tmp``) is
    fine above an existing entry of ours, since others cannot rename that; never as the entry itself, or as
    the nearest existing one when ``path`` is still to be made (someone could make it first). ``file_ok``:
    ``path`` itself may be a file (one root reads), not only a folder. Stat calls only.
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
                    return Unsafe(d, f"cannot check {d}: {exc.strerror}", None)
                if st is not None:
                    mode = stat.S_IMODE(st.st_mode)
                    if not stat.S_ISDIR(st.st_mode) and not (file_ok and d == start):
                        return Unsafe(d, "not a directory", st)
                    if st.st_uid not in (0, euid):
                        return Unsafe(d, "owner", st)
                    sticky_ok = bool(mode & stat.S_ISVTX) and not nearest
                    if mode & (stat.S_IWGRP | stat.S_IWOTH) and not sticky_ok:
                        return Unsafe(d, "writable", st)
                    nearest = False
            elif os.path.exists(d):
                nearest = False
            parent = os.path.dirname(d)
            if parent == d:
                break
            d = parent
    return None


def private_dir_problem(path: str, euid: int | None = None) -> str | None:
    """Why root must not keep files under ``path`` (someone else could replace them), or None when it may.

    The rule is ``unsafe_entry``'s: every folder up to ``/`` root's (or ours) and writable by no one else,
    a sticky one only above an existing folder of ours.
    """
    found = unsafe_entry(path, euid)
    if found is None:
        return None
    d, why, st = found
    if st is None:
        return why
    if why == "not a directory":
        return f"{d} is not a directory"
    mode = stat.S_IMODE(st.st_mode)
    if why == "owner":
        return (
            f"{d} is owned by {_owner(st.st_uid)}, mode {mode:04o}: that user could replace "
            "files root keeps there; use a folder only root can write"
        )
    who = "everyone" if mode & stat.S_IWOTH else f"group {_group(st.st_gid)}"
    return (
        f"{d} (owner {_owner(st.st_uid)}, mode {mode:04o}) is writable by {who}: they could "
        "replace files root keeps there; use a folder only root can write"
    )


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


class StoreError(BluegreenError, OSError):
    """The app's database cannot be used (damaged, not a database, disk full): said as such, never a traceback."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


class Store:
    """State of one app: its state, jobs and queue in one SQLite database, logs in files beside it.

    ``<app>/store.db`` (WAL mode: readers never wait for the writer) holds the app state (one JSON
    document) and one row per job (its JSON, with its status indexed), so the active jobs are found
    without reading the finished ones. Every change is one transaction; the queue lock is the
    database's write lock. ``sync``: make what is written durable (the listener: the WAL is fsynced
    after the transaction, never while the lock is held); supervisord's side passes False: its commits
    are not fsynced (SQLite only syncs when it moves the WAL into the database, a checkpoint: outside
    any lock, and in supervisord only when it closes the last connection). ``lock_wait``: None waits
    for the write lock (the listener); a number of seconds gives up with Busy after that long
    (supervisord, which must never block). ``log_max``: the most bytes a job log holds (append_log).
    The JSON files of older versions are taken over on first use.
    """

    def __init__(
        self, state_dir: str, app: str, *, sync: bool = True, lock_wait: float | None = None, log_max: int = LOG_MAX
    ):
        self.app = app
        self.state_dir = state_dir
        self.dir = os.path.join(state_dir, app)
        self.jobs_dir = os.path.join(self.dir, "jobs")
        self.db_path = os.path.join(self.dir, DB_NAME)
        self.lock = AppLock(os.path.join(self.dir, "lock"))
        self.sync = sync
        self.lock_wait = lock_wait
        self.log_max = log_max
        self._local = threading.local()  # .conn: this thread's connection; .depth: transactions it is inside

    def ensure(self) -> Store:
        """Make the app's folders (0750) and database (0640), taking over an older version's JSON files;
        refuse a symlink or a non-folder in the folders' place."""
        self._folders()
        self._db(create=True)
        self._done()
        return self

    def _folders(self) -> None:
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

    # -- the database --------------------------------------------------------------
    def _regular(self, path: str) -> bool:
        """Whether ``path`` exists; UnsafePath when it is anything but a regular file with one link.

        Looked at with lstat, never opened: closing a descriptor of our own on the database or its -shm
        would drop the locks SQLite holds on it for this process's connections (POSIX locks are per process).
        """
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return False
        if stat.S_ISLNK(st.st_mode):
            raise UnsafePath(errno.ELOOP, f"refusing {path}: it is a symbolic link")
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePath(errno.EINVAL, f"refusing {path}: it is {_kind(st.st_mode)}, not a regular file")
        if st.st_nlink > 1:
            raise UnsafePath(errno.EMLINK, f"refusing {path}: it has {st.st_nlink} hard links (one is elsewhere)")
        return True

    def _db(self, create: bool) -> sqlite3.Connection | None:
        """This thread's connection; None when there is no database and nothing to take over (reads: empty).

        The database and its -wal/-shm files are checked first (a symlink, FIFO, device or hard link is
        refused, never handed to SQLite); a new database is made 0640 (SQLite gives -wal and -shm its mode).
        Every connection handed out is handed back with _done.
        """
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect(create)
            if conn is None:
                return None
        self._local.holds += 1
        return conn

    def _connect(self, create: bool) -> sqlite3.Connection | None:
        with _OPEN_LOCK:  # no other thread of ours connects while the file is made (and its descriptor closed)
            exists = self._regular(self.db_path)
            for companion in (f"{self.db_path}-wal", f"{self.db_path}-shm"):
                self._regular(companion)
            if not exists:
                if not create and not self._legacy_files():
                    return None
                self._folders()
                try:
                    fd = open_file(self.db_path, os.O_RDWR | os.O_CREAT | os.O_EXCL)
                    try:
                        os.fchmod(fd, FILE_MODE)
                    finally:
                        os.close(fd)  # nobody had it open yet: no lock of ours is dropped
                except FileExistsError:  # made by another process meanwhile
                    self._regular(self.db_path)
            wait = BUSY_FOREVER if self.lock_wait is None else self.lock_wait
            with self._sql("its database"):
                conn = sqlite3.connect(self.db_path, timeout=wait, isolation_level=None, check_same_thread=False)
                if self.lock_wait is not None:  # the listener moves the WAL into the database: it may wait for the disk
                    conn.execute("PRAGMA wal_autocheckpoint=0")
        self._local.conn, self._local.depth, self._local.holds = conn, 0, 1  # held by the setup
        try:
            with self._sql("its database"):  # commits never fsync; checkpoints do (OFF would let one corrupt it)
                conn.execute("PRAGMA synchronous=NORMAL")
            self._setup(conn)
        except BaseException:
            self._local.conn = None
            conn.close()
            raise
        self._local.holds = 0
        if self.lock_wait is None:
            self._anchor()
        return conn

    def _anchor(self) -> None:
        """Keep one idle connection to the database open for the life of the listener's process.

        While one is open, no other is the last to close: supervisord's, closed after each call, then never
        moves the WAL into the database (fsyncs) and removes -wal and -shm, only for the next call to make
        them again. Only the newest ANCHORS databases keep one (a test process makes hundreds).
        """
        with _OPEN_LOCK:
            if self.db_path in _ANCHORS:
                return
            try:
                with self._sql("its database"):
                    anchor = sqlite3.connect(self.db_path, timeout=1.0, isolation_level=None, check_same_thread=False)
                    try:
                        anchor.execute("SELECT count(*) FROM sqlite_master").fetchall()  # maps -wal and -shm
                    except BaseException:
                        anchor.close()
                        raise
            except Busy:
                return  # only saves work: the next connection of ours tries again
            _ANCHORS[self.db_path] = anchor
            while len(_ANCHORS) > ANCHORS:
                _ANCHORS.pop(next(iter(_ANCHORS))).close()

    def _done(self) -> None:
        """Close this thread's connection once an operation is over, on supervisord's side.

        supervisord closes every descriptor it does not know of when it reloads (cleanup_fds): a connection
        kept across calls would find its files closed, or other files under their numbers. The listener keeps
        its connection for the thread's next operation.
        """
        self._local.holds -= 1
        if not self._local.holds and self.lock_wait is not None:
            self._local.conn.close()
            self._local.conn = None

    def _setup(self, conn: sqlite3.Connection) -> None:
        """Create the tables once, taking over the JSON files of an older version in the same transaction."""
        with self._sql("its database"):
            if conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
                return
        self._wal(conn)
        taken: list[str] = []
        with self._transaction("its database") as db:
            if db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
                return  # another process made it meanwhile
            for statement in SCHEMA:
                db.execute(statement)
            taken = self._take_over(db)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        for path in taken:  # in the database now (a crash before this only leaves stale files, never read again)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def _wal(self, conn: sqlite3.Connection) -> None:
        """Put a new database in WAL mode, trying again while another connection opens it meanwhile.

        SQLite answers a journal mode change that meets another connection with BUSY at once, without
        its busy handler (seen with two threads opening a new database): the listener tries until it
        changes, supervisord's side for ``lock_wait``, then says Busy.
        """
        deadline = time.monotonic() + (BUSY_FOREVER if self.lock_wait is None else self.lock_wait)
        while True:
            try:
                with self._sql("its database"):
                    if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                        conn.execute("PRAGMA journal_mode=WAL")
                return
            except Busy:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.005)

    def _legacy_files(self) -> bool:
        """Whether an older version left its JSON state here (taken over by the first use of the store)."""
        if os.path.lexists(os.path.join(self.dir, "state.json")):
            return True
        try:
            return any(n.endswith(".json") and n[:-5].isdigit() for n in os.listdir(self.jobs_dir))
        except (FileNotFoundError, NotADirectoryError):
            return False

    def _take_over(self, db: sqlite3.Connection) -> list[str]:
        """Copy ``state.json`` and ``jobs/<id>.json`` into the database; the paths copied, to be removed.

        An unsafe or unreadable state.json stops the takeover (UnsafePath, ValueError: nothing changes);
        a job file that is unsafe or was never written is left where it is, but its id stays used.
        """
        taken = []
        legacy_state = os.path.join(self.dir, "state.json")
        state = read_json(legacy_state)
        if state is not None:
            db.execute("INSERT OR REPLACE INTO state (key, value) VALUES ('app', ?)", (_dumps(state),))
            taken.append(legacy_state)
        try:
            names = os.listdir(self.jobs_dir)
        except FileNotFoundError:
            names = []
        top = 0
        for job_id in sorted(int(n[:-5]) for n in names if n.endswith(".json") and n[:-5].isdigit()):
            top = job_id
            path = os.path.join(self.jobs_dir, f"{job_id}.json")
            try:
                job = read_json(path)
            except (UnsafePath, ValueError):
                continue
            if isinstance(job, dict):
                self._put_job(db, job_id, job)
                taken.append(path)
        if top:  # the next job takes the next id, as it would have with the files
            db.execute("UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = 'jobs'", (top,))
            if not db.execute("SELECT 1 FROM sqlite_sequence WHERE name = 'jobs'").fetchone():
                db.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('jobs', ?)", (top,))
        return taken

    @contextlib.contextmanager
    def _sql(self, what: str) -> Iterator[None]:
        """SQLite's errors as this module's: a locked database is Busy (try again), anything else a StoreError."""
        try:
            yield
        except sqlite3.Error as exc:
            code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
            if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                raise Busy(f"{self.app}: {what} is busy (another process holds its lock); try again") from None
            if code == sqlite3.SQLITE_FULL or (code == sqlite3.SQLITE_IOERR and self._disk_full()):
                raise StoreError(errno.ENOSPC, f"{self.db_path}: {os.strerror(errno.ENOSPC)} ({exc})") from None
            raise StoreError(errno.EIO, f"{self.db_path}: {exc}") from None

    def _disk_full(self) -> bool:
        """Whether the state's disk has no block left (SQLite says "disk I/O error" when its -shm cannot grow)."""
        try:
            return os.statvfs(self.dir).f_bavail == 0
        except OSError:
            return False

    @contextlib.contextmanager
    def _transaction(self, what: str) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE: the write lock first), or the one this thread is inside.

        supervisord's side waits ``lock_wait`` for the lock, then says Busy. Nothing is fsynced while it
        is held: the listener's side fsyncs the WAL after the commit (synchronous=NORMAL skips it at commit).
        """
        conn = self._db(create=True)
        assert conn is not None
        if self._local.depth:
            self._local.depth += 1
            try:
                yield conn
            finally:
                self._local.depth -= 1
                self._done()
            return
        try:
            with self._sql(what):
                conn.execute("BEGIN IMMEDIATE")
            self._local.depth = 1
            try:
                with self._sql(what):
                    yield conn
                    conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            finally:
                self._local.depth = 0
        finally:
            self._done()
        if self.sync:
            fsync_path(f"{self.db_path}-wal")  # the -wal holds no lock: a descriptor of ours on it drops none

    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """A query's rows (none while there is no database yet)."""
        try:
            conn = self._db(create=False)
        except StoreError as exc:
            return self._rows_from_the_file(sql, params, exc)
        if conn is None:
            return []
        try:
            with self._sql("its database"):
                return conn.execute(sql, params).fetchall()
        finally:
            self._done()

    def _rows_from_the_file(self, sql: str, params: tuple[Any, ...], error: StoreError) -> list[tuple[Any, ...]]:
        """Status must answer when the disk is full, but the first connection has to size its -shm file then.

        The last connection to close moved the WAL into the database file and removed both: with no WAL
        holding changes, the file alone is whole, and is read as immutable (no -wal, -shm or lock), for this
        query only; a database never made (the disk was full when it was created) holds nothing yet.
        Otherwise ``error``, the connection's, stands.
        """
        try:
            wal = os.lstat(f"{self.db_path}-wal").st_size
        except FileNotFoundError:
            wal = 0
        if wal:
            raise error
        self._regular(self.db_path)  # checked again: this connection skips _db
        with self._sql("its database"):
            conn = sqlite3.connect(f"file:{urllib.parse.quote(self.db_path)}?immutable=1", uri=True)
            try:
                if conn.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                    if self._legacy_files():
                        raise error
                    return []
                return conn.execute(sql, params).fetchall()
            finally:
                conn.close()

    # -- app state ---------------------------------------------------------------
    def read(self) -> dict[str, Any]:
        """The recorded state: ``live``, ``previous``, ``switched_at``, ``colors``, ``last_health``.

        Its strings carry no control character (textsafe.clean): they go out through XML-RPC and onto terminals.
        """
        rows = self._rows("SELECT value FROM state WHERE key = 'app'")
        return _loads(rows[0][0]) if rows else {}

    def update(self, **changes: Any) -> dict[str, Any]:
        """Merge ``changes`` into the state in one transaction and return it as written."""
        with self._transaction("its state") as db:
            state = self.read()
            state.update(changes)
            db.execute("INSERT OR REPLACE INTO state (key, value) VALUES ('app', ?)", (_dumps(state),))
            return state

    # -- jobs --------------------------------------------------------------------
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

        One transaction: what is read and written inside it is seen by others at once and whole, or
        not at all. Held for microseconds, nothing fsynced while held; supervisord only tries it (Busy).
        """
        with self._transaction("the job queue"):
            yield

    def claim(self, job_id: int) -> dict[str, Any] | None:
        """Mark a queued job running and return it as it is now; None when it was cancelled or superseded."""
        with self.queue_lock():
            job = self.read_job(job_id)
            if not job or job.get("status") != Status.QUEUED:
                return None
            return self.update_job(job_id, status=Status.RUNNING, started=time.time(), step="")

    def enqueue(self, kind: str, args: dict[str, Any], who: str = "", coalesce: bool = False) -> dict[str, Any]:
        """Add a job; with ``coalesce``, queued jobs of the same kind give way to it (the newest wins)."""
        with self.queue_lock():
            job = self.create_job(kind, args, who)
            if coalesce:
                for old in self.jobs((Status.QUEUED,)):
                    if old["kind"] == kind and old["id"] != job["id"]:
                        self.update_job(
                            old["id"],
                            status=Status.CANCELLED,
                            finished=time.time(),
                            message=f"{self.app}: {kind} superseded by job {job['id']}",
                        )
            return job

    def job_ids(self) -> list[int]:
        return [row[0] for row in self._rows("SELECT id FROM jobs ORDER BY id")]

    def create_job(self, kind: str, args: dict[str, Any], who: str = "") -> dict[str, Any]:
        """Record a new queued job under the next id (ids are never used twice, even after prune)."""
        with self._transaction("the job queue") as db:
            job_id = db.execute("INSERT INTO jobs (status, kind, data) VALUES ('queued', ?, '{}')", (kind,)).lastrowid
            job = {
                "id": job_id,
                "app": self.app,
                "kind": kind,
                "args": args,
                "who": who,
                "status": Status.QUEUED,
                "created": time.time(),
                "started": None,
                "finished": None,
                "message": "",
                "steps": [],
            }
            self._put_job(db, job_id, job)
            return job

    def record(self, kind: str, args: dict[str, Any], who: str, message: str, **state: Any) -> dict[str, Any]:
        """A job that is done as it is made (a lock, a maintenance page: history rows), and ``state`` merged into
        the app state, in one transaction: both, or neither."""
        with self._transaction("the job queue"):
            if state:
                self.update(**state)
            job = self.create_job(kind, args, who)
            return self.update_job(job["id"], status=Status.SUCCEEDED, started=job["created"],
                                   finished=job["created"], message=message)  # fmt: skip

    def finish(self, job_id: int, status: str, message: str) -> dict[str, Any]:
        """End a job and make it the app's ``last_job`` in one transaction: whoever sees no job running
        sees this one's verdict as the last (two writes let a status read between them name the job before)."""
        with self._transaction(f"job {int(job_id)}"):
            job = self.update_job(job_id, status=status, message=message, finished=time.time(), step="")
            self.update(last_job={"id": job["id"], "kind": job.get("kind", ""), "status": status, "message": message})
            return job

    @staticmethod
    def _put_job(db: sqlite3.Connection, job_id: int, job: dict[str, Any]) -> None:
        db.execute(
            "INSERT OR REPLACE INTO jobs (id, status, kind, data) VALUES (?, ?, ?, ?)",
            (int(job_id), str(job.get("status") or ""), str(job.get("kind") or ""), _dumps(job)),
        )

    def read_job(self, job_id: int) -> dict[str, Any] | None:
        """A job as recorded, its strings without control characters (textsafe.clean: they go out through XML-RPC)."""
        rows = self._rows("SELECT data FROM jobs WHERE id = ?", (int(job_id),))
        return _loads(rows[0][0]) if rows else None

    def update_job(self, job_id: int, **changes: Any) -> dict[str, Any]:
        """Merge ``changes`` into a job in one transaction and return the job as written.

        The job's thread, the watch thread and supervisord's cancel update the same job: a read-modify-write
        outside a transaction lost one's update (175 of 300 in a stress run). supervisord only tries the lock.
        """
        with self._transaction(f"job {int(job_id)}") as db:
            job = self.read_job(job_id) or {"id": job_id}
            job.update(changes)
            self._put_job(db, job_id, job)
            return job

    def jobs(
        self, statuses: tuple[str, ...] = (), newest: int = 0, but_kinds: tuple[str, ...] = ()
    ) -> list[dict[str, Any]]:
        """Jobs in id order (oldest first), optionally only those in ``statuses`` (found by index, not by
        scan), none of ``but_kinds``, and only the ``newest`` of them (history: no need to read the rest)."""
        where, params = [], []
        for column, values, test in (("status", statuses, "IN"), ("kind", but_kinds, "NOT IN")):
            if values:
                where.append(f"{column} {test} ({', '.join('?' * len(values))})")
                params += values
        sql = "SELECT id, data FROM jobs" + (f" WHERE {' AND '.join(where)}" if where else "")
        if newest:
            sql = f"SELECT * FROM ({sql} ORDER BY id DESC LIMIT {int(newest)})"
        return [_loads(data) for _, data in self._rows(f"{sql} ORDER BY id", tuple(params))]

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
        """Forget all but the newest ``keep`` finished jobs, so the database stays small; then fit ``budget``.

        Health probes count apart (at most the newest KEEP_HEALTH stay): they never push deploys out.
        """
        marks = ", ".join("?" * len(FINISHED))
        with self._transaction("the job queue") as db:
            rows = db.execute(f"SELECT id, kind FROM jobs WHERE status IN ({marks}) ORDER BY id", FINISHED).fetchall()
            probes = [job_id for job_id, kind in rows if kind == Kind.HEALTH]
            finished = [job_id for job_id, kind in rows if kind != Kind.HEALTH]
            probes_kept = min(keep, KEEP_HEALTH)
            doomed = (finished[:-keep] if keep else finished) + (probes[:-probes_kept] if probes_kept else probes)
            db.executemany("DELETE FROM jobs WHERE id = ?", [(job_id,) for job_id in doomed])
        for job_id in doomed:
            for path in (
                self.log_path(job_id),
                self.cancel_path(job_id),
                self.cancel_path(job_id, True),
                self.output_path(job_id),
            ):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
        self.fit(budget)

    def fit(self, budget: int = STATE_BUDGET) -> None:
        """Keep the app's jobs within ``budget`` bytes: past it, the logs and output files of the oldest
        finished jobs go (their records stay, for history). An active job's files, and those of a job
        whose watch window runs, are never touched; entries are looked at, never followed.
        """
        used = 0
        rows = self._rows(
            "SELECT id, status, length(data), json_extract(data, '$.watch.state') FROM jobs ORDER BY id DESC"
        )
        for job_id, status, size, watch in rows:  # newest first
            paths = (self.log_path(job_id), self.output_path(job_id))
            sizes = []
            for path in paths:
                try:
                    sizes.append(os.lstat(path).st_size)
                except FileNotFoundError:
                    sizes.append(0)
            used += size
            if status not in FINISHED or watch == Status.RUNNING or used + sum(sizes) <= budget:
                used += sum(sizes)
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
    "created",  # queued
    "started",  # claimed by the listener ("" when it never ran: cancelled or superseded in the queue)
    "finished",  # ended
    "backup",
    "backup_verify",
    "unsafe_allowed",
    "watch",
    "release",  # the release folder a deploy built, or a rollback or restart started
)


def history_entry(job: dict[str, Any]) -> dict[str, Any]:
    """What ``history`` shows of a finished job: who/what, when it was queued, started and ended (``created``,
    ``started``, ``finished``: epoch seconds), the outcome's first line, step timings."""
    entry = {k: job.get(k) or "" for k in HISTORY_KEYS}
    entry["message"] = (job.get("message") or "").split("\n", 1)[0]
    entry["steps"] = job.get("steps") or []
    return entry

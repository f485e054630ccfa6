"""The database backup a deploy takes before it migrates, and how to restore it.

A migration that drops a column cannot be rolled back by switching colors: the data is
gone. So a deploy dumps the database first, with the server's own dump tool, into
``<backup_dir>/<app>-<YYYYmmdd-HHMMSS>-<commit7>.sql.gz`` (SQLite: ``.sqlite.sql.gz``, since
it is restored by a Python script and not by a database client).

Decide, then act: :func:`plan_dump` and :func:`restore_argv` turn Django's
``DATABASES["default"]`` into argv + environment (passwords only ever in the environment,
where ``ps`` and error messages do not show them); :func:`run_dump` is the one executor.
It writes ``<path>.tmp`` and renames it only after the dump tool exited 0, so a file with
the final name is always a complete dump.

Restore (stdin is the uncompressed dump, into an empty database)::

    argv, env = restore_argv(kind, settings.DATABASES["default"])
    gunzip -c <backup> | env <env> <argv>

Proven restorable: :func:`plan_verify` / :func:`run_verify` (or :func:`verify`, both at once) load
a backup into a scratch database beside the source (SQLite: in the loading process's memory, never a
file others could open) and compare tables and row counts (what is
compared, and why, is noted above plan_verify); the outcome is a :class:`VerifyResult`, also kept as
``<backup>.verified.json``. :func:`plan_restore` / :func:`run_restore` replace the live database's
contents with a backup (``bluegreen restore``, restore.py, verifies first and takes a fresh backup).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable

from supervisor_bluegreen.host import runner
from supervisor_bluegreen.shared import store as state
from supervisor_bluegreen.shared.backuplist import backup_dir_of, list_backups, verified_path  # noqa: F401 (re-exported)
from supervisor_bluegreen.shared.errors import BluegreenError

KINDS = ("mysql", "postgresql", "sqlite")
SUFFIXES = {"mysql": ".sql.gz", "postgresql": ".sql.gz", "sqlite": ".sqlite.sql.gz"}
_STDERR_TAIL = 1500  # characters of the dump tool's stderr quoted in errors

# Dumps through iterdump() inside one read transaction (a consistent snapshot while the
# app keeps writing); opened read-only so a wrong NAME fails instead of creating a file.
# surrogateescape carries invalid UTF-8 in TEXT columns through unchanged.
_SQLITE_DUMP = """\
import sqlite3, sys, urllib.parse
db = sqlite3.connect("file:" + urllib.parse.quote(sys.argv[1]) + "?mode=ro", uri=True)
db.text_factory = lambda b: b.decode("utf-8", "surrogateescape")
db.execute("BEGIN")
out = sys.stdout.buffer
for line in db.iterdump():
    out.write(line.encode("utf-8", "surrogateescape") + b"\\n")
"""
# Counts of every table of ``db``: the end of the count script and of the verify's load.
_SQLITE_COUNTS = """\
names = [r[0] for r in db.execute(
    "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\\\_%' ESCAPE '\\\\'")]
counts = {n: db.execute('SELECT COUNT(*) FROM "%s"' % n.replace('"', '""')).fetchone()[0] for n in names}
print(json.dumps(counts))
"""
# Loads the dump (stdin) into a database in memory, never into a file: a scratch copy on disk could be
# opened by someone else while it exists (and read after its delete). With a path, the loaded database
# is then copied page by page into that file with SQLite's online backup API, in one write transaction
# (open connections of the app see it at once; a dump that fails to load leaves the file as it was);
# without, the counts of its tables are printed (verify).
_SQLITE_LOAD = (
    """\
import json, sqlite3, sys
db = sqlite3.connect(":memory:")
db.executescript(sys.stdin.buffer.read().decode("utf-8", "surrogateescape"))
if len(sys.argv) > 1:
    target = sqlite3.connect(sys.argv[1])
    db.backup(target)
    target.close()
    sys.exit(0)
"""
    + _SQLITE_COUNTS
)


class BackupError(BluegreenError):
    """The backup could not be taken; the message says why, quoting the dump tool's stderr."""


@dataclass(frozen=True)
class DumpPlan:
    """One dump to run: ``argv`` writes the dump on its stdout, ``env`` is added to ours."""

    kind: str
    argv: tuple[str, ...]
    env: dict[str, str]
    path: str


def backup_name(app: str, when: datetime, commit: str, kind: str) -> str:
    """``<app>-<YYYYmmdd-HHMMSS>-<commit[:7]>.sql.gz``: sorts by time, says what was deployed.

    Pass ``when`` from one clock for every backup of an app: prune() orders by it.
    Characters of ``commit`` that are unsafe in a file name become ``_``.
    """
    if not app or "/" in app or app in (".", ".."):
        raise ValueError(f"unusable app name for a backup file: {app!r}")
    if kind not in SUFFIXES:
        raise ValueError(f"unknown backup kind {kind!r}: expected one of {', '.join(KINDS)}")
    short = re.sub(r"[^0-9A-Za-z]", "_", commit[:7]) or "unknown"
    return f"{app}-{when:%Y%m%d-%H%M%S}-{short}{SUFFIXES[kind]}"


def kind_of(engine: str) -> str:
    """mysql, postgresql or sqlite for a Django ENGINE (GIS and pool wrappers included)."""
    last = engine.rsplit(".", 1)[-1]
    if last.endswith("mysql"):
        return "mysql"
    if last in ("postgresql", "postgresql_psycopg2", "postgis"):
        return "postgresql"
    if last == "sqlite3":
        return "sqlite"
    raise BackupError(f"cannot back up ENGINE {engine!r}: supported are mysql, postgresql, sqlite3")


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _mysql_connection(database: dict[str, Any]) -> tuple[list[str], list[str], dict[str, str], str]:
    """Leading options, connection options, env and database name, read as Django's dbshell does."""
    options = database.get("OPTIONS") or {}
    name = _text(options.get("database", options.get("db", database.get("NAME"))))
    user = _text(options.get("user", database.get("USER")))
    password = _text(options.get("password", options.get("passwd", database.get("PASSWORD"))))
    host = _text(options.get("host", database.get("HOST")))
    port = _text(options.get("port", database.get("PORT")))
    defaults_file = _text(options.get("read_default_file"))
    if not name:
        raise BackupError("cannot back up a MySQL database without a NAME")
    first = [f"--defaults-file={defaults_file}"] if defaults_file else []  # must come first
    args: list[str] = []
    if "/" in host:  # Django: a HOST with a slash is the server's unix socket
        args += ["--socket", host]
    elif host or not defaults_file:  # an option file may name the server itself
        args += ["-h", host or "127.0.0.1", "-P", port or "3306"]
    if user:
        args += ["-u", user]
    ssl = options.get("ssl") or {}
    for key in ("ca", "cert", "key"):
        if ssl.get(key):
            args.append(f"--ssl-{key}={ssl[key]}")
    # utf8mb4 unless told otherwise: older clients default to 3-byte utf8 and mangle emoji.
    args.append(f"--default-character-set={_text(options.get('charset')) or 'utf8mb4'}")
    return first, args, ({"MYSQL_PWD": password} if password else {}), name


def _pg_connection(database: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    """Connection options ending with the database, and env, read as Django's dbshell does."""
    options = database.get("OPTIONS") or {}
    name = _text(database.get("NAME"))
    args: list[str] = []
    for flag, key in (("-h", "HOST"), ("-p", "PORT"), ("-U", "USER")):
        if _text(database.get(key)):
            args += [flag, _text(database[key])]
    env = {"PGPASSWORD": _text(database.get("PASSWORD"))} if database.get("PASSWORD") else {}
    for key in ("service", "sslmode", "sslrootcert", "sslcert", "sslkey", "passfile"):
        if options.get(key):
            env[f"PG{key.upper()}"] = _text(options[key])
    if name and ("=" in name or name.startswith(("postgres://", "postgresql://"))):
        # libpq reads such a bare dbname as a connection string: quote it as one instead.
        quoted = name.replace("\\", "\\\\").replace("'", "\\'")
        args += ["-d", f"dbname='{quoted}'"]
    elif name:
        args += ["--", name]
    elif not options.get("service"):
        raise BackupError("cannot back up a PostgreSQL database without a NAME (or OPTIONS service)")
    return args, env


def _sqlite_path(database: dict[str, Any]) -> str:
    name = database.get("NAME")
    path = os.fspath(name) if name else ""
    if not path or path == ":memory:" or path.startswith("file:"):
        raise BackupError(f"cannot back up SQLite database {path!r}: expected a file path")
    return path


def plan_dump(
    database: dict[str, Any],
    backup_dir: str,
    app: str,
    commit: str,
    when: datetime,
    python: str = sys.executable,
) -> DumpPlan:
    """The dump command for Django's ``DATABASES["default"]`` and where its output goes.

    ``python`` runs the SQLite dump: pass the app's interpreter so its sqlite3 module reads the file.
    """
    kind = kind_of(_text(database.get("ENGINE")))
    path = os.path.join(backup_dir, backup_name(app, when, commit, kind))
    if kind == "mysql":
        first, args, env, name = _mysql_connection(database)
        # --single-transaction: consistent InnoDB snapshot without locking the live app out;
        # --no-tablespaces: MySQL 8 otherwise demands the PROCESS privilege of the app's user.
        dump = ["--single-transaction", "--routines", "--triggers", "--hex-blob", "--no-tablespaces"]
        return DumpPlan(kind, ("mysqldump", *first, *dump, *args, "--", name), env, path)
    if kind == "postgresql":
        args, env = _pg_connection(database)
        # --no-owner: restorable by whichever role restores it (another server, a scratch copy).
        return DumpPlan(kind, ("pg_dump", "--no-owner", *args), env, path)
    return DumpPlan(kind, (python, "-I", "-c", _SQLITE_DUMP, _sqlite_path(database)), {}, path)


def restore_argv(plan_kind: str, database: dict[str, Any]) -> tuple[tuple[str, ...], dict[str, str]]:
    """The command that loads an uncompressed dump (its stdin) into ``database``, and its env.

    The target should be empty. PostgreSQL restores in one transaction and stops at the
    first error, so a failed restore leaves nothing half-loaded.
    """
    if plan_kind == "mysql":
        first, args, env, name = _mysql_connection(database)
        return ("mysql", *first, "--batch", *args, "--", name), env
    if plan_kind == "postgresql":
        args, env = _pg_connection(database)
        return ("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction", *args), env
    if plan_kind == "sqlite":
        return (sys.executable, "-I", "-c", _SQLITE_LOAD, _sqlite_path(database)), {}
    raise BackupError(f"cannot restore a backup of kind {plan_kind!r}: expected one of {', '.join(KINDS)}")


def _environment(extra: dict[str, str], user: str | None, tool: str) -> dict[str, str]:
    """Ours plus ``extra``; when ``runner.spawn`` will drop to ``user`` (we are root), that user's HOME too.

    HOME makes the tools read that user's ~/.my.cnf / ~/.pgpass, not root's.
    """
    env = {**os.environ, **extra}
    try:
        if user and runner.credentials(user):
            env.update(runner.user_env(user))
    except KeyError:
        raise BackupError(f"cannot run {tool} as {user!r}: no such user") from None
    return env


def _start(argv: tuple[str, ...], env: dict[str, str], user: str | None, **popen: Any) -> subprocess.Popen:
    """The project's one runner (``runner.spawn``): as ``user``, dying with the listener, in its own session.

    Its own session: one process group for ``_kill``, children included. From ``/``, never the caller's
    folder (the SQLite scripts' Python runs with ``-I`` too: nothing is imported from where it stands).
    OSError when it cannot start.
    """
    return runner.spawn(argv, user=user or "", env=env, cwd="/", start_new_session=True, **popen)


_SETTINGS_SCRIPT = (
    "import json; from django.conf import settings; print(json.dumps(settings.DATABASES['default'], default=str))"
)


def django_database(python: str, checkout: str, env: dict[str, str], user: str, timeout: float = 120) -> dict[str, Any]:
    """``settings.DATABASES["default"]`` of the app in ``checkout``, asked of Django itself (as the app's user)."""
    argv = (python, "manage.py", "shell", "-c", _SETTINGS_SCRIPT)
    try:
        env = {**env, **(runner.user_env(user) if user else {})}  # the user's dotfiles, as for the dump
        done = runner.capture(argv, cwd=checkout, env=env, user=user, timeout=timeout)
    except KeyError:
        raise BackupError(f"cannot read the Django database settings as {user!r}: no such user") from None
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BackupError(f"cannot read the Django database settings: {exc}") from None
    if done.returncode != 0:
        raise BackupError(f"cannot read the Django database settings: {done.stderr.strip()[-800:]}")
    for line in reversed(done.stdout.splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue
    raise BackupError(f"no database settings in the output of {' '.join(argv[:3])}")


def _tail(stream: Any) -> str:
    """The end of the dump tool's stderr, on one line."""
    stream.seek(0, os.SEEK_END)
    stream.seek(max(0, stream.tell() - 4 * _STDERR_TAIL))
    text = stream.read().decode("utf-8", "replace")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(lines)[-_STDERR_TAIL:]


def _gzip_into(source: Any, tmp: str, inner_name: str) -> tuple[int, int]:
    """Copy ``source`` through gzip into ``tmp`` and fsync it; the bytes read and the bytes written.

    ``tmp`` is opened as root opens its state (``state.open_file``): a symlink or FIFO planted there
    is refused (UnsafePath), never followed. Truncated only after that check (O_TRUNC at the open
    would empty a file hard-linked there before the link count is seen).
    """
    total = 0
    fd = state.open_file(tmp, os.O_WRONLY | os.O_CREAT, 0o640)
    with os.fdopen(fd, "wb") as raw:
        os.ftruncate(fd, 0)
        with gzip.GzipFile(filename=inner_name, mode="wb", fileobj=raw, compresslevel=6) as packed:
            while chunk := source.read(1 << 16):
                packed.write(chunk)
                total += len(chunk)
        raw.flush()
        os.fsync(raw.fileno())
        return total, os.fstat(fd).st_size


def _fsync_dir(directory: str) -> None:
    """fsync the folder, so the rename in it lasts.

    A configured backup_dir may be a symlink to a private folder (check_private_dir checks both): it is
    resolved first, then opened with O_NOFOLLOW|O_DIRECTORY, so nothing swapped in meanwhile is opened.
    """
    fd = os.open(os.path.realpath(directory), os.O_RDONLY | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _deadline(proc: subprocess.Popen, timeout: float) -> Iterator[threading.Event]:
    """Kill ``proc`` (and what it started) after ``timeout`` seconds; the event says it happened."""
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        _kill(proc)

    timer = threading.Timer(timeout, expire)
    timer.daemon = True
    timer.start()
    try:
        yield expired
    finally:
        timer.cancel()


def _kill(proc: subprocess.Popen) -> None:
    """Kill the dump and anything it started (its own session) unless it has already ended."""
    if proc.returncode is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def run_dump(
    plan: DumpPlan,
    *,
    user: str | None = None,
    timeout: float = 600,
    log: Callable[[str], None] = lambda s: None,
) -> str:
    """Run ``plan`` and leave its gzipped output at ``plan.path``; return that path.

    The output goes to ``<path>.tmp`` first and is renamed only after the tool exited 0, so
    a failed, killed or timed-out dump never leaves a file that looks complete.
    ``user`` (honoured when we are root) runs the tool as the app's user.
    """
    tool = os.path.basename(plan.argv[0])
    directory = os.path.dirname(plan.path) or "."
    try:
        os.makedirs(directory, mode=0o750, exist_ok=True)
    except OSError as exc:
        raise BackupError(f"cannot create the backup directory {directory}: {exc.strerror}") from None
    tmp = plan.path + ".tmp"
    env = _environment(plan.env, user, tool)
    started = time.monotonic()
    with tempfile.TemporaryFile() as errors:
        try:
            proc = _start(plan.argv, env, user, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors)
        except OSError as exc:
            raise BackupError(f"cannot run {tool}: {exc}") from exc
        with _deadline(proc, timeout) as expired:
            try:
                size, written = _gzip_into(proc.stdout, tmp, os.path.basename(plan.path)[: -len(".gz")])
                status = proc.wait()
            except BaseException as exc:
                _kill(proc)
                proc.wait()
                _remove(tmp)  # a planted symlink goes too (unlinked, never followed)
                if isinstance(exc, state.UnsafePath):
                    raise BackupError(f"cannot write the backup: {exc}") from None
                if isinstance(exc, OSError):
                    raise BackupError(f"cannot write {tmp}: {exc}") from exc
                raise
            finally:
                proc.stdout.close()  # type: ignore[union-attr]
        said = _tail(errors)
    if status != 0 or size == 0:
        _remove(tmp)
        if expired.is_set():
            problem = f"{tool} did not finish within {timeout:g} s and was killed"
        elif status != 0:
            problem = f"{tool} failed with exit status {status}"
        else:
            problem = f"{tool} exited 0 but wrote nothing"
        raise BackupError(f"{problem}: {said}" if said else problem)
    try:
        os.replace(tmp, plan.path)
        _fsync_dir(directory)
    except OSError as exc:
        _remove(tmp)
        raise BackupError(f"cannot keep the backup {plan.path}: {exc}") from None
    if said:
        log(f"backup: {tool} said: {said}")
    log(f"backup: {plan.path} ({written} bytes, {time.monotonic() - started:.1f} s)")
    return plan.path


def prune(backup_dir: str, app: str, keep: int) -> list[str]:
    """Delete all but the newest ``keep`` backups of ``app``; return the deleted paths.

    Only the backups list_backups() finds for this very app are candidates (``shop`` never
    touches ``shop-api``'s backups nor ``*.tmp`` of a dump in progress). ``keep`` is at
    least 1: the backup just taken must survive the prune that follows it.
    """
    if keep < 1:
        raise ValueError(f"keep must be at least 1, got {keep}")
    deleted = []
    for entry in list_backups(backup_dir, app)[keep:]:
        _remove(entry["path"])
        _remove(verified_path(entry["path"]))
        deleted.append(entry["path"])
    return deleted


# -- verify: the backup restores, and holds what the source held ----------------------------
#
# What is compared, and why that is honest. The dump is a consistent snapshot (InnoDB
# --single-transaction, pg_dump's own snapshot, SQLite's read transaction), but the live app
# keeps writing while and after it is taken, and mysqldump's snapshot cannot be shared with
# another session. Row counts read from the live database after the dump would differ for
# every table the app writes to, and a "tolerance" would hide real losses. So:
#
# 1. rows: the dump's own row count per table, counted from the dump file itself (mysqldump's
#    INSERT tuples, pg_dump's COPY lines, SQLite's INSERT statements): that is what the
#    source held at the dump's snapshot. The scratch copy must hold exactly as many, per table.
# 2. tables: the source's list of tables must equal the scratch copy's. The schema does not
#    move between the dump and the check (only migrate changes it, and migrate runs after).
# 3. the dump must end with its tool's end-of-dump marker (a truncated file has none).
# 4. drift: the source's counts now, read in one read-only snapshot transaction, minus the
#    dump's. Reported, never a failure: it is what the app wrote since the dump.

VERIFY_INFIX = "_bgverify_"
_COMPLETE = {
    "mysql": b"-- Dump completed",
    "postgresql": b"-- PostgreSQL database dump complete",
}
_MYSQL_INSERT = re.compile(rb"^INSERT INTO `((?:[^`]|``)+)` VALUES\s")
_MYSQL_TOKENS = re.compile(rb"'(?:[^'\\]|\\.|'')*'|[()]", re.DOTALL)
_PG_IDENT = rb'(?:"(?:[^"]|"")*"|[^\s."(]+)'
_PG_COPY = re.compile(rb"^COPY (" + _PG_IDENT + rb")\.(" + _PG_IDENT + rb") .*FROM stdin;$")
_SQLITE_INSERT = re.compile(r'^INSERT INTO "((?:[^"]|"")+)" VALUES\(')

# Every base table of the current database with its row count, in one consistent snapshot.
# One statement built from the catalog (no round trips): "name<TAB>count" lines.
_MYSQL_COUNT = """\
SET SESSION group_concat_max_len = 4294967295;
SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ;
START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY;
SELECT COALESCE(GROUP_CONCAT(CONCAT('SELECT ', QUOTE(table_name), ', COUNT(*) FROM `',
    REPLACE(table_name, '`', '``'), '`') ORDER BY table_name SEPARATOR ' UNION ALL '),
    'SELECT 1, 1 FROM DUAL WHERE FALSE') INTO @bluegreen_counts
  FROM information_schema.tables WHERE table_schema = DATABASE() AND table_type = 'BASE TABLE';
PREPARE bluegreen_counts FROM @bluegreen_counts;
EXECUTE bluegreen_counts;
DEALLOCATE PREPARE bluegreen_counts;
COMMIT;
"""
# Ordinary tables (not partitioned parents, whose rows pg_dump writes under each partition) that
# are not an extension's, "schema.table<TAB>count" lines.
_PG_COUNT = r"""
BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;
SELECT n.nspname || '.' || c.relname,
       (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', n.nspname, c.relname),
                                            false, true, '')))[1]::text
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind = 'r' AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\_%'
   AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                   AND d.deptype = 'e')
 ORDER BY 1;
COMMIT;
"""
_SQLITE_COUNT = (
    """\
import json, sqlite3, sys, urllib.parse
db = sqlite3.connect("file:" + urllib.parse.quote(sys.argv[1]) + "?mode=ro", uri=True)
db.execute("BEGIN")
"""
    + _SQLITE_COUNTS
)


class VerifyError(BackupError):
    """The backup could not be checked at all (no scratch database, a tool missing, a timeout).

    A dump that fails to restore, or restores other than it should, is not an error: it is a
    VerifyResult with ``ok`` False.
    """


class RestoreError(BackupError):
    """A restore into the live database was refused or failed; the message says what was left as it was."""


@dataclass(frozen=True)
class Command:
    """One client invocation: ``argv`` with ``env`` added to ours; ``stdin`` is fed first (then the dump, if any)."""

    argv: tuple[str, ...]
    env: dict[str, str]
    stdin: str = ""


@dataclass(frozen=True)
class VerifyPlan:
    """Everything a verify runs, decided up front: create, restore (the dump on stdin), count, drop."""

    kind: str
    backup: str
    scratch: str  # the scratch database's name (SQLite: ":memory:", it is never a file)
    create: Command | None  # None: the restore creates it (SQLite)
    restore: Command
    count_scratch: Command | None  # None: the restore printed the counts (SQLite: the copy lives in its memory)
    count_source: Command
    drop: Command | None  # None: nothing to drop (SQLite)


@dataclass
class VerifyResult:
    """The outcome of one verify, JSON-ready for the job history (``as_dict``)."""

    backup: str
    kind: str
    scratch: str
    ok: bool
    tables: int  # tables in the restored copy
    rows: int  # rows in the restored copy, all tables
    seconds: float
    mismatches: list[str]
    drift: dict[str, int]  # per table: live rows now minus rows in the dump (writes since the dump)
    verified_at: float

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def summary(self) -> str:
        head = f"verify: {os.path.basename(self.backup)} restored into scratch {self.scratch}: "
        if self.ok:
            text = head + f"OK, {self.tables} tables, {self.rows} rows, same as the dump ({self.seconds:.1f} s)"
            moved = sum(abs(v) for v in self.drift.values())
            return text + (f"; {moved} rows written to the live database since the dump" if moved else "")
        return head + f"FAILED ({self.seconds:.1f} s): " + "; ".join(self.mismatches)


def scratch_name(name: str, token: str, limit: int = 63) -> str:
    """``<name>_bgverify_<token>``, the name cut so that it fits MySQL's and PostgreSQL's identifier limits."""
    if not re.fullmatch(r"[0-9a-z]{1,16}", token):
        raise ValueError(f"scratch token must be 1-16 lowercase letters or digits, got {token!r}")
    room = limit - len(VERIFY_INFIX) - len(token)
    base = name.encode("utf-8")[:room].decode("utf-8", "ignore") or "bluegreen"
    return f"{base}{VERIFY_INFIX}{token}"


def _mysql_quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _pg_quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _with_name(kind: str, database: dict[str, Any], name: str) -> dict[str, Any]:
    """``database`` pointing at ``name`` instead: same server, same credentials."""
    options = dict(database.get("OPTIONS") or {})
    if kind == "mysql":
        for key in ("database", "db"):
            options.pop(key, None)
    return {**database, "NAME": name, "OPTIONS": options}


def _source_name(kind: str, database: dict[str, Any]) -> str:
    if kind == "mysql":
        return _mysql_connection(database)[3]
    if kind == "postgresql":
        return _text(database.get("NAME"))
    return os.path.basename(_sqlite_path(database))


def plan_verify(database: dict[str, Any], backup: str, token: str, python: str = sys.executable) -> VerifyPlan:
    """How to restore ``backup`` into a scratch database beside ``database`` and count both (pure).

    MySQL/MariaDB: ``CREATE DATABASE <name>_bgverify_<token>`` on the same server with the same
    credentials (the app's user needs CREATE and DROP on ``<name>\\_bgverify\\_%``, as Django's test
    runner needs them on ``test_<name>``). PostgreSQL: the same through psql connected to the source
    database (the role needs CREATEDB). SQLite: a database in the memory of the process that loads the
    dump and prints its counts, never a file others could open. ``python`` runs the SQLite scripts.
    """
    kind = kind_of(_text(database.get("ENGINE")))
    if kind == "sqlite":
        source = _sqlite_path(database)
        load = Command((python, "-I", "-c", _SQLITE_LOAD), {})
        return VerifyPlan(
            kind, backup, ":memory:", None, load, None, Command((python, "-I", "-c", _SQLITE_COUNT, source), {}), None
        )
    scratch = scratch_name(_source_name(kind, database) or "bluegreen", token)
    target = _with_name(kind, database, scratch)
    restore, restore_env = restore_argv(kind, target)
    if kind == "mysql":
        first, args, env, _ = _mysql_connection(database)
        server = ("mysql", *first, "--batch", *args)

        def count(db: dict[str, Any]) -> Command:
            f, a, e, n = _mysql_connection(db)
            return Command(("mysql", *f, "--batch", "--skip-column-names", *a, "--", n), e, _MYSQL_COUNT)

        return VerifyPlan(
            kind,
            backup,
            scratch,
            Command((*server, "-e", f"CREATE DATABASE {_mysql_quote(scratch)}"), env),
            Command(restore, restore_env),
            count(target),
            count(database),
            Command((*server, "-e", f"DROP DATABASE IF EXISTS {_mysql_quote(scratch)}"), env),
        )
    args, env = _pg_connection(database)
    psql = ("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1")

    def pg_count(db: dict[str, Any]) -> Command:
        a, e = _pg_connection(db)
        return Command((*psql, "-A", "-t", "-F", "\t", *a), e, _PG_COUNT)

    return VerifyPlan(
        kind,
        backup,
        scratch,
        Command((*psql, "-c", f"CREATE DATABASE {_pg_quote(scratch)}", *args), env),
        Command(restore, restore_env),
        pg_count(target),
        pg_count(database),
        Command((*psql, "-c", f"DROP DATABASE IF EXISTS {_pg_quote(scratch)}", *args), env),
    )


@dataclass
class DumpContents:
    """What a dump file holds: rows per table (tables with data only), and whether it is complete."""

    rows: dict[str, int]
    complete: bool


def _mysql_tuples(values: bytes) -> int:
    """The number of ``(...)`` row tuples in the VALUES part of a mysqldump INSERT line."""
    depth = rows = 0
    for match in _MYSQL_TOKENS.finditer(values):
        token = match.group()
        if token == b"(":
            if depth == 0:
                rows += 1
            depth += 1
        elif token == b")":
            depth -= 1
    return rows


def _pg_unquote(ident: bytes) -> str:
    text = ident.decode("utf-8", "surrogateescape")
    return text[1:-1].replace('""', '"') if text.startswith('"') else text


def dump_contents(kind: str, lines: Any) -> DumpContents:
    """Count the rows per table in a dump, from an iterable of its lines (bytes, with their newline)."""
    rows: dict[str, int] = {}
    complete = False
    if kind == "mysql":
        # One INSERT per line, or (MariaDB 10.11+) "INSERT ... VALUES" then one row per line until ";".
        # Strings never hold a raw newline (mysqldump writes \n), so every line holds whole rows.
        inside = None
        for line in lines:
            if inside is not None:
                rows[inside] += _mysql_tuples(line)
            else:
                match = _MYSQL_INSERT.match(line)
                if match:
                    inside = match.group(1).decode("utf-8", "surrogateescape").replace("``", "`")
                    rows[inside] = rows.get(inside, 0) + _mysql_tuples(line[match.end() :])
                elif line.startswith(_COMPLETE[kind]):
                    complete = True
                    continue
            if inside is not None and line.rstrip().endswith(b";"):
                inside = None
        return DumpContents(rows, complete)
    if kind == "postgresql":
        table = None
        for line in lines:
            if table is not None:
                if line in (b"\\.\n", b"\\.\r\n", b"\\."):
                    table = None
                else:
                    rows[table] += 1
                continue
            match = _PG_COPY.match(line.rstrip(b"\r\n"))
            if match:
                table = f"{_pg_unquote(match.group(1))}.{_pg_unquote(match.group(2))}"
                rows.setdefault(table, 0)
            elif line.startswith(_COMPLETE[kind]):
                complete = True
        return DumpContents(rows, complete)
    if kind == "sqlite":
        import sqlite3

        statement = ""
        last = ""
        for line in lines:
            statement += line.decode("utf-8", "surrogateescape")
            if not sqlite3.complete_statement(statement):
                continue
            match = _SQLITE_INSERT.match(statement)
            if match and not match.group(1).startswith("sqlite_"):  # internal tables, as the count skips them
                name = match.group(1).replace('""', '"')
                rows[name] = rows.get(name, 0) + 1
            last, statement = statement.strip(), ""
        return DumpContents(rows, last == "COMMIT;" and not statement.strip())
    raise BackupError(f"cannot read a dump of kind {kind!r}: expected one of {', '.join(KINDS)}")


def compare(
    source: dict[str, int] | None, restored: dict[str, int], dumped: DumpContents
) -> tuple[list[str], dict[str, int]]:
    """Mismatches (empty: verified) and drift, from the three views of the data (see the note above).

    ``source`` None: the restored copy is compared with the dump only (a restore of an old backup,
    whose tables the live database no longer has to match).
    """
    problems = []
    if source is None:
        source = dict(restored)
    if not dumped.complete:
        problems.append("the dump has no end-of-dump marker: it is truncated or was not written to the end")
    for name in sorted(set(source) - set(restored)):
        problems.append(f"table {name} is in the source database but not in the restored copy")
    for name in sorted(set(restored) - set(source)):
        problems.append(f"table {name} is in the restored copy but not in the source database")
    for name in sorted(set(dumped.rows) - set(restored)):
        problems.append(f"table {name}: the dump holds {dumped.rows[name]} rows but the table was not restored")
    for name in sorted(restored):
        want = dumped.rows.get(name, 0)
        if restored[name] != want:
            problems.append(f"table {name}: the dump holds {want} rows, the restored copy {restored[name]}")
    drift = {n: source[n] - dumped.rows.get(n, 0) for n in sorted(set(source) & set(restored))}
    return problems, {n: d for n, d in drift.items() if d}


def parse_counts(kind: str, output: str) -> dict[str, int]:
    """The output of a count command: ``name<TAB>count`` lines (SQLite: a JSON object)."""
    if kind == "sqlite":
        return {str(k): int(v) for k, v in json.loads(output.strip().splitlines()[-1]).items()}
    counts = {}
    for line in output.splitlines():
        if not line.strip():
            continue
        name, _, count = line.rpartition("\t")
        if kind == "mysql":  # --batch escapes these in names
            name = name.replace("\\t", "\t").replace("\\n", "\n").replace("\\\\", "\\")
        counts[name] = int(count)
    return counts


def _open_dump(path: str) -> Any:
    """The backup, uncompressed, opened without following a symlink (root reads what the app user may write)."""
    try:
        fd = state.open_file(path, os.O_RDONLY)  # no symlink, no FIFO (O_NONBLOCK: never waits for a writer)
    except state.UnsafePath as exc:
        raise VerifyError(str(exc)) from None
    except OSError as exc:
        raise VerifyError(f"cannot open {path}: {exc.strerror}") from None
    return gzip.GzipFile(fileobj=os.fdopen(fd, "rb"), mode="rb")


def run_command(
    command: Command,
    *,
    dump: str | None = None,
    user: str | None = None,
    timeout: float = 600,
) -> tuple[int, str, str]:
    """Run one client command, feeding ``command.stdin`` and then the uncompressed ``dump``; (status, out, err).

    Killed with its process group after ``timeout`` seconds (then VerifyError). A tool that is
    missing is a VerifyError too; a non-zero status is for the caller to judge.
    """
    tool = os.path.basename(command.argv[0])
    env = _environment(command.env, user, tool)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as errors:
        try:
            proc = _start(command.argv, env, user, stdin=subprocess.PIPE, stdout=out, stderr=errors)
        except OSError as exc:
            raise VerifyError(f"cannot run {tool}: {exc}") from exc
        with _deadline(proc, timeout) as expired:
            try:
                try:
                    proc.stdin.write(command.stdin.encode("utf-8"))  # type: ignore[union-attr]
                    if dump is not None:
                        with _open_dump(dump) as source:
                            while chunk := source.read(1 << 16):
                                proc.stdin.write(chunk)  # type: ignore[union-attr]
                except BrokenPipeError:
                    pass  # the tool stopped reading: its status and stderr say why
                except (OSError, EOFError) as exc:  # a corrupt gzip stream: the tool gets a cut-off input
                    _kill(proc)
                    proc.wait()
                    return 1, "", f"cannot read {dump}: {exc}"
                finally:
                    try:
                        proc.stdin.close()  # type: ignore[union-attr]
                    except BrokenPipeError:
                        pass
                status = proc.wait()
            except BaseException:
                _kill(proc)
                proc.wait()
                raise
        if expired.is_set():
            raise VerifyError(f"{tool} did not finish within {timeout:g} s and was killed")
        out.seek(0)
        return status, out.read().decode("utf-8", "replace"), _tail(errors)


def _checked(command: Command, what: str, **kwargs: Any) -> str:
    status, out, err = run_command(command, **kwargs)
    if status != 0:
        raise VerifyError(f"{what}: {os.path.basename(command.argv[0])} exited {status}: {err}")
    return out


def _read_contents(kind: str, path: str) -> DumpContents:
    """The dump's own row counts; a cut-off or corrupt gzip stream reads as an incomplete dump."""
    broken = []

    def lines(f: Any) -> Any:
        try:
            yield from f
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            broken.append(exc)

    with _open_dump(path) as f:
        contents = dump_contents(kind, lines(f))
    return DumpContents(contents.rows, complete=False) if broken else contents


def _record(result: VerifyResult) -> None:
    """Write ``<backup>.verified.json`` as root writes its state (``state.write_json_atomic``).

    A temp file made with O_EXCL|O_NOFOLLOW, 0640, fsynced, renamed over whatever entry is there (never followed).
    """
    state.write_json_atomic(verified_path(result.backup), result.as_dict())


def run_verify(
    plan: VerifyPlan,
    *,
    user: str | None = None,
    timeout: float = 600,
    log: Callable[[str], None] = lambda s: None,
    record: bool = True,
    against_source: bool = True,
) -> VerifyResult:
    """Restore ``plan.backup`` into its scratch database, count, compare, and drop the scratch database.

    The scratch database is dropped in every case (failure, timeout, Ctrl-C). ``record`` writes the
    result next to the backup (``<backup>.verified.json``), which ``backups`` shows.
    ``timeout`` bounds each command. Raises VerifyError when the check could not be made at all.
    ``against_source`` False skips the source's tables and counts (a restore of an older backup).
    """
    started = time.monotonic()
    # The dump's own counts are read beside the restore (both read the file; neither waits for the other).
    parsed: list[DumpContents | BaseException] = []

    def parse() -> None:
        try:
            parsed.append(_read_contents(plan.kind, plan.backup))
        except BaseException as exc:  # noqa: BLE001 (handed to the caller below)
            parsed.append(exc)

    reader = threading.Thread(target=parse, name="bluegreen-verify-parse", daemon=True)
    reader.start()

    def contents() -> DumpContents:
        reader.join()
        if isinstance(parsed[0], BaseException):
            raise parsed[0]
        return parsed[0]

    source = None
    if against_source:
        out = _checked(plan.count_source, "cannot count the source", user=user, timeout=timeout)
        source = parse_counts(plan.kind, out)
    created = False
    try:
        if plan.create is not None:
            _checked(plan.create, f"cannot create the scratch database {plan.scratch}", user=user, timeout=timeout)
        created = True
        status, loaded, err = run_command(plan.restore, dump=plan.backup, user=user, timeout=timeout)
        if status != 0:
            mismatches = [f"the restore failed ({os.path.basename(plan.restore.argv[0])} exited {status}): {err}"]
            if not contents().complete:
                mismatches.insert(0, "the dump has no end-of-dump marker: it is truncated or not written to the end")
            restored: dict[str, int] = {}
            drift: dict[str, int] = {}
        else:
            if plan.count_scratch is not None:
                loaded = _checked(plan.count_scratch, "cannot count the restored copy", user=user, timeout=timeout)
            restored = parse_counts(plan.kind, loaded)
            mismatches, drift = compare(source, restored, contents())
    finally:
        reader.join()
        if plan.drop is not None and created:
            status, _, err = run_command(plan.drop, user=user, timeout=timeout)
            if status != 0:
                log(f"verify: could not drop the scratch database {plan.scratch}: {err}")
    result = VerifyResult(
        backup=plan.backup,
        kind=plan.kind,
        scratch=plan.scratch,
        ok=not mismatches,
        tables=len(restored),
        rows=sum(restored.values()),
        seconds=round(time.monotonic() - started, 3),
        mismatches=mismatches,
        drift=drift,
        verified_at=time.time(),
    )
    if record:
        _record(result)
    log(result.summary())
    return result


def verify(
    database: dict[str, Any],
    backup: str,
    *,
    python: str = sys.executable,
    user: str | None = None,
    timeout: float = 600,
    log: Callable[[str], None] = lambda s: None,
) -> VerifyResult:
    """plan_verify + run_verify with a fresh random scratch name: what a deploy calls after run_dump."""
    import secrets

    return run_verify(plan_verify(database, backup, secrets.token_hex(4), python), user=user, timeout=timeout, log=log)


# -- restore into the live database ---------------------------------------------------------------
# The live database is emptied and loaded from the dump in one client session, so that it ends up
# holding exactly the backup (tables created by later migrations would otherwise survive and break
# the next migrate). PostgreSQL does both in one transaction: a dump that fails half-way leaves the
# database as it was. MySQL/MariaDB DDL is not transactional: that is why restore verifies the dump
# in a scratch database first and takes a fresh backup before it touches the live one.

_MYSQL_CLEAR = """\
SET FOREIGN_KEY_CHECKS = 0;
SET SESSION group_concat_max_len = 4294967295;
SELECT COALESCE(CONCAT('DROP VIEW IF EXISTS ', GROUP_CONCAT(CONCAT('`', REPLACE(table_name, '`', '``'), '`'))),
    'DO 0') INTO @bluegreen_drop FROM information_schema.tables
  WHERE table_schema = DATABASE() AND table_type = 'VIEW';
PREPARE bluegreen_drop FROM @bluegreen_drop;
EXECUTE bluegreen_drop;
DEALLOCATE PREPARE bluegreen_drop;
SELECT COALESCE(CONCAT('DROP TABLE IF EXISTS ', GROUP_CONCAT(CONCAT('`', REPLACE(table_name, '`', '``'), '`'))),
    'DO 0') INTO @bluegreen_drop FROM information_schema.tables
  WHERE table_schema = DATABASE() AND table_type <> 'VIEW';
PREPARE bluegreen_drop FROM @bluegreen_drop;
EXECUTE bluegreen_drop;
DEALLOCATE PREPARE bluegreen_drop;
"""
# Everything of the database's own schemas that the dump recreates: other schemas whole, and in
# public the relations, routines and types, in that order. Extension members and the parts of other
# objects (owned sequences, a range type's constructors) stay: they go with their owner, not on their own.
_PG_CLEAR = r"""
DO $bluegreen$
DECLARE r record;
BEGIN
  FOR r IN
    SELECT o.kind, o.name FROM (
      SELECT 1 AS pass, 'pg_namespace'::regclass AS classid, n.oid AS objid, 'SCHEMA' AS kind,
             format('%I', n.nspname) AS name
        FROM pg_namespace n
       WHERE n.nspname NOT IN ('public', 'information_schema') AND n.nspname NOT LIKE 'pg\_%'
      UNION ALL
      SELECT 2, 'pg_class'::regclass, c.oid, CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
             WHEN 'S' THEN 'SEQUENCE' WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END,
             format('%I.%I', n.nspname, c.relname)
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
       WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
      UNION ALL
      SELECT 3, 'pg_proc'::regclass, p.oid, 'ROUTINE',
             format('%I.%I(%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid))
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
       WHERE n.nspname = 'public' AND p.prokind IN ('f', 'p')
      UNION ALL
      SELECT 4, 'pg_type'::regclass, t.oid, CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END,
             format('%I.%I', n.nspname, t.typname)
        FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
       WHERE n.nspname = 'public' AND t.typtype IN ('e', 'd', 'r')
    ) o
    WHERE NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = o.classid AND d.objid = o.objid
                      AND d.deptype IN ('e', 'a', 'i'))
    ORDER BY o.pass
  LOOP
    EXECUTE format('DROP %s IF EXISTS %s CASCADE', r.kind, r.name);
  END LOOP;
END
$bluegreen$;
"""


@dataclass(frozen=True)
class RestorePlan:
    """A restore into the live database: ``load`` reads the dump on stdin (SQLite: into memory, then copies it)."""

    kind: str
    backup: str
    load: Command


def plan_restore(database: dict[str, Any], backup: str, python: str = sys.executable) -> RestorePlan:
    """How to replace the contents of ``database`` with ``backup`` (pure: argv and env, passwords in env)."""
    kind = kind_of(_text(database.get("ENGINE")))
    argv, env = restore_argv(kind, database)
    if kind == "mysql":
        return RestorePlan(kind, backup, Command(argv, env, _MYSQL_CLEAR))
    if kind == "postgresql":
        return RestorePlan(kind, backup, Command(argv, env, _PG_CLEAR))
    return RestorePlan(kind, backup, Command((python, *argv[1:]), env))


def run_restore(
    plan: RestorePlan, *, user: str | None = None, timeout: float = 3600, log: Callable[[str], None] = lambda s: None
) -> float:
    """Load ``plan.backup`` into the live database; the seconds it took. RestoreError says what happened."""
    started = time.monotonic()
    tool = os.path.basename(plan.load.argv[0])
    try:
        status, _, err = run_command(plan.load, dump=plan.backup, user=user, timeout=timeout)
        if status != 0:
            left = {
                "postgresql": "the live database is unchanged (one transaction)",
                "mysql": "the live database may be partly restored: load the fresh backup",
                "sqlite": "the live database is unchanged",
            }[plan.kind]
            raise RestoreError(f"{tool} exited {status}: {err}; {left}")
    except VerifyError as exc:
        raise RestoreError(str(exc)) from None
    seconds = time.monotonic() - started
    log(f"restore: {plan.backup} loaded into the live database ({seconds:.1f} s)")
    return seconds

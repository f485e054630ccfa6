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
"""

from __future__ import annotations

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
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable

from . import steps

KINDS = ("mysql", "postgresql", "sqlite")
SUFFIXES = {"mysql": ".sql.gz", "postgresql": ".sql.gz", "sqlite": ".sqlite.sql.gz"}
# <app>-<YYYYmmdd>-<HHMMSS>-<commit>.sql.gz: the app part is matched literally by prune().
_NAME_TAIL = re.compile(r"-(\d{8}-\d{6})-([0-9A-Za-z_]+)\.(?:sqlite\.)?sql\.gz$")
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
_SQLITE_RESTORE = """\
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.executescript(sys.stdin.buffer.read().decode("utf-8", "surrogateescape"))
db.close()
"""


class BackupError(Exception):
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
    return DumpPlan(kind, (python, "-c", _SQLITE_DUMP, _sqlite_path(database)), {}, path)


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
        return (sys.executable, "-c", _SQLITE_RESTORE, _sqlite_path(database)), {}
    raise BackupError(f"cannot restore a backup of kind {plan_kind!r}: expected one of {', '.join(KINDS)}")


def _run_as(user: str | None, env: dict[str, str]) -> dict[str, Any]:
    """Popen arguments that drop to ``user`` (only possible as root), with its groups and HOME.

    Its groups too, not only its uid: ``user=`` alone would keep root's gid 0. HOME makes the
    tools read that user's ~/.my.cnf / ~/.pgpass, not root's.
    """
    if not user or os.geteuid() != 0:
        return {}
    try:
        env.update(steps.user_env(user))
        return steps.credentials(user)
    except KeyError:
        raise BackupError(f"cannot run the dump as {user!r}: no such user") from None


_SETTINGS_SCRIPT = (
    "import json; from django.conf import settings; print(json.dumps(settings.DATABASES['default'], default=str))"
)


def django_database(python: str, checkout: str, env: dict[str, str], user: str, timeout: float = 120) -> dict[str, Any]:
    """``settings.DATABASES["default"]`` of the app in ``checkout``, asked of Django itself (as the app's user)."""
    argv = (python, "manage.py", "shell", "-c", _SETTINGS_SCRIPT)
    try:
        env = {**env, **(steps.user_env(user) if user else {})}  # the user's dotfiles, as for the dump
        done = steps.capture(argv, cwd=checkout, env=env, user=user, timeout=timeout)
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


def _gzip_into(source: Any, tmp: str, inner_name: str) -> int:
    """Copy ``source`` through gzip into ``tmp`` and fsync it; the number of bytes read."""
    total = 0
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
    with os.fdopen(fd, "wb") as raw:
        with gzip.GzipFile(filename=inner_name, mode="wb", fileobj=raw, compresslevel=6) as packed:
            while chunk := source.read(1 << 16):
                packed.write(chunk)
                total += len(chunk)
        raw.flush()
        os.fsync(raw.fileno())
    return total


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
    env = {**os.environ, **plan.env}
    as_user = _run_as(user, env)
    started = time.monotonic()
    with tempfile.TemporaryFile() as errors:
        try:
            proc = subprocess.Popen(
                plan.argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=errors,
                env=env,
                start_new_session=True,  # one process group to kill, children included
                **as_user,
            )
        except OSError as exc:
            raise BackupError(f"cannot run {tool}: {exc}") from exc
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            _kill(proc)

        timer = threading.Timer(timeout, expire)
        timer.daemon = True
        timer.start()
        try:
            size = _gzip_into(proc.stdout, tmp, os.path.basename(plan.path)[: -len(".gz")])
            status = proc.wait()
        except BaseException as exc:
            _kill(proc)
            proc.wait()
            _remove(tmp)
            if isinstance(exc, OSError):
                raise BackupError(f"cannot write {tmp}: {exc}") from exc
            raise
        finally:
            timer.cancel()
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
    os.replace(tmp, plan.path)
    _fsync_dir(directory)
    if said:
        log(f"backup: {tool} said: {said}")
    log(f"backup: {plan.path} ({os.path.getsize(plan.path)} bytes, {time.monotonic() - started:.1f} s)")
    return plan.path


def prune(backup_dir: str, app: str, keep: int) -> list[str]:
    """Delete all but the newest ``keep`` backups of ``app``; return the deleted paths.

    Only files named by backup_name() for this very app are candidates (``shop`` never
    touches ``shop-api``'s backups nor ``*.tmp`` of a dump in progress). ``keep`` is at
    least 1: the backup just taken must survive the prune that follows it.
    """
    if keep < 1:
        raise ValueError(f"keep must be at least 1, got {keep}")
    try:
        names = os.listdir(backup_dir)
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        match = _NAME_TAIL.search(name)
        if match and name[: match.start()] == app:
            path = os.path.join(backup_dir, name)
            if os.path.isfile(path) and not os.path.islink(path):
                found.append((match.group(1), name, path))
    found.sort(reverse=True)
    deleted = []
    for _, _, path in found[keep:]:
        _remove(path)
        deleted.append(path)
    return deleted

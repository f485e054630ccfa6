"""Backups: pure planning, then real round trips through MariaDB, PostgreSQL and SQLite.

MariaDB (127.0.0.1:3306, root without password) and PostgreSQL (127.0.0.1:5432, trust,
user postgres) must be running: these tests fail, never skip, when they are not.
"""

from __future__ import annotations

import gzip
import os
import pwd
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pymysql
import pytest

from supervisor_bluegreen.backup import (
    BackupError,
    DumpPlan,
    backup_name,
    plan_dump,
    prune,
    restore_argv,
    run_dump,
)

WHEN = datetime(2024, 5, 17, 9, 3, 7)
COMMIT = "0123456789abcdef0123456789abcdef01234567"
TEXT = "héllo wörld ✓ 🚀 ünïcode"
BLOB = bytes(range(256)) + b"\x00'\\\"end"
ROWS = [(1, TEXT, BLOB), (2, "quote ' and \\ backslash", b""), (3, "plain", None)]


def mysql_db(name: str, **extra: object) -> dict:
    return {"ENGINE": "django.db.backends.mysql", "NAME": name, "HOST": "127.0.0.1", "PORT": 3306, "USER": "root",
            "PASSWORD": "", "OPTIONS": {}, **extra}  # fmt: skip


def pg_db(name: str, **extra: object) -> dict:
    return {"ENGINE": "django.db.backends.postgresql", "NAME": name, "HOST": "127.0.0.1", "PORT": "5432",
            "USER": "postgres", "PASSWORD": "", "OPTIONS": {}, **extra}  # fmt: skip


def restore(kind: str, backup: str, database: dict) -> None:
    """Load a .gz backup into ``database`` the documented way: gunzip | restore_argv."""
    argv, env = restore_argv(kind, database)
    with gzip.open(backup, "rb") as f:
        dump = f.read()
    done = subprocess.run(argv, input=dump, capture_output=True, env={**os.environ, **env}, timeout=30)
    assert done.returncode == 0, done.stderr.decode()


# -- pure ---------------------------------------------------------------------------


def test_backup_name() -> None:
    assert backup_name("shop", WHEN, COMMIT, "mysql") == "shop-20240517-090307-0123456.sql.gz"
    assert backup_name("shop", WHEN, COMMIT, "postgresql") == "shop-20240517-090307-0123456.sql.gz"
    assert backup_name("shop", WHEN, COMMIT, "sqlite") == "shop-20240517-090307-0123456.sqlite.sql.gz"
    assert backup_name("shop", WHEN, "a/b c", "mysql") == "shop-20240517-090307-a_b_c.sql.gz"
    assert backup_name("shop", WHEN, "", "mysql") == "shop-20240517-090307-unknown.sql.gz"
    for bad in ("", "..", "a/b"):
        with pytest.raises(ValueError):
            backup_name(bad, WHEN, COMMIT, "mysql")
    with pytest.raises(ValueError):
        backup_name("shop", WHEN, COMMIT, "oracle")


def test_plan_dump_mysql_keeps_the_password_out_of_argv() -> None:
    plan = plan_dump(mysql_db("shop", PASSWORD="s3cret", PORT=3307), "/b", "shop", COMMIT, WHEN)
    assert plan.kind == "mysql"
    assert plan.path == "/b/shop-20240517-090307-0123456.sql.gz"
    assert plan.argv[0] == "mysqldump"
    for flag in ("--single-transaction", "--routines", "--triggers", "--hex-blob"):
        assert flag in plan.argv
    assert plan.argv[-2:] == ("--", "shop")
    assert ("-h", "127.0.0.1", "-P", "3307", "-u", "root") == plan.argv[6:12]
    assert "s3cret" not in " ".join(plan.argv)
    assert plan.env == {"MYSQL_PWD": "s3cret"}

    defaults = plan_dump(mysql_db("shop", HOST="", PORT="", USER=""), "/b", "shop", COMMIT, WHEN)
    assert ("-h", "127.0.0.1", "-P", "3306") == defaults.argv[6:10] and "-u" not in defaults.argv
    assert defaults.env == {}
    socket = plan_dump(mysql_db("shop", HOST="/run/mysqld/mysqld.sock"), "/b", "shop", COMMIT, WHEN)
    assert ("--socket", "/run/mysqld/mysqld.sock") == socket.argv[6:8] and "-h" not in socket.argv
    options = {"read_default_file": "/etc/app.cnf", "charset": "latin1", "password": "opt"}
    from_file = plan_dump(mysql_db("shop", HOST="", OPTIONS=options), "/b", "shop", COMMIT, WHEN)
    assert from_file.argv[1] == "--defaults-file=/etc/app.cnf"  # mysqldump requires it first
    assert "-h" not in from_file.argv and "--default-character-set=latin1" in from_file.argv
    assert from_file.env == {"MYSQL_PWD": "opt"}
    gis = plan_dump(mysql_db("shop", ENGINE="django.contrib.gis.db.backends.mysql"), "/b", "x", COMMIT, WHEN)
    assert gis.kind == "mysql"


def test_plan_dump_postgresql_keeps_the_password_out_of_argv() -> None:
    plan = plan_dump(pg_db("shop", PASSWORD="s3cret", OPTIONS={"sslmode": "require"}), "/b", "shop", COMMIT, WHEN)
    assert plan.kind == "postgresql"
    assert plan.argv == ("pg_dump", "--no-owner", "-h", "127.0.0.1", "-p", "5432", "-U", "postgres", "--", "shop")
    assert plan.env == {"PGPASSWORD": "s3cret", "PGSSLMODE": "require"}
    bare = plan_dump(pg_db("shop", HOST="", PORT="", USER=""), "/b", "shop", COMMIT, WHEN)
    assert bare.argv == ("pg_dump", "--no-owner", "--", "shop") and bare.env == {}  # libpq defaults: unix socket
    # pg_dump reads a bare dbname containing "=" as a connection string: it is quoted as one.
    odd = plan_dump(pg_db("a=b'c"), "/b", "shop", COMMIT, WHEN)
    assert odd.argv[-2:] == ("-d", "dbname='a=b\\'c'")
    postgis = plan_dump(pg_db("shop", ENGINE="django.contrib.gis.db.backends.postgis"), "/b", "x", COMMIT, WHEN)
    assert postgis.kind == "postgresql"


def test_plan_dump_sqlite(tmp_path: Path) -> None:
    db = {"ENGINE": "django.db.backends.sqlite3", "NAME": tmp_path / "db.sqlite3"}
    plan = plan_dump(db, "/b", "shop", COMMIT, WHEN, python="/srv/shop/venv/bin/python")
    assert plan.kind == "sqlite"
    assert plan.argv[0] == "/srv/shop/venv/bin/python" and plan.argv[1] == "-c"
    assert plan.argv[-1] == str(tmp_path / "db.sqlite3")
    assert plan.path == "/b/shop-20240517-090307-0123456.sqlite.sql.gz"
    for name in ("", ":memory:"):
        with pytest.raises(BackupError, match="expected a file path"):
            plan_dump({**db, "NAME": name}, "/b", "shop", COMMIT, WHEN)


def test_plan_dump_refuses_unknown_engines() -> None:
    db = {"ENGINE": "django.db.backends.oracle", "NAME": "x"}
    with pytest.raises(BackupError, match=r"cannot back up ENGINE 'django.db.backends.oracle': supported are mysql"):
        plan_dump(db, "/b", "shop", COMMIT, WHEN)


def test_prune_keeps_the_newest_of_that_app_only(tmp_path: Path) -> None:
    mine = [
        "shop-20240101-120000-aaaaaaa.sql.gz",
        "shop-20240301-120000-ccccccc.sql.gz",
        "shop-20240201-120000-bbbbbbb.sql.gz",
        "shop-20231231-235959-0000000.sqlite.sql.gz",
    ]
    others = [
        "shop-api-20200101-000000-aaaaaaa.sql.gz",  # another app whose name starts like ours
        "shopping-20200101-000000-aaaaaaa.sql.gz",
        "shop-20200101-000000-aaaaaaa.sql.gz.tmp",  # a dump in progress
        "shop-notes.txt",
        "README",
    ]
    for name in mine + others:
        (tmp_path / name).write_text("x")
    (tmp_path / "shop-20190101-000000-aaaaaaa.sql.gz").mkdir()  # not a file: left alone

    deleted = prune(str(tmp_path), "shop", keep=2)

    assert sorted(deleted) == sorted([str(tmp_path / mine[0]), str(tmp_path / mine[3])])
    left = sorted(os.listdir(tmp_path))
    assert left == sorted([mine[1], mine[2], *others, "shop-20190101-000000-aaaaaaa.sql.gz"])
    assert prune(str(tmp_path), "shop", keep=2) == []
    assert prune(str(tmp_path / "missing"), "shop", keep=2) == []
    with pytest.raises(ValueError):
        prune(str(tmp_path), "shop", keep=0)


# -- MariaDB ------------------------------------------------------------------------


def mysql_root() -> pymysql.connections.Connection:
    try:
        return pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", charset="utf8mb4",
                               autocommit=True, connect_timeout=5)  # fmt: skip
    except pymysql.err.OperationalError as exc:
        pytest.fail(f"MariaDB at 127.0.0.1:3306 (root, empty password) is unreachable: {exc}")


@pytest.fixture
def mysql_scratch() -> Iterator[tuple[pymysql.connections.Connection, list[str]]]:
    """A root connection and a list of scratch databases, all dropped afterwards."""
    conn = mysql_root()
    names: list[str] = []
    try:
        yield conn, names
    finally:
        with conn.cursor() as cur:
            for name in names:
                cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        conn.close()


def test_mysql_round_trip(tmp_path: Path, mysql_scratch: tuple) -> None:
    conn, names = mysql_scratch
    source, target = (f"bg_test_{uuid.uuid4().hex[:10]}_{side}" for side in ("src", "dst"))
    names += [source, target]
    with conn.cursor() as cur:
        for name in names:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        cur.execute(f"CREATE TABLE `{source}`.t (id INT PRIMARY KEY, name VARCHAR(100), data BLOB) ENGINE=InnoDB")
        cur.executemany(f"INSERT INTO `{source}`.t VALUES (%s, %s, %s)", ROWS)
        # Unqualified, as migrations create them: a schema-qualified one would restore into the source.
        cur.execute(f"USE `{source}`")
        cur.execute("CREATE TRIGGER up BEFORE UPDATE ON t FOR EACH ROW SET NEW.name = NEW.name")
        cur.execute("CREATE PROCEDURE answer() SELECT 42")
    logs: list[str] = []
    backups = tmp_path / "backups"

    path = run_dump(plan_dump(mysql_db(source), str(backups), "shop", COMMIT, WHEN), log=logs.append)

    assert path == str(backups / "shop-20240517-090307-0123456.sql.gz")
    assert os.listdir(backups) == [os.path.basename(path)]
    assert os.stat(backups).st_mode & 0o777 == 0o750 & ~current_umask()
    assert logs[-1].startswith(f"backup: {path} (") and logs[-1].endswith(" s)")
    restore("mysql", path, mysql_db(target))
    with conn.cursor() as cur:
        cur.execute(f"SELECT id, name, data FROM `{target}`.t ORDER BY id")
        assert [(i, n, None if d is None else bytes(d)) for i, n, d in cur.fetchall()] == ROWS
        cur.execute("SELECT COUNT(*) FROM information_schema.triggers WHERE trigger_schema = %s", (target,))
        assert cur.fetchone() == (1,)
        cur.execute("SELECT COUNT(*) FROM information_schema.routines WHERE routine_schema = %s", (target,))
        assert cur.fetchone() == (1,)


def test_mysql_failing_dump_leaves_no_file(tmp_path: Path) -> None:
    mysql_root().close()  # the server is up: the failure below is the missing database
    backups = tmp_path / "backups"
    plan = plan_dump(mysql_db(f"bg_test_{uuid.uuid4().hex[:10]}_missing"), str(backups), "shop", COMMIT, WHEN)
    with pytest.raises(BackupError, match=r"mysqldump failed with exit status 2: .*Unknown database") as failed:
        run_dump(plan)
    assert "Got error: 1049" in str(failed.value)
    assert os.listdir(backups) == []


# -- PostgreSQL -----------------------------------------------------------------------


def psql(sql: str, database: str = "postgres") -> str:
    argv = ["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U", "postgres", "-d", database]
    try:
        done = subprocess.run([*argv, "-c", sql], capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        pytest.fail("psql is not installed")
    if done.returncode != 0:
        pytest.fail(f"psql -h 127.0.0.1 -U postgres failed: {done.stderr.strip()}")
    return done.stdout


def test_postgresql_round_trip(tmp_path: Path) -> None:
    psql("SELECT 1")  # fails loudly when PostgreSQL is unreachable
    # "=" in the name: pg_dump and psql would read a bare such dbname as a connection string.
    source, target = (f"bg_test_{uuid.uuid4().hex[:10]}={side}" for side in ("src", "dst"))
    conninfo = f"dbname='{source}'"
    try:
        for name in (source, target):
            psql(f'CREATE DATABASE "{name}"')
        psql("CREATE TABLE t (id INT PRIMARY KEY, name TEXT, data BYTEA)", conninfo)
        for i, name, data in ROWS:
            data_sql = "NULL" if data is None else f"'\\x{data.hex()}'::bytea"
            psql(f"INSERT INTO t VALUES ({i}, $${name}$$, {data_sql})", conninfo)

        path = run_dump(plan_dump(pg_db(source), str(tmp_path), "shop", COMMIT, WHEN))

        assert path.endswith("/shop-20240517-090307-0123456.sql.gz")
        restore("postgresql", path, pg_db(target))
        got = psql("SELECT id, name, COALESCE(encode(data, 'hex'), 'NULL') FROM t ORDER BY id", f"dbname='{target}'")
        expected = "".join(f"{i}|{n}|{'NULL' if d is None else d.hex()}\n" for i, n, d in ROWS)
        assert got == expected
    finally:
        for name in (source, target):
            psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- SQLite, timeouts, users ----------------------------------------------------------------


def test_sqlite_round_trip(tmp_path: Path) -> None:
    source, target = tmp_path / "db.sqlite3", tmp_path / "restored.sqlite3"
    with sqlite3.connect(source) as db:
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, data BLOB)")
        db.executemany("INSERT INTO t VALUES (?, ?, ?)", ROWS)
    db.close()
    sqlite = {"ENGINE": "django.db.backends.sqlite3", "NAME": source}

    path = run_dump(plan_dump(sqlite, str(tmp_path / "backups"), "shop", COMMIT, WHEN))

    assert path.endswith("/shop-20240517-090307-0123456.sqlite.sql.gz")
    restore("sqlite", path, {**sqlite, "NAME": target})
    db = sqlite3.connect(target)
    assert db.execute("SELECT id, name, data FROM t ORDER BY id").fetchall() == ROWS
    db.close()


def test_sqlite_missing_file_fails_without_creating_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.sqlite3"
    plan = plan_dump({"ENGINE": "django.db.backends.sqlite3", "NAME": missing}, str(tmp_path / "b"), "a", "c", WHEN)
    with pytest.raises(BackupError, match="unable to open database file"):
        run_dump(plan)
    assert not missing.exists() and os.listdir(tmp_path / "b") == []


def test_timeout_kills_the_dump_and_leaves_no_file(tmp_path: Path) -> None:
    path = str(tmp_path / "b" / backup_name("shop", WHEN, COMMIT, "sqlite"))
    # The grandchild holds stdout open too: the whole process group has to die.
    script = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(10)']); "
    script += "print('partial', flush=True); time.sleep(10)"
    plan = DumpPlan("sqlite", (sys.executable, "-c", script), {}, path)
    started = time.monotonic()
    with pytest.raises(BackupError, match=r"did not finish within 0.5 s and was killed"):
        run_dump(plan, timeout=0.5)
    assert time.monotonic() - started < 3
    assert os.listdir(tmp_path / "b") == []


def test_missing_tool_and_empty_output_are_errors(tmp_path: Path) -> None:
    path = str(tmp_path / backup_name("shop", WHEN, COMMIT, "mysql"))
    with pytest.raises(BackupError, match="cannot run no-such-dump-tool"):
        run_dump(DumpPlan("mysql", ("no-such-dump-tool",), {}, path))
    with pytest.raises(BackupError, match="exited 0 but wrote nothing"):
        run_dump(DumpPlan("mysql", (sys.executable, "-c", "pass"), {}, path))
    assert os.listdir(tmp_path) == []


def test_dump_runs_as_the_given_user_with_its_env(tmp_path: Path) -> None:
    """As root the tool runs as ``user`` with its own groups and HOME; otherwise as ourselves."""
    # /bin/sh, not our python: a venv under /root is out of nobody's reach.
    argv = ("/bin/sh", "-c", 'echo "$(id -u) $(id -g) $HOME $X"; id -G')
    path = str(tmp_path / "b" / backup_name("shop", WHEN, COMMIT, "sqlite"))
    logs: list[str] = []
    run_dump(DumpPlan("sqlite", argv, {"X": "y"}, path), user="nobody", log=logs.append)
    with gzip.open(path, "rt") as f:
        ids, groups = f.read().splitlines()
    uid, gid, home, x = ids.split()
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        assert (int(uid), int(gid), home) == (nobody.pw_uid, nobody.pw_gid, nobody.pw_dir)
        assert "0" not in groups.split()  # root's groups are dropped too
    else:
        assert int(uid) == os.getuid()
    assert x == "y"
    assert len(logs) == 1


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask

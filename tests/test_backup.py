"""Backups: pure planning, then real round trips through MariaDB, PostgreSQL and SQLite.

MariaDB (127.0.0.1:3306, root without password) and PostgreSQL (127.0.0.1:5432, trust,
user postgres) must be running: these tests fail, never skip, when they are not.
"""

from __future__ import annotations

import gzip
import json
import os
import pwd
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pymysql
import pytest

from supervisor_bluegreen.host import backup as bk
from supervisor_bluegreen.host.backup import (
    BackupError,
    DumpPlan,
    backup_name,
    plan_dump,
    prune,
    restore_argv,
    run_dump,
)
from supervisor_bluegreen.shared.backuplist import list_backups, verified_path

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
    assert plan.argv[:3] == ("/srv/shop/venv/bin/python", "-I", "-c")
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
    victim = tmp_path.parent / f"{tmp_path.name}-victim"
    victim.write_text("root's file\n")
    (tmp_path / "shop-20180101-000000-aaaaaaa.sql.gz").symlink_to(victim)  # planted by the app user: left alone

    deleted = prune(str(tmp_path), "shop", keep=2)

    assert sorted(deleted) == sorted([str(tmp_path / mine[0]), str(tmp_path / mine[3])])
    left = sorted(os.listdir(tmp_path))
    planted = ["shop-20190101-000000-aaaaaaa.sql.gz", "shop-20180101-000000-aaaaaaa.sql.gz"]
    assert left == sorted([mine[1], mine[2], *others, *planted])
    assert victim.read_text() == "root's file\n"
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


@pytest.mark.integration
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


@pytest.mark.integration
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


@pytest.mark.integration
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


@pytest.mark.integration
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


@pytest.mark.integration
def test_sqlite_missing_file_fails_without_creating_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.sqlite3"
    plan = plan_dump({"ENGINE": "django.db.backends.sqlite3", "NAME": missing}, str(tmp_path / "b"), "a", "c", WHEN)
    with pytest.raises(BackupError, match="unable to open database file"):
        run_dump(plan)
    assert not missing.exists() and os.listdir(tmp_path / "b") == []


@pytest.mark.integration
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


@pytest.mark.integration
def test_missing_tool_and_empty_output_are_errors(tmp_path: Path) -> None:
    path = str(tmp_path / backup_name("shop", WHEN, COMMIT, "mysql"))
    with pytest.raises(BackupError, match="cannot run no-such-dump-tool"):
        run_dump(DumpPlan("mysql", ("no-such-dump-tool",), {}, path))
    with pytest.raises(BackupError, match="exited 0 but wrote nothing"):
        run_dump(DumpPlan("mysql", (sys.executable, "-c", "pass"), {}, path))
    assert os.listdir(tmp_path) == []


@pytest.mark.integration
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


# -- verify, list, restore: pure ------------------------------------------------------------------


def test_scratch_name_fits_identifier_limits() -> None:
    assert bk.scratch_name("shop", "0a1b2c3d") == "shop_bgverify_0a1b2c3d"
    long = bk.scratch_name("x" * 100, "0a1b2c3d")
    assert len(long) == 63 and long.endswith("_bgverify_0a1b2c3d")
    assert bk.scratch_name("", "ff") == "bluegreen_bgverify_ff"
    for bad in ("", "ABC", "a;b", "x" * 17):
        with pytest.raises(ValueError):
            bk.scratch_name("shop", bad)


def test_plan_verify_mysql_same_server_same_credentials_password_in_env_only() -> None:
    db = mysql_db("shop", PASSWORD="s3cret", PORT=3307, OPTIONS={"database": "shop"})
    plan = bk.plan_verify(db, "/b/shop.sql.gz", "0a1b2c3d")
    assert plan.kind == "mysql" and plan.scratch == "shop_bgverify_0a1b2c3d"
    every = [plan.create, plan.restore, plan.count_scratch, plan.count_source, plan.drop]
    for command in every:
        assert "s3cret" not in " ".join(command.argv)
        assert command.env == {"MYSQL_PWD": "s3cret"}
        assert ("-h", "127.0.0.1", "-P", "3307", "-u", "root") == tuple(command.argv[command.argv.index("-h") :][:6])
    assert plan.create.argv[-2:] == ("-e", "CREATE DATABASE `shop_bgverify_0a1b2c3d`")
    assert plan.drop.argv[-2:] == ("-e", "DROP DATABASE IF EXISTS `shop_bgverify_0a1b2c3d`")
    assert plan.restore.argv[0] == "mysql" and plan.restore.argv[-2:] == ("--", "shop_bgverify_0a1b2c3d")
    assert plan.count_scratch.argv[-2:] == ("--", "shop_bgverify_0a1b2c3d")
    assert plan.count_source.argv[-2:] == ("--", "shop")  # OPTIONS database is the source, not the scratch
    assert "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY" in plan.count_source.stdin
    assert "--skip-column-names" in plan.count_source.argv
    quoted = bk.plan_verify(mysql_db("we`ird"), "/b/x.sql.gz", "ff")
    assert quoted.create.argv[-1] == "CREATE DATABASE `we``ird_bgverify_ff`"


def test_plan_verify_postgresql_through_the_source_database() -> None:
    plan = bk.plan_verify(pg_db('sh"op', PASSWORD="s3cret"), "/b/x.sql.gz", "ff")
    assert plan.scratch == 'sh"op_bgverify_ff'
    psql = ("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1")
    conn = ("-h", "127.0.0.1", "-p", "5432", "-U", "postgres")
    assert plan.create.argv == (*psql, "-c", 'CREATE DATABASE "sh""op_bgverify_ff"', *conn, "--", 'sh"op')
    assert plan.drop.argv == (*psql, "-c", 'DROP DATABASE IF EXISTS "sh""op_bgverify_ff"', *conn, "--", 'sh"op')
    assert plan.restore.argv[-2:] == ("--", 'sh"op_bgverify_ff') and "--single-transaction" in plan.restore.argv
    assert plan.count_scratch.argv[-2:] == ("--", 'sh"op_bgverify_ff')
    assert plan.count_source.argv[-2:] == ("--", 'sh"op')
    assert "REPEATABLE READ READ ONLY" in plan.count_source.stdin
    for command in (plan.create, plan.restore, plan.count_scratch, plan.count_source, plan.drop):
        assert "s3cret" not in " ".join(command.argv) and command.env == {"PGPASSWORD": "s3cret"}


def test_plan_verify_sqlite_keeps_the_copy_in_memory_and_uses_the_apps_python() -> None:
    db = {"ENGINE": "django.db.backends.sqlite3", "NAME": "/srv/shop/db.sqlite3"}
    plan = bk.plan_verify(db, "/b/x.sqlite.sql.gz", "ff", python="/srv/venv/bin/python")
    assert plan.scratch == ":memory:"
    assert plan.create is None and plan.drop is None and plan.count_scratch is None  # the load prints the counts
    assert plan.restore.argv[:3] == ("/srv/venv/bin/python", "-I", "-c") and len(plan.restore.argv) == 4  # no file
    assert 'sqlite3.connect(":memory:")' in plan.restore.argv[3]
    assert plan.count_source.argv[-1] == "/srv/shop/db.sqlite3"


MYSQL_DUMP = b"""\
-- MariaDB dump 10.19
DROP TABLE IF EXISTS `t`;
CREATE TABLE `t` (id int);
INSERT INTO `t` VALUES (1,'a (b), c'),(2,'it\\'s ) ('),(3,0x28),(4,NULL);
INSERT INTO `t` VALUES (5,'x');
INSERT INTO `multi``line` VALUES
(1,'('),
(2,'\\\\'),
(3,'');
CREATE TABLE `empty` (id int);
-- Dump completed on 2024-05-17  9:03:07
"""
PG_DUMP = b"""\
-- PostgreSQL database dump
CREATE TABLE public.t (id integer);
COPY public.t (id, name) FROM stdin;
1\tone
2\ttwo\\nlines
\\.
COPY "Other Schema"."We""ird" (x) FROM stdin;
\\.
-- PostgreSQL database dump complete
"""
SQLITE_DUMP = b"""\
BEGIN TRANSACTION;
CREATE TABLE "t" (id INTEGER PRIMARY KEY AUTOINCREMENT, s TEXT);
INSERT INTO "t" VALUES(1,'line one
INSERT INTO "t" VALUES(9,''x'');
still row one');
INSERT INTO "t" VALUES(2,'two');
INSERT INTO "we""ird" VALUES(1);
DELETE FROM "sqlite_sequence";
INSERT INTO "sqlite_sequence" VALUES('t',2);
COMMIT;
"""


def test_dump_contents_counts_rows_per_table_from_the_dump_itself() -> None:
    mysql = bk.dump_contents("mysql", MYSQL_DUMP.splitlines(keepends=True))
    assert mysql == bk.DumpContents({"t": 5, "multi`line": 3}, complete=True)
    pg = bk.dump_contents("postgresql", PG_DUMP.splitlines(keepends=True))
    assert pg == bk.DumpContents({"public.t": 2, 'Other Schema.We"ird': 0}, complete=True)
    sqlite = bk.dump_contents("sqlite", SQLITE_DUMP.splitlines(keepends=True))
    assert sqlite == bk.DumpContents({"t": 2, 'we"ird': 1}, complete=True)
    for kind, dump in (("mysql", MYSQL_DUMP), ("postgresql", PG_DUMP), ("sqlite", SQLITE_DUMP)):
        cut = dump[: len(dump) * 2 // 3].splitlines(keepends=True)
        assert bk.dump_contents(kind, cut).complete is False, kind


def test_compare_rows_against_the_dump_tables_against_the_source() -> None:
    dumped = bk.DumpContents({"a": 3, "b": 0}, complete=True)
    assert bk.compare({"a": 3, "b": 0}, {"a": 3, "b": 0}, dumped) == ([], {})
    # the app wrote 2 rows after the dump: drift, reported, not a failure
    assert bk.compare({"a": 5, "b": 0}, {"a": 3, "b": 0}, dumped) == ([], {"a": 2})
    problems, _ = bk.compare({"a": 3, "b": 0, "c": 1}, {"a": 2, "b": 0}, bk.DumpContents({"a": 3}, complete=False))
    assert problems == [
        "the dump has no end-of-dump marker: it is truncated or was not written to the end",
        "table c is in the source database but not in the restored copy",
        "table a: the dump holds 3 rows, the restored copy 2",
    ]
    problems, _ = bk.compare({"a": 3}, {"a": 3, "x": 0}, bk.DumpContents({"a": 3, "gone": 1}, complete=True))
    assert problems == [
        "table x is in the restored copy but not in the source database",
        "table gone: the dump holds 1 rows but the table was not restored",
    ]


def test_parse_counts() -> None:
    assert bk.parse_counts("mysql", "a\t3\nwe\\tird\t0\n") == {"a": 3, "we\tird": 0}
    assert bk.parse_counts("postgresql", "public.a\t3\n\n") == {"public.a": 3}
    assert bk.parse_counts("sqlite", 'noise\n{"a": 3}\n') == {"a": 3}


def test_plan_restore_empties_then_loads_in_one_session() -> None:
    mysql = bk.plan_restore(mysql_db("shop", PASSWORD="pw"), "/b/x.sql.gz")
    assert mysql.load.argv[-2:] == ("--", "shop") and mysql.load.env == {"MYSQL_PWD": "pw"}
    assert mysql.load.stdin.startswith("SET FOREIGN_KEY_CHECKS = 0;") and "DROP TABLE IF EXISTS" in mysql.load.stdin
    assert "pw" not in mysql.load.argv
    pg = bk.plan_restore(pg_db("shop"), "/b/x.sql.gz")
    assert "--single-transaction" in pg.load.argv and "'DROP %s IF EXISTS %s CASCADE'" in pg.load.stdin
    lite = {"ENGINE": "django.db.backends.sqlite3", "NAME": "/d/db.sqlite3"}
    sqlite = bk.plan_restore(lite, "/b/x", "/py")
    assert sqlite.load.argv[0] == "/py" and sqlite.load.argv[-1] == "/d/db.sqlite3"  # loaded in memory, then copied


def test_list_backups_newest_first_with_the_last_verify(tmp_path: Path) -> None:
    for name in ("shop-20240101-120000-aaaaaaa.sql.gz", "shop-20240301-120000-restore.sql.gz",
                 "shop-api-20250101-000000-bbbbbbb.sql.gz", "shop-20250101-000000-ccccccc.sql.gz.tmp"):  # fmt: skip
        (tmp_path / name).write_bytes(b"x" * 10)
    os.symlink("/etc/passwd", tmp_path / "shop-20250101-000000-ddddddd.sql.gz")  # never listed
    newest = str(tmp_path / "shop-20240301-120000-restore.sql.gz")
    Path(verified_path(newest)).write_text(json.dumps({"ok": True, "verified_at": 5.0, "tables": 3, "rows": 7,
                                                       "seconds": 0.5, "mismatches": [], "drift": {}}))  # fmt: skip
    entries = list_backups(str(tmp_path), "shop")
    names = ["shop-20240301-120000-restore.sql.gz", "shop-20240101-120000-aaaaaaa.sql.gz"]
    assert [e["name"] for e in entries] == names
    assert entries[0]["taken"] == "2024-03-01 12:00:00" and entries[0]["commit"] == "restore"
    assert entries[0]["size"] == 10.0 and entries[0]["verified"]["rows"] == 7 and entries[1]["verified"] == {}
    assert list_backups(str(tmp_path / "missing"), "shop") == []
    # prune takes the verify record with its backup
    assert prune(str(tmp_path), "shop", keep=1) == [str(tmp_path / "shop-20240101-120000-aaaaaaa.sql.gz")]
    assert prune(str(tmp_path), "shop", keep=1) == []
    Path(verified_path(str(tmp_path / "shop-20240101-120000-aaaaaaa.sql.gz"))).write_text("{}")
    (tmp_path / "shop-20240101-120000-aaaaaaa.sql.gz").write_bytes(b"x")
    prune(str(tmp_path), "shop", keep=1)
    assert not os.path.exists(verified_path(str(tmp_path / "shop-20240101-120000-aaaaaaa.sql.gz")))


def test_backups_line_and_history_line() -> None:
    from supervisor_bluegreen.ctl.controllerplugin import USAGE, format_backup, format_history

    base = {"name": "shop-20240301-120000-abc1234.sql.gz", "size": 3 * 1024 * 1024.0, "taken": "2024-03-01 12:00:00",
            "commit": "abc1234"}  # fmt: skip
    assert format_backup({**base, "verified": {}}) == (
        "shop-20240301-120000-abc1234.sql.gz  3.0 MB  taken 2024-03-01 12:00:00  commit abc1234  not verified"
    )
    ok = format_backup({**base, "verified": {"ok": True, "verified_at": 0, "tables": 3, "rows": 70, "seconds": 1.25}})
    assert ok.endswith("verified never: 3 tables, 70 rows (1.2 s)")
    bad = format_backup({**base, "verified": {"ok": False, "verified_at": 0, "mismatches": ["table a: x"]}})
    assert bad.endswith("VERIFY FAILED never: table a: x")
    entry = {"id": 1, "created": 0, "kind": "deploy", "status": "failed", "message": "m", "steps": [],
             "backup": "/b/x.sql.gz", "backup_verify": {"ok": False, "mismatches": ["table a: x"], "tables": 1,
                                                        "rows": 2}}  # fmt: skip
    assert format_history(entry).splitlines()[-1] == "      backup VERIFY FAILED: table a: x (1 tables, 2 rows)"
    assert "bluegreen backups [APP]" in USAGE and "bluegreen restore APP BACKUP --yes" in USAGE


def test_verify_backup_option(tmp_path: Path) -> None:
    from conftest import shop_config

    from supervisor_bluegreen.shared.config import ConfigError, parse

    text = shop_config(tmp_path, repo="/srv/shop.git", checkout="/srv/shop/%(color)s")
    assert parse(text).app("shop").deploy.verify_backup is False
    assert parse(text + "verify_backup = true\n").app("shop").deploy.verify_backup is True
    with pytest.raises(ConfigError, match=r"\[app:shop\] verify_backup: 'sometimes' is not true or false"):
        parse(text + "verify_backup = sometimes\n")


# -- verify and restore against real servers (e2e) ---------------------------------------------------

USERS = [(i, f"user {i}", "it's (quoted), \\ back\nslash " * (i % 3)) for i in range(1, 2001)]
ORDERS = [(i, 1 + i % 2000, i * 1.5) for i in range(1, 3001)]
SQLITE_USERS = "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT, bio TEXT)"


def mysql_source(conn: pymysql.connections.Connection, name: str) -> None:
    """Three tables (one empty, one with a foreign key), a view: 5,000 rows."""
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        cur.execute(f"USE `{name}`")
        cur.execute("CREATE TABLE users (id INT PRIMARY KEY, name VARCHAR(100), bio TEXT) ENGINE=InnoDB")
        cur.execute("CREATE TABLE orders (id INT PRIMARY KEY, user_id INT NOT NULL, total DOUBLE,"
                    " FOREIGN KEY (user_id) REFERENCES users (id)) ENGINE=InnoDB")  # fmt: skip
        cur.execute("CREATE TABLE empty (id INT PRIMARY KEY) ENGINE=InnoDB")
        cur.execute("CREATE VIEW big_orders AS SELECT * FROM orders WHERE total > 100")
        cur.executemany("INSERT INTO users VALUES (%s, %s, %s)", USERS)
        cur.executemany("INSERT INTO orders VALUES (%s, %s, %s)", ORDERS)


@pytest.fixture
def mysql_shop(mysql_scratch: tuple) -> tuple[pymysql.connections.Connection, str]:
    """A fresh database made by mysql_source: (root connection, name); dropped afterwards."""
    conn, names = mysql_scratch
    source = f"bg_test_{uuid.uuid4().hex[:10]}"
    names.append(source)
    mysql_source(conn, source)
    return conn, source


def mysql_scratches(conn: pymysql.connections.Connection, name: str) -> list[str]:
    with conn.cursor() as cur:
        cur.execute("SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE %s",
                    (name.replace("_", "\\_") + "\\_bgverify\\_%",))  # fmt: skip
        return [r[0] for r in cur.fetchall()]


def rewrite(path: str, change: Callable[[bytes], bytes]) -> str:
    """A copy of backup ``path`` (same name pattern, another commit) with its dump changed by ``change``."""
    with gzip.open(path, "rb") as f:
        dump = f.read()
    out = path.replace("-0123456.", "-tampere.")
    with gzip.open(out, "wb") as f:
        f.write(change(dump))
    return out


def before_end(extra: bytes, marker: bytes) -> Callable[[bytes], bytes]:
    return lambda dump: dump.replace(marker, extra + marker, 1)


@pytest.fixture
def pg_source() -> Iterator[str]:
    """A fresh PostgreSQL database; dropped afterwards with every scratch copy named after it."""
    psql("SELECT 1")  # fails loudly when PostgreSQL is unreachable
    source = f"bg_test_{uuid.uuid4().hex[:10]}"
    psql(f'CREATE DATABASE "{source}"')
    try:
        yield source
    finally:
        for name in psql(f"SELECT datname FROM pg_database WHERE datname LIKE '{source}%'").split():
            psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def sqlite_dump(path: Path, schema: str, rows: list[tuple] = USERS) -> tuple[dict, str]:
    """A SQLite database at ``path`` made by ``schema`` with ``rows`` in ``users``, and a dump of it."""
    with sqlite3.connect(path) as db:
        db.executescript(schema)
        db.executemany("INSERT INTO users VALUES (?, ?, ?)", rows)
    db.close()
    conf = {"ENGINE": "django.db.backends.sqlite3", "NAME": str(path)}
    return conf, run_dump(plan_dump(conf, str(path.parent / "b"), "shop", COMMIT, WHEN))


@pytest.mark.e2e
def test_e2e_mysql_verify_restores_into_scratch_compares_and_drops_it(tmp_path: Path, mysql_shop: tuple) -> None:
    conn, source = mysql_shop
    db = mysql_db(source)
    started = time.monotonic()
    path = run_dump(plan_dump(db, str(tmp_path), "shop", COMMIT, WHEN))
    dumped = time.monotonic() - started
    logs: list[str] = []

    result = bk.verify(db, path, log=logs.append)

    assert result.ok, result.mismatches
    assert (result.tables, result.rows, result.mismatches, result.drift) == (3, 5000, [], {})
    assert result.scratch.startswith(f"{source}_bgverify_")
    assert mysql_scratches(conn, source) == []  # dropped
    assert logs == [result.summary()] and "OK, 3 tables, 5000 rows" in logs[0]
    listed = list_backups(str(tmp_path), "shop")
    assert listed[0]["verified"]["ok"] is True and listed[0]["verified"]["rows"] == 5000
    print(f"\nMariaDB, 5,000 rows: dump {dumped:.2f} s, verify {result.seconds:.2f} s")

    # the app keeps writing after the dump: reported as drift, the backup still verifies
    with conn.cursor() as cur:
        cur.executemany(f"INSERT INTO `{source}`.orders VALUES (%s, 1, 1)", [(i,) for i in range(5001, 5006)])
    again = bk.verify(db, path)
    assert again.ok and again.drift == {"orders": 5} and again.rows == 5000
    assert "5 rows written to the live database since the dump" in again.summary()
    assert mysql_scratches(conn, source) == []


@pytest.mark.e2e
def test_e2e_mysql_truncated_or_tampered_dumps_fail_and_leave_no_scratch(tmp_path: Path, mysql_shop: tuple) -> None:
    conn, source = mysql_shop
    db = mysql_db(source)
    path = run_dump(plan_dump(db, str(tmp_path), "shop", COMMIT, WHEN))

    truncated = rewrite(path, lambda dump: dump[: len(dump) // 2])
    result = bk.verify(db, truncated)
    assert not result.ok
    assert "no end-of-dump marker" in result.mismatches[0]
    assert verified_path(truncated) and json.loads(Path(verified_path(truncated)).read_text())["ok"] is False

    # a dump whose restore loses rows silently: the restored copy holds fewer than the dump
    marker = b"-- Dump completed"
    lossy = rewrite(path, before_end(b"DELETE FROM orders WHERE id % 2 = 0;\n", marker))
    result = bk.verify(db, lossy)
    assert not result.ok
    assert result.mismatches == ["table orders: the dump holds 3000 rows, the restored copy 1500"]

    # a table missing from the dump: its INSERTs fail, the restore fails
    no_users = rewrite(path, lambda dump: dump.replace(b"CREATE TABLE `users`", b"CREATE TABLE `userz`", 1))
    result = bk.verify(db, no_users)
    assert not result.ok and result.mismatches[0].startswith("the restore failed (mysql exited 1)")
    assert "users" in result.mismatches[0]

    # a gzip stream cut in the middle
    broken = path.replace("-0123456.", "-brokeng.")
    Path(broken).write_bytes(Path(path).read_bytes()[:-200])
    result = bk.verify(db, broken)
    assert not result.ok and "no end-of-dump marker" in result.mismatches[0]

    assert mysql_scratches(conn, source) == []


@pytest.mark.e2e
def test_e2e_mysql_verify_without_create_privilege_is_an_error_that_says_so(tmp_path: Path, mysql_shop: tuple) -> None:
    conn, source = mysql_shop
    user = source[-16:]
    with conn.cursor() as cur:
        cur.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY 'pw-{user}'")
    try:
        with conn.cursor() as cur:
            cur.execute(f"GRANT ALL ON `{source}`.* TO '{user}'@'%'")
        db = mysql_db(source, USER=user, PASSWORD=f"pw-{user}")
        path = run_dump(plan_dump(db, str(tmp_path), "shop", COMMIT, WHEN))
        with pytest.raises(bk.VerifyError, match=r"cannot create the scratch database .*(denied|Access)"):
            bk.verify(db, path)
        assert mysql_scratches(conn, source) == []
        assert not os.path.exists(verified_path(path))
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP USER IF EXISTS '{user}'@'%'")


@pytest.mark.e2e
def test_e2e_postgresql_verify_and_tampered_dumps(tmp_path: Path, pg_source: str) -> None:
    source = pg_source
    psql(
        "CREATE TABLE users (id INT PRIMARY KEY, name TEXT, bio TEXT);"
        "CREATE TABLE orders (id INT PRIMARY KEY, user_id INT NOT NULL REFERENCES users, total DOUBLE PRECISION);"
        "CREATE TABLE empty (id INT PRIMARY KEY);"
        'CREATE SCHEMA "Other"; CREATE TABLE "Other"."Odd ""Name""" (x INT);'
        "CREATE VIEW big_orders AS SELECT * FROM orders WHERE total > 100;"
        "INSERT INTO users SELECT g, 'user ' || g, repeat(E'it''s (quoted), \\\\ back\\nslash ', g % 3)"
        "  FROM generate_series(1, 2000) g;"
        "INSERT INTO orders SELECT g, 1 + g % 2000, g * 1.5 FROM generate_series(1, 3000) g;"
        'INSERT INTO "Other"."Odd ""Name""" VALUES (1), (2);',
        source,
    )
    db = pg_db(source)
    started = time.monotonic()
    path = run_dump(plan_dump(db, str(tmp_path), "shop", COMMIT, WHEN))
    dumped = time.monotonic() - started

    result = bk.verify(db, path)

    assert result.ok, result.mismatches
    assert (result.tables, result.rows, result.drift) == (4, 5002, {})
    scratch_like = f"SELECT datname FROM pg_database WHERE datname LIKE '{source}\\_bgverify\\_%'"
    assert psql(scratch_like) == ""
    print(f"\nPostgreSQL, 5,002 rows: dump {dumped:.2f} s, verify {result.seconds:.2f} s")

    psql("INSERT INTO orders VALUES (5001, 1, 1), (5002, 1, 1)", source)
    again = bk.verify(db, path)
    assert again.ok and again.drift == {"public.orders": 2}

    truncated = rewrite(path, lambda dump: dump[: len(dump) // 2])
    result = bk.verify(db, truncated)
    assert not result.ok and "no end-of-dump marker" in result.mismatches[0]

    marker = b"-- PostgreSQL database dump complete"
    lossy = rewrite(path, before_end(b"DELETE FROM public.orders WHERE id % 2 = 0;\n", marker))
    result = bk.verify(db, lossy)
    assert result.mismatches == ["table public.orders: the dump holds 3000 rows, the restored copy 1500"]
    assert psql(scratch_like) == ""


@pytest.mark.e2e
def test_e2e_sqlite_verify_and_tampered_dump(tmp_path: Path) -> None:
    schema = "CREATE TABLE users (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT, bio TEXT);" \
             "CREATE TABLE empty (id INTEGER PRIMARY KEY);"  # fmt: skip
    conf, path = sqlite_dump(tmp_path / "db.sqlite3", schema)

    plan = bk.plan_verify(conf, path, "0a1b2c3d")
    result = bk.run_verify(plan)
    assert result.ok and (result.tables, result.rows) == (2, 2000)

    lossy = rewrite(path, before_end(b"DELETE FROM users WHERE id > 1000;\n", b"COMMIT;"))
    result = bk.run_verify(bk.plan_verify(conf, lossy, "0a1b2c3d"))
    assert result.mismatches == ["table users: the dump holds 2000 rows, the restored copy 1000"]


FAKE_MANAGE = """\
import json, sys
# stands in for `manage.py shell -c ...` printing settings.DATABASES["default"]
print("some noise Django may print")
print(json.dumps({database}))
"""


def restore_cli(config: Path, *args: str) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "supervisor_bluegreen.ctl.cli", "restore", "--config", str(config), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=Path(__file__).parent.parent)


@pytest.mark.e2e
def test_e2e_restore_cli_on_mariadb(tmp_path: Path, mysql_shop: tuple) -> None:
    from conftest import shop_config

    from supervisor_bluegreen.shared.store import AppLock, Store

    conn, source = mysql_shop
    db = mysql_db(source)
    for color in ("blue", "green"):
        (tmp_path / color).mkdir()
        (tmp_path / color / "manage.py").write_text(FAKE_MANAGE.format(database=repr(db)))
    backups = tmp_path / "backups"
    config = tmp_path / "bluegreen.ini"
    config.write_text(shop_config(tmp_path, repo=str(tmp_path / "shop.git"), checkout=f"{tmp_path}/%(color)s",
                                  python=sys.executable, backup_dir=str(backups)))  # fmt: skip
    good = run_dump(plan_dump(db, str(backups), "shop", COMMIT, WHEN))
    name = os.path.basename(good)

    def counts() -> tuple:
        with conn.cursor() as cur:
            cur.execute(f"USE `{source}`")
            cur.execute("SELECT (SELECT COUNT(*) FROM users), (SELECT COUNT(*) FROM orders)")
            users_orders = cur.fetchone()
            cur.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = %s ORDER BY 1",
                        (source,))  # fmt: skip
            return users_orders, [r[0] for r in cur.fetchall()]

    # what a bad day looks like: rows lost, a table a later migration added
    with conn.cursor() as cur:
        cur.execute(f"DELETE FROM `{source}`.orders WHERE id > 10")
        cur.execute(f"CREATE TABLE `{source}`.added_later (id INT)")
    damaged = counts()
    assert damaged == ((2000, 10), ["added_later", "big_orders", "empty", "orders", "users"])

    no = restore_cli(config, "shop", name)
    assert no.returncode == 2, no.stderr
    assert "nothing changed; run again with --yes" in no.stdout
    assert counts() == damaged and os.listdir(backups) == [name]

    lock = AppLock(Store(str(tmp_path / "state"), "shop").ensure().lock.path)
    assert lock.acquire()
    try:
        held = restore_cli(config, "shop", name, "--yes")
    finally:
        lock.release()
    assert held.returncode == 1 and "the app's lock is held" in held.stderr
    assert counts() == damaged and os.listdir(backups) == [name]

    queued = Store(str(tmp_path / "state"), "shop").enqueue("deploy", {"ref": "main"}, "test")
    busy = restore_cli(config, "shop", name, "--yes")
    assert busy.returncode == 1 and f"deploy (job {queued['id']}) is queued" in busy.stderr
    Store(str(tmp_path / "state"), "shop").update_job(queued["id"], status="cancelled")

    unknown = restore_cli(config, "shop", "shop-20200101-000000-nothere.sql.gz", "--yes")
    assert unknown.returncode == 1 and "no backup 'shop-20200101-000000-nothere.sql.gz' of shop" in unknown.stderr
    outside = restore_cli(config, "shop", "/etc/passwd", "--yes")
    assert outside.returncode == 1 and "is not in shop's backup directory" in outside.stderr

    started = time.monotonic()
    done = restore_cli(config, "shop", name, "--yes")
    took = time.monotonic() - started

    assert done.returncode == 0, done.stderr
    assert counts() == ((2000, 3000), ["big_orders", "empty", "orders", "users"])
    fresh = [n for n in os.listdir(backups) if n.endswith("-restore.sql.gz")]
    assert len(fresh) == 1 and f"fresh backup of the live database: {backups / fresh[0]}" in done.stdout
    with gzip.open(backups / fresh[0], "rb") as f:  # the way back holds the database as it was before
        assert bk.dump_contents("mysql", f).rows == {"users": 2000, "orders": 10}
    assert f"restored {good} into {source}: 3 tables, 5000 rows" in done.stdout
    assert f"undo: bluegreen restore shop {fresh[0]} --yes" in done.stdout
    assert list_backups(str(backups), "shop")[1]["verified"]["ok"] is True  # the restored one was verified first
    assert mysql_scratches(conn, source) == []
    print(f"\nbluegreen restore, MariaDB 5,000 rows (fresh backup + verify + restore): {took:.2f} s")


@pytest.mark.e2e
def test_e2e_postgresql_restore_replaces_the_database_in_one_transaction(tmp_path: Path, pg_source: str) -> None:
    source = pg_source
    tables = (
        "SELECT string_agg(table_schema || '.' || table_name, ',' ORDER BY table_schema, table_name)"
        " FROM information_schema.tables WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
    )
    psql(
        "CREATE TYPE mood AS ENUM ('ok', 'meh');"
        "CREATE TYPE span AS RANGE (subtype = float8);"  # its constructors go with it, not on their own
        "CREATE TABLE slots (id INT PRIMARY KEY, s span);"
        "INSERT INTO slots VALUES (1, span(1, 2));"
        "CREATE TABLE users (id SERIAL PRIMARY KEY, name TEXT, m mood);"
        "CREATE TABLE orders (id INT PRIMARY KEY, user_id INT REFERENCES users);"
        "CREATE FUNCTION answer() RETURNS int LANGUAGE sql AS 'SELECT 42';"
        "CREATE SCHEMA extra; CREATE TABLE extra.t (x INT);"
        "CREATE VIEW v AS SELECT * FROM orders;"
        "INSERT INTO users (name, m) SELECT 'u' || g, 'ok' FROM generate_series(1, 500) g;"
        "INSERT INTO orders SELECT g, 1 + g % 500 FROM generate_series(1, 700) g;"
        "INSERT INTO extra.t VALUES (1);",
        source,
    )
    db = pg_db(source)
    path = run_dump(plan_dump(db, str(tmp_path), "shop", COMMIT, WHEN))
    before = psql(tables, source)
    psql("DELETE FROM orders WHERE id > 7; CREATE TABLE added_later (id INT); CREATE SCHEMA later;"
         "CREATE TABLE later.t (x INT); DROP FUNCTION answer();", source)  # fmt: skip

    broken = rewrite(path, lambda dump: dump[: len(dump) * 3 // 4])
    with pytest.raises(bk.RestoreError, match="the live database is unchanged"):
        bk.run_restore(bk.plan_restore(db, broken, "ff"))
    assert psql("SELECT count(*) FROM orders", source) == "7\n"  # one transaction: nothing happened
    assert "public.added_later" in psql(tables, source)

    bk.run_restore(bk.plan_restore(db, path, "ff"))

    assert psql(tables, source) == before
    assert psql("SELECT count(*), answer() FROM orders", source) == "700|42\n"
    assert psql("SELECT count(*) FROM users WHERE m = 'ok'", source) == "500\n"
    assert psql("SELECT nextval('users_id_seq')", source) == "501\n"
    assert psql("SELECT upper(s) FROM slots", source) == "2\n"


@pytest.mark.e2e
def test_e2e_sqlite_restore_replaces_the_live_file_contents(tmp_path: Path) -> None:
    live = tmp_path / "db.sqlite3"
    conf, path = sqlite_dump(live, SQLITE_USERS)
    app = sqlite3.connect(live)  # the app keeps its connection open across the restore
    app.execute("DELETE FROM users WHERE id > 5")
    app.execute("CREATE TABLE added_later (id INTEGER)")
    app.commit()

    bk.run_restore(bk.plan_restore(conf, path))

    assert app.execute("SELECT COUNT(*) FROM users").fetchone() == (2000,)
    assert [r[0] for r in app.execute("SELECT name FROM sqlite_master WHERE type = 'table'")] == ["users"]
    app.close()


# What an observer sees after each command of a verify or restore: every scratch copy on disk.
SPY = """\
#!/bin/sh
"$BG_REAL_PYTHON" "$@"
status=$?
ls -l -d /tmp/*_bgverify_* "$BG_DB_DIR"/*_bgverify_* >> "$BG_SPY_LOG" 2>/dev/null
exit $status
"""


@pytest.mark.e2e
def test_e2e_sqlite_verify_and_restore_put_no_copy_of_the_data_on_disk(tmp_path: Path, monkeypatch) -> None:
    """Issue 13: the scratch copy was /tmp/<db>_bgverify_*.sqlite3, 0644; a reader's fd kept it after the delete."""
    live = tmp_path / "db.sqlite3"
    conf, path = sqlite_dump(live, SQLITE_USERS)
    spy, log = tmp_path / "python", tmp_path / "spy.log"
    spy.write_text(SPY)
    spy.chmod(0o755)
    monkeypatch.setenv("BG_REAL_PYTHON", sys.executable)
    monkeypatch.setenv("BG_DB_DIR", str(tmp_path))
    monkeypatch.setenv("BG_SPY_LOG", str(log))
    log.write_text("")

    result = bk.run_verify(bk.plan_verify(conf, path, "0a1b2c3d", python=str(spy)), record=False)
    assert result.ok and (result.tables, result.rows) == (1, 2000)
    with sqlite3.connect(live) as db:
        db.execute("DELETE FROM users")
    bk.run_restore(bk.plan_restore(conf, path, python=str(spy)))
    with sqlite3.connect(live) as db:
        assert db.execute("SELECT COUNT(*) FROM users").fetchone() == (2000,)

    assert log.read_text() == ""  # after every command: no scratch file in /tmp or beside the database


def test_rpc_backups_lists_the_directory_and_marshals(tmp_path: Path) -> None:
    """``bluegreen.backups`` inside supervisord: a listing only, fit for XML-RPC (sizes past 2 GiB too)."""
    import xmlrpc.client
    from types import SimpleNamespace

    from conftest import shop_config
    from supervisor.xmlrpc import RPCError

    from supervisor_bluegreen.supervisord import rpcinterface

    ini = tmp_path / "bluegreen.ini"
    backups = tmp_path / "backups"
    ini.write_text(shop_config(tmp_path, repo="/srv/shop.git", checkout=f"{tmp_path}/%(color)s",
                               backup_dir=str(backups)))  # fmt: skip
    supervisord = SimpleNamespace(options=SimpleNamespace(logger=SimpleNamespace(error=print)), process_groups={})
    api = rpcinterface.make_bluegreen_rpcinterface(supervisord, config=str(ini))
    assert api.backups("shop") == []
    backups.mkdir()
    big = backups / "shop-20240301-120000-abc1234.sql.gz"
    with open(big, "wb") as f:
        f.truncate(3 * 1024**3)  # sparse: 3 GiB
    Path(verified_path(str(big))).write_text(json.dumps({"ok": True, "verified_at": 1.0, "tables": 2, "rows": 9,
                                                         "seconds": 0.3, "mismatches": []}))  # fmt: skip
    (backups / "shop-20240101-120000-0000000.sql.gz").write_bytes(b"x")

    listed = api.backups("")
    assert [e["name"] for e in listed] == [big.name, "shop-20240101-120000-0000000.sql.gz"]
    assert listed[0]["size"] == 3.0 * 1024**3 and listed[0]["verified"]["rows"] == 9
    assert listed[1]["verified"] == {}
    xmlrpc.client.dumps((listed,), methodresponse=True)  # no None, no int past 2**31
    with pytest.raises(RPCError):
        api.backups("nope")


# -- trust boundaries (issue 9): no planted file is followed, dumps die with the listener ---------


def _bounded(fn: Callable[[], object], seconds: float = 10) -> BaseException | None:
    """Run ``fn`` in a thread; the exception it raised (None: it returned), or a test failure when it hangs."""
    import threading

    box: list[BaseException | None] = []

    def target() -> None:
        try:
            fn()
            box.append(None)
        except BaseException as exc:  # noqa: BLE001 (handed to the test)
            box.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"still running after {seconds} s: a planted file made it wait")
    return box[0]


@pytest.mark.integration
@pytest.mark.parametrize("planted", ["symlink", "fifo", "hardlink"])
def test_a_file_planted_at_the_dump_temp_path_is_refused_and_nothing_outside_changes(
    tmp_path: Path, planted: str
) -> None:
    """``<final>.tmp -> victim``: the dump fails saying so, and the victim keeps its bytes and mode."""
    backups = tmp_path / "b"
    backups.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("root's file\n")
    victim.chmod(0o600)
    path = str(backups / backup_name("shop", WHEN, COMMIT, "sqlite"))
    tmp = path + ".tmp"
    if planted == "symlink":
        os.symlink(victim, tmp)
    elif planted == "fifo":
        os.mkfifo(tmp)
    else:
        os.link(victim, tmp)
    plan = DumpPlan("sqlite", (sys.executable, "-c", "print('-- the dump')"), {}, path)

    error = _bounded(lambda: run_dump(plan))

    assert isinstance(error, BackupError), error
    said = {"symlink": "it is a symbolic link", "fifo": "it is a FIFO", "hardlink": "it has 2 hard links"}[planted]
    assert str(error).startswith(f"cannot write the backup: refusing {tmp}: {said}")
    assert victim.read_text() == "root's file\n" and stat_mode(victim) == 0o600
    assert not os.path.lexists(path)


def stat_mode(path: Path) -> int:
    return os.lstat(path).st_mode & 0o7777


@pytest.mark.integration
def test_verified_json_replaces_a_planted_symlink_and_a_fifo_backup_is_refused(tmp_path: Path) -> None:
    conf, path = sqlite_dump(tmp_path / "app.sqlite3", SQLITE_USERS, USERS[:1])
    victim = tmp_path / "victim"
    victim.write_text("root's file\n")
    os.symlink(victim, verified_path(path))

    assert bk.verify(conf, path).ok

    assert victim.read_text() == "root's file\n"
    assert not os.path.islink(verified_path(path)) and stat_mode(Path(verified_path(path))) == 0o640
    assert json.loads(Path(verified_path(path)).read_text())["ok"] is True

    fifo = str(tmp_path / "b" / backup_name("shop", datetime(2024, 1, 1), COMMIT, "sqlite"))
    os.mkfifo(fifo)
    error = _bounded(lambda: bk.verify(conf, fifo))
    assert isinstance(error, bk.VerifyError) and f"refusing {fifo}: it is a FIFO" in str(error), error


DUMPER = """
import sys, threading, time
from supervisor_bluegreen.host import backup

plan = backup.DumpPlan("sqlite", ("/bin/sh", "-c", "exec sleep 300"), {}, sys.argv[1])
threading.Thread(target=backup.run_dump, args=(plan,), kwargs={"user": sys.argv[2]}, daemon=True).start()
time.sleep(300)  # the dump runs from a worker thread, as in the listener
"""


def _children(pid: int) -> list[tuple[int, str]]:
    """(pid, name) of the processes whose parent is ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                head, tail = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(tail.split()[1]) == pid:
                found.append((int(entry), head.split("(", 1)[1]))
    return found


def _gone(pid: int) -> bool:
    """The process is no more (or a zombie: dead, waiting to be reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _within(seconds: float, found: Callable[[], object]) -> object:
    """What ``found()`` returns once it is truthy, polled for at most ``seconds`` (then that last falsy value)."""
    deadline = time.monotonic() + seconds
    while not (result := found()) and time.monotonic() < deadline:
        time.sleep(0.02)
    return result


@pytest.mark.integration
@pytest.mark.parametrize("user", ["", "nobody"])
def test_a_dump_dies_with_the_listener_even_on_kill_9(tmp_path: Path, user: str) -> None:
    """The dump is started by steps.spawn: setpriv's parent-death signal kills it with the listener."""
    if user and os.geteuid() != 0:
        pytest.skip("running the dump as another user needs root")
    path = str(tmp_path / "b" / backup_name("shop", WHEN, COMMIT, "sqlite"))
    listener = subprocess.Popen([sys.executable, "-c", DUMPER, path, user], cwd=Path(__file__).resolve().parents[1])
    try:
        # sleep is running once setpriv has set the parent-death signal and exec'd the dump command
        dumps = _within(10, lambda: [p for p, name in _children(listener.pid) if name == "sleep"])
        assert isinstance(dumps, list) and len(dumps) == 1, "the dump never started"
        status = Path(f"/proc/{dumps[0]}/status").read_text()
        uid = int(status.split("\nUid:", 1)[1].split()[0])
        assert uid == (pwd.getpwnam(user).pw_uid if user else os.geteuid())
        os.kill(listener.pid, signal.SIGKILL)
        assert listener.wait(timeout=10) == -signal.SIGKILL
        assert _within(5, lambda: _gone(dumps[0])), "the dump outlived the listener"
    finally:
        if listener.poll() is None:
            listener.kill()
            listener.wait(timeout=10)


def test_restore_refuses_a_backup_dir_others_can_write(tmp_path: Path) -> None:
    """Root writes the fresh dump and reads BACKUP there: a folder the app user could write is refused first."""
    from conftest import shop_config

    from supervisor_bluegreen.ctl import restore as rs
    from supervisor_bluegreen.shared.config import load

    backups = tmp_path / "backups"
    backups.mkdir()
    backups.chmod(0o777)
    name = backup_name("shop", WHEN, COMMIT, "mysql")
    (backups / name).write_bytes(b"x")
    config = tmp_path / "bluegreen.ini"
    config.write_text(shop_config(tmp_path, repo=str(tmp_path / "shop.git"), checkout=f"{tmp_path}/%(color)s",
                                  backup_dir=str(backups)))  # fmt: skip
    refused = rf"backup_dir {backups}: .* is writable by everyone.*; nothing changed"
    with pytest.raises(rs.RestoreRefused, match=refused):
        rs.restore(load(str(config)).app("shop"), name, yes=True)
    assert os.listdir(backups) == [name]


def test_restore_refuses_a_state_dir_others_can_write(tmp_path: Path) -> None:
    """restore takes the app's lock and reads its jobs in state_dir: a folder others could write is refused first."""
    from conftest import shop_config

    from supervisor_bluegreen.ctl import restore as rs
    from supervisor_bluegreen.shared.config import load

    backups, state = tmp_path / "backups", tmp_path / "state"
    backups.mkdir(mode=0o750)
    state.mkdir()
    state.chmod(0o777)
    config = tmp_path / "bluegreen.ini"
    config.write_text(shop_config(tmp_path, repo=str(tmp_path / "shop.git"), checkout=f"{tmp_path}/%(color)s",
                                  backup_dir=str(backups)))  # fmt: skip
    with pytest.raises(rs.RestoreRefused, match=rf"state_dir {state}: .* is writable by everyone.*; nothing changed"):
        rs.restore(load(str(config)).app("shop"), "x", yes=True)
    assert os.listdir(state) == []

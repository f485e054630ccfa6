"""``bluegreen restore APP BACKUP --yes``: put a backup back into the app's live database.

Run from a shell, as root, like the listener. In order, each step stopping the restore when it fails:

1. refuse while the app's lock is held (a deploy, switch or rollback runs) or a job is queued or
   running, and hold the lock from then on, so that no job starts until the restore has ended;
2. without ``--yes``: say what would happen, change nothing;
3. read the live database's settings from Django in the live color's checkout (as the app's user);
4. take a fresh backup of the live database (so the restore itself can be undone);
5. verify BACKUP in a scratch database (same tables and row counts as it holds): a dump that does not
   restore there is never loaded into the live database;
6. empty the live database and load BACKUP into it with the server's own client.

The code that serves is not touched: if BACKUP predates migrations the live color has applied,
roll the code back too (or deploy a release that matches the restored schema).
"""

from __future__ import annotations

import os
import secrets
import sys
from datetime import datetime
from typing import Callable

from supervisor_bluegreen.host import backup, runner
from supervisor_bluegreen.shared.config import App, ConfigError, load
from supervisor_bluegreen.shared.errors import BluegreenError
from supervisor_bluegreen.shared.model import ACTIVE, Kind
from supervisor_bluegreen.shared.store import Store, UnsafePath, check_private_dir


class RestoreRefused(BluegreenError):
    """Nothing was changed; the message says why."""


def find_backup(app: App, wanted: str) -> str:
    """The path of backup ``wanted`` (its file name, or its path inside the app's backup directory)."""
    directory = backup.backup_dir_of(app)
    name = os.path.basename(wanted)
    if os.path.dirname(wanted) and os.path.realpath(os.path.dirname(wanted)) != os.path.realpath(directory):
        raise RestoreRefused(f"{wanted} is not in {app.name}'s backup directory {directory}")
    known = {entry["name"]: entry["path"] for entry in backup.list_backups(directory, app.name)}
    if name not in known:
        listed = ", ".join(sorted(known)[-3:]) or "none"
        raise RestoreRefused(f"no backup {name!r} of {app.name} in {directory} (newest: {listed})")
    return known[name]


def restore(
    app: App,
    wanted: str,
    yes: bool,
    out: Callable[[str], None] = print,
) -> int:
    """The restore described above; 0 when BACKUP is in the live database. Raises RestoreRefused/BackupError."""
    if app.deploy is None:
        raise RestoreRefused(f"{app.name} has no repo/checkout configured: cannot ask Django for its database")
    config = app.deploy
    try:  # root writes the fresh dump and reads BACKUP there, its lock and jobs in state_dir: only root may write them
        check_private_dir(backup.backup_dir_of(app), "backup_dir")
        check_private_dir(app.state_dir, "state_dir")
    except UnsafePath as exc:
        raise RestoreRefused(f"{exc}; nothing changed") from None
    path = find_backup(app, wanted)
    store = Store(app.state_dir, app.name).ensure()
    if store.lock.held_elsewhere():
        raise RestoreRefused(f"{app.name}: the app's lock is held (a job is running); nothing changed")
    active = [j for j in store.jobs(ACTIVE) if j["kind"] != Kind.HEALTH]
    if active:
        j = active[0]
        raise RestoreRefused(f"{app.name}: {j['kind']} (job {j['id']}) is {j['status']}; nothing changed")
    live = store.read().get("live")
    color = app.color(live) if live else app.colors[0]
    directory = backup.backup_dir_of(app)
    if not yes:
        out(
            f"would restore {path} into the database of {app.name} (read from {color.checkout}):\n"
            f"  1. take a fresh backup of it into {directory}\n"
            f"  2. verify {os.path.basename(path)} in a scratch database\n"
            f"  3. empty the live database and load {os.path.basename(path)} into it\n"
            "nothing changed; run again with --yes to do it"
        )
        return 2
    if not store.lock.acquire():
        raise RestoreRefused(f"{app.name}: the app's lock was taken meanwhile; nothing changed")
    try:
        python = runner.values(color)["python"]
        env = runner.environment(color, config.user)
        database = backup.django_database(python, color.checkout, env, config.user)
        kind = backup.kind_of(str(database.get("ENGINE", "")))
        out(f"{app.name}: live color {color.name}; its {kind} database is {database.get('NAME')}")
        plan = backup.plan_dump(database, directory, app.name, "restore", datetime.now(), python=python)
        if os.path.exists(plan.path):
            raise RestoreRefused(f"{plan.path} exists already; try again in a second")
        fresh = backup.run_dump(plan, user=config.user, timeout=config.step_timeout, log=out)
        out(f"fresh backup of the live database: {fresh}")
        result = backup.run_verify(
            backup.plan_verify(database, path, secrets.token_hex(4), python),
            user=config.user,
            timeout=config.step_timeout,
            log=out,
            against_source=False,  # an older backup may well have other tables than the live database now
        )
        if not result.ok:
            name = os.path.basename(path)
            raise RestoreRefused(
                f"{name} does not restore as it should ({'; '.join(result.mismatches)}); the live database is untouched"
            )
        out(f"verified; loading {os.path.basename(path)} into the live database {database.get('NAME')}")
        try:
            seconds = backup.run_restore(
                backup.plan_restore(database, path, python),
                user=config.user,
                timeout=max(config.step_timeout, 3600),
            )
        except backup.RestoreError as exc:
            raise backup.RestoreError(f"{exc}; the fresh backup taken before is {fresh}") from None
        out(
            f"restored {path} into {database.get('NAME')}: "
            f"{result.tables} tables, {result.rows} rows ({seconds:.1f} s)\n"
            f"undo: bluegreen restore {app.name} {os.path.basename(fresh)} --yes\n"
            f"the code was not touched: the live color {color.name} still runs its commit; if the backup predates "
            "migrations it applied, roll back or deploy a matching release"
        )
        return 0
    finally:
        store.lock.release()


def main(config_path: str, app_name: str, wanted: str, yes: bool) -> int:
    """The ``bluegreen restore`` command: 0 restored, 2 needs --yes, 1 refused or failed (says why)."""
    try:
        app = load(config_path).app(app_name)
        return restore(app, wanted, yes)
    except ConfigError as exc:
        print(f"{exc}", file=sys.stderr)
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
    except RestoreRefused as exc:
        print(f"refused: {exc}", file=sys.stderr)
    except backup.BackupError as exc:
        print(f"restore failed: {exc}", file=sys.stderr)
    return 1

"""Which backups an app has, and whether each was proven restorable: standard library only.

supervisord's side (``bluegreen.backups``) imports this module, so it lists a directory, stats
files and reads one small ``<backup>.verified.json`` per backup, and nothing more: no subprocess,
no database, nothing that waits. Taking, verifying and restoring backups is backup.py's work.
"""

from __future__ import annotations

import json
import os
import re
import stat
from datetime import datetime
from typing import Any

# <app>-<YYYYmmdd>-<HHMMSS>-<commit>.sql.gz: the app part is matched literally by prune() and list_backups().
NAME_TAIL = re.compile(r"-(\d{8}-\d{6})-([0-9A-Za-z_]+)\.(?:sqlite\.)?sql\.gz$")
VERIFIED_KEYS = ("ok", "verified_at", "tables", "rows", "seconds", "mismatches", "scratch")


def verified_path(backup: str) -> str:
    """Where the outcome of the last verify of ``backup`` is kept: ``<backup>.verified.json``."""
    return backup + ".verified.json"


def backup_dir_of(app: Any) -> str:
    """Where an app's backups live: ``backup_dir``, else ``<state_dir>/<app>/backups``."""
    configured = app.deploy.backup_dir if app.deploy is not None else ""
    return configured or os.path.join(app.state_dir, app.name, "backups")


def _read_small_json(path: str, limit: int = 65536) -> Any:
    """The JSON in a small regular file, or None (missing, a symlink, not JSON, too big)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return json.loads(os.read(fd, limit).decode("utf-8"))
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)


def list_backups(backup_dir: str, app: str) -> list[dict[str, Any]]:
    """The backups of ``app``, newest first: name, path, size, taken, commit, and the last verify if recorded.

    Only regular files named by backup.backup_name() for this very app. Sizes and times are
    floats (XML-RPC ints stop at 2**31); ``verified`` is {} when the backup was never verified.
    """
    try:
        names = os.listdir(backup_dir)
    except OSError:
        return []
    found = []
    for name in names:
        match = NAME_TAIL.search(name)
        if not match or name[: match.start()] != app:
            continue
        path = os.path.join(backup_dir, name)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        try:
            taken = datetime.strptime(match.group(1), "%Y%m%d-%H%M%S").strftime("%Y-%m-%d %H:%M:%S")
        except ValueError:
            continue
        verified = _read_small_json(verified_path(path))
        entry = {
            "name": name,
            "path": path,
            "size": float(st.st_size),
            "mtime": st.st_mtime,
            "taken": taken,
            "commit": match.group(2),
            "verified": {k: verified.get(k) for k in VERIFIED_KEYS} if isinstance(verified, dict) else {},
        }
        found.append((match.group(1), name, entry))
    found.sort(key=lambda item: (item[0], item[1]), reverse=True)
    return [entry for _, _, entry in found]

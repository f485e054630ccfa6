"""The maintenance page: while ``<maintenance_dir>/<app>.html`` exists, nginx answers the app's pages with it (503).

supervisord's side writes it (``bluegreen.maintenance``): one small file, written to a temporary name and renamed
over the page, in a folder root owns and no one else can write (the store's rule, stat calls only), opened with
O_NOFOLLOW|O_EXCL (a planted link is refused, never followed). No fsync: supervisord never waits on the disk.
The page is 0644 and its folder 0755, since nginx's workers read it; it holds only the message, escaped.
Standard library only (supervisord imports it).
"""

from __future__ import annotations

import errno
import html
import os
import secrets
import stat

from supervisor_bluegreen.shared.config import App
from supervisor_bluegreen.shared.store import UnsafePath, private_dir_problem

PAGE_MODE = 0o644
DIR_MODE = 0o755
MESSAGE_MAX = 2000  # characters of the message kept on the page (and in the state)
DEFAULT_MESSAGE = "This site is down for maintenance. Please try again in a few minutes."

PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Down for maintenance</title></head>
<body>
<h1>Down for maintenance</h1>
<p>{message}</p>
</body>
</html>
"""


def page(message: str) -> str:
    """The HTML nginx serves: ``message`` escaped, in one paragraph."""
    return PAGE.format(message=html.escape(message or DEFAULT_MESSAGE))


def _folder(app: App) -> None:
    """Make the page's folder, and any missing one above it, 0755 whatever the umask (supervisord runs with 027:
    nginx's workers could not enter a 0750 folder); refuse one someone but root could write (UnsafePath)."""
    folder = app.maintenance_dir
    problem = private_dir_problem(folder)
    if problem:
        raise UnsafePath(errno.EPERM, f"maintenance_dir {folder}: {problem}; nothing changed")
    missing = []
    d = folder
    while not os.path.lexists(d):
        missing.append(d)
        d = os.path.dirname(d)
    for d in reversed(missing):
        try:
            os.mkdir(d, DIR_MODE)
        except FileExistsError:
            continue
        os.chmod(d, DIR_MODE)
    st = os.lstat(folder)
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafePath(errno.ENOTDIR, f"maintenance_dir {folder} is not a folder; nothing changed")


def write_page(app: App, message: str) -> None:
    """Put the app in maintenance: its page, whole, under its name at once (rename)."""
    _folder(app)
    target = app.maintenance_page
    temp = os.path.join(app.maintenance_dir, f".{app.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, PAGE_MODE)
    try:
        try:
            os.fchmod(fd, PAGE_MODE)  # whatever the umask: nginx's workers read it
            os.write(fd, page(message).encode("utf-8"))
        finally:
            os.close(fd)
        os.rename(temp, target)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise


def remove_page(app: App) -> bool:
    """End maintenance: the page is gone (whether it was there)."""
    problem = private_dir_problem(app.maintenance_dir)
    if problem:
        raise UnsafePath(errno.EPERM, f"maintenance_dir {app.maintenance_dir}: {problem}; nothing changed")
    try:
        os.unlink(app.maintenance_page)
    except FileNotFoundError:
        return False
    return True


def page_exists(app: App) -> bool:
    """Whether nginx serves the maintenance page now (the entry itself is looked at, never followed)."""
    return os.path.lexists(app.maintenance_page)

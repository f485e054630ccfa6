"""Releases: every deploy builds a folder of its own; a color is a process slot that points at one.

``<releases>/<id>/`` (id ``20261207T091200-<commit12>``) holds a release's checkout and, when the
color's python lives under its root, its virtualenv: the color's paths with its root swapped for the
release's folder (``view``). The build runs there while both colors keep running untouched, so a
refused build costs nothing but its folder. A color's root (``/srv/APP/blue``) is a link in the app's
root-owned folder to the release it runs, re-pointed only while that color is stopped (``point``): a
running process never sees its code change, and every kept release can be started again as it was
built. Pruning keeps the newest ``keep_releases`` built ones and never one a color points at.

Everything inside a release is the app user's and is touched only as that user (git, cp, rm run as it);
root only makes the releases folder (apptree: no link followed) and writes the color links in its own folder.
"""

from __future__ import annotations

import dataclasses
import os
import pwd
import time
from collections.abc import Collection, Iterable

from supervisor_bluegreen.host import apptree, links
from supervisor_bluegreen.shared.config import App, Color
from supervisor_bluegreen.shared.releaselist import LEGACY, RELEASE_ID, Release, ReleaseError


def new_id(commit: str, now: float, taken: Collection[str]) -> str:
    """A release's folder name: sortable by build time, naming the commit, never one already there."""
    base = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime(now))}-{commit[:12]}"
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}-{n}"
    return name


def folder(app: App, release_id: str) -> str:
    assert app.deploy is not None
    return os.path.join(app.deploy.releases, release_id)


def moved(path: str, old: str, new: str) -> str:
    """``path`` with its prefix ``old`` replaced by ``new``; unchanged when it is not inside ``old``."""
    old = old.rstrip("/")
    if path == old:
        return new
    if path.startswith(old + "/"):
        return new + path[len(old) :]
    return path


def view(color: Color, release_dir: str) -> Color:
    """``color`` as it is when it runs the release in ``release_dir``: every path under its root moved there.

    Paths outside the root (a shared virtualenv, the environment file) stay as they are.
    """
    return dataclasses.replace(
        color,
        root=release_dir,
        checkout=moved(color.checkout, color.root, release_dir),
        static_root=moved(color.static_root, color.root, release_dir),
        python=moved(color.python, color.root, release_dir) if os.path.isabs(color.python) else color.python,
        environment=tuple((k, moved(v, color.root, release_dir)) for k, v in color.environment),
    )


def own_venv(color: Color) -> str:
    """The virtualenv the color's python belongs to when it lies under the color's root ('' when shared)."""
    if not color.python.startswith(color.root.rstrip("/") + "/"):
        return ""
    bindir = os.path.dirname(color.python)
    return os.path.dirname(bindir) if os.path.basename(bindir) == "bin" else ""


def running(app: App) -> dict[str, str]:
    """Which release each color's root points at (a color still in its own folder is absent)."""
    assert app.deploy is not None
    home = os.path.realpath(app.deploy.releases)
    out = {}
    for color in app.colors:
        where = links.resolved(color.root.rstrip("/"))
        if where and os.path.dirname(where) == home:
            out[color.name] = os.path.basename(where)
    return out


def to_prune(names: Iterable[str], built: list[Release], keep: int, protected: Collection[str]) -> list[str]:
    """Folders of the releases folder to remove: all but the newest ``keep`` built releases and ``protected``.

    Unfinished builds and colors' old folders go too; names that are none of ours are left alone.
    """
    kept = {r.id for r in built[-keep:]} | set(protected)
    return sorted(n for n in names if (RELEASE_ID.match(n) or LEGACY.match(n)) and n not in kept)


def owner(app: App) -> tuple[int, int]:
    """uid and gid of the app's user (root's when the app names none)."""
    if not app.user:
        return os.geteuid(), os.getegid()
    entry = pwd.getpwnam(app.user)
    return entry.pw_uid, entry.pw_gid


def ensure_home(app: App) -> None:
    """The releases folder, the app user's, made by root without following any link (apptree)."""
    assert app.deploy is not None
    home = app.deploy.releases
    uid, gid = owner(app)
    try:
        apptree.make_dir(os.path.dirname(home), home, uid, gid, 0o755)
    except OSError as exc:
        raise ReleaseError(f"cannot make the releases folder {home}: {exc}") from None


def point(app: App, color: Color, release_id: str) -> None:
    """Make ``color``'s root lead to the release (the color is stopped).

    A color still in its own folder (before its first release) has that folder moved into the releases
    folder, where pruning removes it. The link is the release's owner's, so nginx (``disable_symlinks
    if_not_owner``) follows it to the static files.
    """
    link = color.root.rstrip("/")
    target = folder(app, release_id)
    try:
        st = os.lstat(target)
        if os.path.lexists(link) and not os.path.islink(link):
            move_aside(app, link, f"before-releases-{color.name}-{int(time.time())}")
        links.atomic_symlink(link, target, (st.st_uid, st.st_gid))
    except OSError as exc:
        raise ReleaseError(f"cannot point {link} at {target}: {exc}") from None


def move_aside(app: App, path: str, name: str) -> str:
    """Rename folder ``path`` (in a root-owned folder) to ``name`` in the releases folder, no link followed."""
    assert app.deploy is not None
    home = app.deploy.releases
    anchor = apptree.open_anchor(os.path.dirname(path))
    try:
        with apptree.walk_to(os.path.dirname(home), [os.path.basename(home)]) as fd:
            os.rename(os.path.basename(path), name, src_dir_fd=anchor, dst_dir_fd=fd)
    finally:
        os.close(anchor)
    return os.path.join(home, name)


# a virtualenv copied with hard links still names its old folder in bin/ (shebangs, activate): those files are
# written anew (a new inode: the release copied from keeps its own), run as the app user by the copy's python
RELOCATE = r"""
import os, sys
venv = sys.argv[1]
bindir = os.path.join(venv, "bin")
with open(os.path.join(bindir, "pip"), "rb") as f:
    line = f.readline()
old = os.path.dirname(os.path.dirname(line[2:].strip().split()[0]))
for name in os.listdir(bindir):
    path = os.path.join(bindir, name)
    if os.path.islink(path) or not os.path.isfile(path):
        continue
    with open(path, "rb") as f:
        data = f.read()
    if old not in data:
        continue
    tmp = path + ".bluegreen"
    with open(tmp, "wb") as f:
        f.write(data.replace(old, venv.encode()))
    os.chmod(tmp, os.stat(path).st_mode & 0o7777)
    os.replace(tmp, path)
"""


def copy_venv_argvs(source: str, dest: str) -> list[tuple[str, ...]]:
    """Commands that make ``dest`` a copy of the virtualenv ``source``: hard links, then bin/ rewritten.

    pip replaces a file by unlinking it first, so installing into the copy later never writes through
    a link into the release it came from.
    """
    return [("cp", "-a", "--link", "--", source, dest), (f"{dest}/bin/python", "-c", RELOCATE, dest)]


def fresh_venv_argvs(base_python: str, dest: str) -> list[tuple[str, ...]]:
    """Commands that make a new virtualenv at ``dest`` (no release to copy one from)."""
    return [(base_python, "-m", "venv", dest)]


def remove_argv(app: App, names: Iterable[str]) -> tuple[str, ...]:
    """``rm -rf`` of release folders (run as the app user: the folders are its own)."""
    return ("rm", "-rf", "--", *(folder(app, n) for n in names))

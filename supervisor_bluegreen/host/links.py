"""Move traffic between colors, and read which color is live from the real world.

Socket mode (default): re-point the live socket (and live static) symlink with a temp link and
``rename``, which is atomic; ``ln -sfn`` is not (it unlinks, then links). Nginx mode (the seed's):
point the enabled site link at the color's site file, ``nginx -t``, reload, and see new workers.
Either way the live color is whatever the links say, so a crash between the flip and the state
write is reconciled from the links.
"""

from __future__ import annotations

import os
import time
from typing import Callable

from supervisor_bluegreen.host import nginx, runner
from supervisor_bluegreen.shared.config import App, Color
from supervisor_bluegreen.shared.errors import BluegreenError

COMMAND_TIMEOUT = 30.0  # seconds nginx's configured test or reload command may take


class SwitchError(BluegreenError):
    """Traffic could not be moved; the links are back as they were."""


def atomic_symlink(link: str, target: str, owner: tuple[int, int] | None = None) -> None:
    """Make ``link`` point at ``target`` in one rename: there is no instant without a link.

    ``owner`` (uid, gid): the link's own owner, set before the rename (never on what it leads to).
    """
    tmp = os.path.join(os.path.dirname(link), f".{os.path.basename(link)}.{os.getpid()}.tmp")
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(target, tmp)
    if owner is not None:
        os.lchown(tmp, *owner)
    os.replace(tmp, link)


def link_owner(app: App, link: str, target: str) -> tuple[int, int] | None:
    """Who the live static link must belong to: the owner of the static root it leads to.

    nginx follows a symlink under the static roots only to what the link's own owner owns
    (``disable_symlinks if_not_owner`` in the site), so a link root made to the app user's folder
    would be refused. The entry itself is looked at (lstat), never followed. None: any other link,
    or a target that is not there yet.
    """
    if not link or link != app.live_static:
        return None
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return None
    return st.st_uid, st.st_gid


def read_link(link: str) -> str | None:
    try:
        return os.readlink(link)
    except OSError:
        return None


class LiveLinkError(BluegreenError):
    """The deciding link exists but points at no configured color: nothing may guess which one serves."""


def resolved(link: str) -> str | None:
    """Where ``link`` leads, as an absolute real path (relative link text read from the link's folder)."""
    text = read_link(link)
    if text is None:
        return None
    return os.path.realpath(os.path.join(os.path.dirname(link), text))


def planned_links(app: App, color: Color) -> list[tuple[str, str]]:
    """(link, target) pairs that make ``color`` live; the last one decides, so it goes last.

    Static files and the workers' root first: pages of the new color find their assets, and
    workers restarted after the switch find the new code.
    """
    first = [(app.live_static, color.static_root)] if app.live_static else []
    first += [(app.live_root, color.root)] if app.live_root else []
    if app.switch_mode == "nginx":
        assert app.nginx is not None
        return [*first, (app.nginx.enabled_link, nginx.site_path(app, color))]
    return [*first, (app.live_socket, color.socket)]


def live_color(app: App) -> str | None:
    """The color the links make live right now, or None before the first switch.

    What the link means counts, not how it is spelled: ``abiapp.live.sock -> abiapp.blue.sock``
    (relative, as ``ln -sfn`` writes it) is as live as the absolute path. A link that leads to
    no configured color raises LiveLinkError: a deploy that guessed would build into the live color.
    """
    link = planned_links(app, app.colors[0])[-1][0]
    where = resolved(link)
    if where is None:
        return None
    for color in app.colors:
        if where == os.path.realpath(planned_links(app, color)[-1][1]):
            return color.name
    targets = ", ".join(f"{c.name}: {planned_links(app, c)[-1][1]}" for c in app.colors)
    raise LiveLinkError(
        f"{link} points at {read_link(link)!r} ({where}), which is no color of {app.name} ({targets}); "
        f"repair it by hand, e.g. `ln -sfn <the serving color's path> {link}`, or remove it, then try again"
    )


def point(app: App, color: Color) -> None:
    """Re-point every link at ``color``."""
    for link, target in planned_links(app, color):
        atomic_symlink(link, target, link_owner(app, link, target))


def restore(app: App, before: dict[str, str | None]) -> None:
    """Put links back to what ``before`` recorded (removing links that did not exist)."""
    for link, target in before.items():
        if target is None:
            if os.path.lexists(link):
                os.unlink(link)
        else:
            atomic_symlink(link, target, link_owner(app, link, os.path.join(os.path.dirname(link), target)))


def write_sites(app: App) -> None:
    """Render both per-color site files of nginx mode (atomically, so nginx never reads half a file)."""
    for color in app.colors:
        path = nginx.site_path(app, color)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(nginx.render_site(app, color))
        os.replace(tmp, path)


def reload_nginx(app: App, log: Callable[[str], None]) -> None:
    """``nginx -t`` then reload, and wait until a new worker shows the reload was applied."""
    assert app.nginx is not None
    code, out = runner.status_and_output(app.nginx.test_cmd, timeout=COMMAND_TIMEOUT)
    if code != 0:
        raise SwitchError(f"nginx config test failed ({' '.join(app.nginx.test_cmd)}): {out}")
    before = nginx.worker_pids(app.nginx.pidfile)
    if not before:
        raise SwitchError(f"nginx is not running (no workers of the master in {app.nginx.pidfile})")
    code, out = runner.status_and_output(app.nginx.reload_cmd, timeout=COMMAND_TIMEOUT)
    if code != 0:
        raise SwitchError(f"nginx reload failed ({' '.join(app.nginx.reload_cmd)}): {out}")
    deadline = time.monotonic() + app.nginx.verify_timeout
    while time.monotonic() < deadline:
        now = nginx.worker_pids(app.nginx.pidfile)
        if now - before:
            log(f"nginx reloaded: workers {sorted(now - before)} started")
            return
        time.sleep(0.02)
    raise SwitchError(f"nginx reload was not applied within {app.nginx.verify_timeout:g} s (no new workers)")


def flip(app: App, color: Color, log: Callable[[str], None]) -> None:
    """Send new traffic to ``color``; on any failure the links are restored and SwitchError raised."""
    before = {link: read_link(link) for link, _ in planned_links(app, color)}
    try:
        if app.switch_mode == "nginx":
            write_sites(app)
        point(app, color)
        if app.switch_mode == "nginx":
            reload_nginx(app, log)
    except (SwitchError, OSError) as exc:
        restore(app, before)
        if app.nginx is not None and nginx.worker_pids(app.nginx.pidfile):
            # re-apply the old site; harmless when nginx never left it
            runner.status_and_output(app.nginx.reload_cmd, timeout=COMMAND_TIMEOUT)
        raise SwitchError(str(exc)) from exc

"""nginx site files: render from the jinja2 template, test, reload, and see the reload happen.

``nginx -s reload`` exits 0 even when the master could not apply the new config, so a reload
is judged by its effect: a worker pid that was not there before.
"""

from __future__ import annotations

import os
import re

import psutil

from supervisor_bluegreen.host import templating
from supervisor_bluegreen.shared.config import App, Color


def upstream_name(app: App) -> str:
    """An nginx identifier for the app's upstream block."""
    return "bluegreen_" + re.sub(r"[^A-Za-z0-9_]", "_", app.name)


def static_roots(app: App, color: Color | None) -> list[str]:
    """Where /static/ is looked up, in order: the live (or site's) color first, then every color."""
    if not all(c.static_root for c in app.colors):
        return []
    first = [app.live_static] if color is None and app.live_static else [color.static_root] if color else []
    return first + [c.static_root for c in app.colors if c.static_root not in first]


def render_site(app: App, color: Color | None = None) -> str:
    """The site config: for the live symlink (socket mode) or pinned to ``color`` (nginx mode)."""
    return templating.render_file(
        app.nginx_template,
        app=app,
        color=color,
        upstream_name=upstream_name(app),
        cache_map=f"$bluegreen_static_cache_{upstream_name(app)}",
        upstream_socket=color.socket if color else app.live_socket,
        static_roots=static_roots(app, color),
    )


def site_path(app: App, color: Color) -> str:
    """The per-color site file of nginx mode."""
    assert app.nginx is not None
    return os.path.join(app.nginx.sites_dir, f"{app.name}.{color.name}.conf")


def master_pid(pidfile: str) -> int | None:
    try:
        with open(pidfile, encoding="ascii") as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return None
    return pid if psutil.pid_exists(pid) else None


def worker_pids(pidfile: str) -> set[int]:
    """Pids of the nginx master's children (its workers), empty when nginx is not running."""
    pid = master_pid(pidfile)
    if pid is None:
        return set()
    try:
        return {p.pid for p in psutil.Process(pid).children()}
    except psutil.NoSuchProcess:
        return set()

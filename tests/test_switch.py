"""Tests for supervisor_bluegreen.host.links: symlinks on disk are the truth about which color is live."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import shop_config

from supervisor_bluegreen.host import links, nginx, runner
from supervisor_bluegreen.shared import config
from supervisor_bluegreen.shared.config import App


def socket_app(tmp_path: Path, static: bool = True) -> App:
    extra = {"static_root": f"{tmp_path}/%(color)s/static", "live_static": f"{tmp_path}/run/shop.live-static"}
    return config.parse(shop_config(tmp_path, **(extra if static else {}))).app()


def nginx_app(tmp_path: Path, test_cmd: str = "/bin/true") -> App:
    """nginx mode with harmless commands and a pid file that does not exist: no real nginx is touched."""
    for d in ("sites-available", "sites-enabled"):
        (tmp_path / d).mkdir(exist_ok=True)
    text = (
        "[app:shop]\n"
        "program = shop_%(color)s\n"
        f"socket = {tmp_path}/run/shop.%(color)s.sock\n"
        "public_url = http://127.0.0.1/health\n"
        "switch = nginx\n"
        f"nginx_sites = {tmp_path}/sites-available\n"
        f"nginx_enabled = {tmp_path}/sites-enabled/shop.conf\n"
        f"nginx_test = {test_cmd}\n"
        "nginx_reload = /bin/true\n"
        f"nginx_pidfile = {tmp_path}/nginx.pid\n"
        "nginx_verify_timeout = 0.2\n"
    )
    return config.parse(text).app()


def quiet(message: str) -> None:
    """A switch log that goes nowhere."""


# --------------------------------------------------------------------------------------------
# atomic_symlink


def test_atomic_symlink_creates_and_replaces_leaving_no_temp_link(tmp_path: Path) -> None:
    link = tmp_path / "live.sock"
    links.atomic_symlink(str(link), "/srv/shop/blue.sock")
    assert os.readlink(link) == "/srv/shop/blue.sock"
    links.atomic_symlink(str(link), "/srv/shop/green.sock")
    assert os.readlink(link) == "/srv/shop/green.sock"
    assert os.listdir(tmp_path) == ["live.sock"]


def test_atomic_symlink_over_a_leftover_temp_link(tmp_path: Path) -> None:
    """A temp link left by a crash (same pid after restart) does not block the next switch."""
    link = tmp_path / "live.sock"
    os.symlink("/stale", tmp_path / f".live.sock.{os.getpid()}.tmp")
    links.atomic_symlink(str(link), "/srv/shop/blue.sock")
    assert os.readlink(link) == "/srv/shop/blue.sock"
    assert os.listdir(tmp_path) == ["live.sock"]


def test_read_link(tmp_path: Path) -> None:
    assert links.read_link(str(tmp_path / "none")) is None
    (tmp_path / "file").write_text("x")
    assert links.read_link(str(tmp_path / "file")) is None
    os.symlink("dangling-target", tmp_path / "l")
    assert links.read_link(str(tmp_path / "l")) == "dangling-target"


# --------------------------------------------------------------------------------------------
# planned_links / live_color / point / restore


def test_planned_links_socket_mode_static_first_socket_last(tmp_path: Path) -> None:
    app = socket_app(tmp_path)
    assert links.planned_links(app, app.color("green")) == [
        (f"{tmp_path}/run/shop.live-static", f"{tmp_path}/green/static"),
        (f"{tmp_path}/run/shop.live.sock", f"{tmp_path}/run/shop.green.sock"),
    ]


def test_planned_links_socket_mode_without_static(tmp_path: Path) -> None:
    app = socket_app(tmp_path, static=False)
    assert links.planned_links(app, app.color("blue")) == [
        (f"{tmp_path}/run/shop.live.sock", f"{tmp_path}/run/shop.blue.sock")
    ]


def test_planned_links_nginx_mode(tmp_path: Path) -> None:
    app = nginx_app(tmp_path)
    assert links.planned_links(app, app.color("green")) == [
        (f"{tmp_path}/sites-enabled/shop.conf", f"{tmp_path}/sites-available/shop.green.conf")
    ]


def test_live_color_follows_the_links(tmp_path: Path) -> None:
    app = socket_app(tmp_path)
    assert links.live_color(app) is None
    links.point(app, app.color("blue"))
    assert links.live_color(app) == "blue"
    assert os.readlink(tmp_path / "run" / "shop.live-static") == f"{tmp_path}/blue/static"
    links.point(app, app.color("green"))
    assert links.live_color(app) == "green"
    assert os.readlink(tmp_path / "run" / "shop.live.sock") == f"{tmp_path}/run/shop.green.sock"
    assert os.readlink(tmp_path / "run" / "shop.live-static") == f"{tmp_path}/green/static"
    assert sorted(os.listdir(tmp_path / "run")) == ["shop.live-static", "shop.live.sock"]


def test_a_link_to_no_color_is_refused_naming_where_it_points(tmp_path: Path) -> None:
    app = socket_app(tmp_path)
    os.symlink("/somewhere/else.sock", app.live_socket)
    with pytest.raises(links.LiveLinkError) as err:
        links.live_color(app)
    assert f"{app.live_socket} points at '/somewhere/else.sock'" in str(err.value)
    assert "ln -sfn" in str(err.value)


def test_a_relative_live_link_means_the_same_color(tmp_path: Path) -> None:
    """``ln -sfn shop.blue.sock shop.live.sock`` (relative, as a hand repair writes it) is blue live."""
    app = socket_app(tmp_path)
    os.symlink("shop.blue.sock", app.live_socket)
    assert links.live_color(app) == "blue"
    os.unlink(app.live_socket)
    os.symlink("../run/./shop.green.sock", app.live_socket)
    assert links.live_color(app) == "green"


def test_a_relative_enabled_site_link_means_the_same_color_in_nginx_mode(tmp_path: Path) -> None:
    app = nginx_app(tmp_path)
    os.symlink("../sites-available/shop.green.conf", app.nginx.enabled_link)
    assert links.live_color(app) == "green"


def test_live_color_nginx_mode(tmp_path: Path) -> None:
    app = nginx_app(tmp_path)
    assert links.live_color(app) is None
    links.point(app, app.color("green"))
    assert links.live_color(app) == "green"


def test_restore_with_none_removes_links_and_with_target_recreates(tmp_path: Path) -> None:
    app = socket_app(tmp_path)
    links.point(app, app.color("blue"))
    before = {link: None for link, _ in links.planned_links(app, app.color("blue"))}
    links.restore(app, before)
    assert os.listdir(tmp_path / "run") == []
    assert links.live_color(app) is None
    links.restore(app, before)  # nothing to remove: harmless
    links.restore(app, {app.live_socket: app.color("green").socket})
    assert links.live_color(app) == "green"


# --------------------------------------------------------------------------------------------
# flip


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a link to another user needs root")
def test_the_live_static_link_belongs_to_the_static_roots_owner_after_point_and_restore(tmp_path: Path) -> None:
    """Issue 13: nginx (disable_symlinks if_not_owner) follows the live link only when its owner owns the root."""
    app = socket_app(tmp_path)
    for color in app.colors:
        Path(color.static_root).mkdir(parents=True)
        os.chown(color.static_root, 65534, 65534)
    links.point(app, app.color("blue"))
    owners = {link: (os.lstat(link).st_uid, os.lstat(link).st_gid) for link in (app.live_static, app.live_socket)}
    assert owners == {app.live_static: (65534, 65534), app.live_socket: (0, 0)}  # the socket link stays root's
    assert os.stat(app.color("blue").static_root).st_uid == 65534  # the root itself is untouched
    os.unlink(app.live_static)
    os.symlink(os.path.relpath(app.color("green").static_root, tmp_path / "run"), app.live_static)
    links.restore(app, {app.live_static: "../blue/static"})  # a relative link, as `ln -s` writes it
    assert os.readlink(app.live_static) == "../blue/static" and os.lstat(app.live_static).st_uid == 65534


def test_flip_socket_mode(tmp_path: Path) -> None:
    app = socket_app(tmp_path)
    links.flip(app, app.color("blue"), quiet)
    assert links.live_color(app) == "blue"
    links.flip(app, app.color("green"), quiet)
    assert links.live_color(app) == "green"
    assert os.readlink(app.live_static) == app.color("green").static_root


@pytest.mark.integration
def test_flip_nginx_mode_failed_test_restores_previous_link(tmp_path: Path) -> None:
    app = nginx_app(tmp_path, test_cmd="/bin/false")
    links.write_sites(app)
    links.point(app, app.color("blue"))
    enabled = Path(app.nginx.enabled_link)
    with pytest.raises(links.SwitchError) as err:
        links.flip(app, app.color("green"), quiet)
    assert str(err.value).startswith("nginx config test failed (/bin/false)")
    assert os.readlink(enabled) == nginx.site_path(app, app.color("blue"))
    assert links.live_color(app) == "blue"
    assert os.listdir(tmp_path / "sites-enabled") == ["shop.conf"]
    # both per-color site files were written, each pinned to its color
    for color in app.colors:
        site = Path(nginx.site_path(app, color)).read_text()
        assert f"server unix:{color.socket} " in site
        assert f"add_header X-Bluegreen-Site {color.name} always;" in site
    assert sorted(os.listdir(tmp_path / "sites-available")) == ["shop.blue.conf", "shop.green.conf"]


@pytest.mark.integration
def test_flip_nginx_mode_failed_test_with_no_previous_link_removes_it(tmp_path: Path) -> None:
    app = nginx_app(tmp_path, test_cmd="/bin/false")
    with pytest.raises(links.SwitchError, match=r"^nginx config test failed \(/bin/false\)"):
        links.flip(app, app.color("green"), quiet)
    assert not os.path.lexists(app.nginx.enabled_link)
    assert links.live_color(app) is None


@pytest.mark.integration
def test_flip_nginx_mode_names_the_test_output(tmp_path: Path) -> None:
    script = tmp_path / "nginx-t"
    script.write_text("#!/bin/sh\necho 'nginx: [emerg] unknown directive \"prxy_pass\"' >&2\nexit 1\n")
    script.chmod(0o755)
    app = nginx_app(tmp_path, test_cmd=str(script))
    with pytest.raises(links.SwitchError) as err:
        links.flip(app, app.color("blue"), quiet)
    assert str(err.value) == f'nginx config test failed ({script}): nginx: [emerg] unknown directive "prxy_pass"'


@pytest.mark.integration
def test_flip_nginx_mode_without_running_nginx_restores(tmp_path: Path) -> None:
    """The test passes but no nginx master runs (pid file missing): nothing is left half-switched."""
    app = nginx_app(tmp_path, test_cmd="/bin/true")
    links.write_sites(app)
    links.point(app, app.color("blue"))
    with pytest.raises(links.SwitchError) as err:
        links.flip(app, app.color("green"), quiet)
    assert str(err.value) == f"nginx is not running (no workers of the master in {tmp_path}/nginx.pid)"
    assert links.live_color(app) == "blue"


def test_run_reports_a_missing_command() -> None:
    code, out = runner.status_and_output(("/nonexistent/nginx", "-t"))
    assert code == 127
    assert "/nonexistent/nginx" in out

"""Tests for supervisor_bluegreen.nginx: the rendered site, and a real nginx following the live symlink.

The real-nginx test is the claim socket mode rests on: re-pointing the live socket symlink moves
new requests to the other color with no nginx reload, and static files of either color are served.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from conftest import ServerFactory, stop_process, write_nginx_conf

from example.stack import free_port
from supervisor_bluegreen import config, nginx, switch
from supervisor_bluegreen.config import App

NGINX = "/usr/sbin/nginx"


def make_app(tmp_path: Path, name: str = "shop", listen: str = "80", **extra: str) -> App:
    options = {
        "program": f"{name}_%(color)s",
        "socket": f"{tmp_path}/run/{name}.%(color)s.sock",
        "live_socket": f"{tmp_path}/run/{name}.live.sock",
        "live_static": f"{tmp_path}/run/{name}.live-static",
        "static_root": f"{tmp_path}/%(color)s/static",
        "public_url": "http://127.0.0.1/health",
        "listen": listen,
        "server_name": "shop.example.org",
    }
    options.update(extra)
    text = f"[app:{name}]\n" + "".join(f"{k} = {v}\n" for k, v in options.items() if v)
    return config.parse(text).app()


# --------------------------------------------------------------------------------------------
# render_site and friends


def test_render_site_socket_mode(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    site = nginx.render_site(app)
    assert "upstream bluegreen_shop {" in site
    assert f"server unix:{tmp_path}/run/shop.live.sock fail_timeout=0;" in site
    assert "proxy_pass http://bluegreen_shop;" in site
    assert "listen 80;" in site and "server_name shop.example.org;" in site
    assert (
        f"try_files {tmp_path}/run/shop.live-static/$bluegreen_path {tmp_path}/blue/static/$bluegreen_path "
        f"{tmp_path}/green/static/$bluegreen_path =404;"
    ) in site
    assert "X-Bluegreen-Site" not in site  # the marker belongs to nginx mode only


def test_static_roots_order() -> None:
    app = make_app(Path("/srv"))
    assert nginx.static_roots(app, None) == ["/srv/run/shop.live-static", "/srv/blue/static", "/srv/green/static"]
    assert nginx.static_roots(app, app.color("green")) == ["/srv/green/static", "/srv/blue/static"]


def test_render_site_without_static_roots_has_no_static_location(tmp_path: Path) -> None:
    app = make_app(tmp_path, live_static="", static_root="")
    site = nginx.render_site(app)
    assert "location ~ ^/static/" not in site
    assert "location / {" in site


def test_render_site_nginx_mode_pins_the_color(tmp_path: Path) -> None:
    app = make_app(
        tmp_path,
        switch="nginx",
        live_socket="",
        live_static="",
        nginx_sites=f"{tmp_path}/sa",
        nginx_enabled=f"{tmp_path}/se/shop.conf",
    )
    site = nginx.render_site(app, app.color("green"))
    assert "# nginx site for app shop, color green:" in site
    assert f"server unix:{tmp_path}/run/shop.green.sock fail_timeout=0;" in site
    assert "shop.blue.sock" not in site
    assert site.count("add_header X-Bluegreen-Site green always;") == 2  # static files and proxied pages
    assert f"try_files {tmp_path}/green/static/$bluegreen_path {tmp_path}/blue/static/$bluegreen_path =404;" in site
    assert nginx.site_path(app, app.color("green")) == f"{tmp_path}/sa/shop.green.conf"


def test_upstream_name_sanitises() -> None:
    app = make_app(Path("/srv"), name="my-shop.v2")
    assert nginx.upstream_name(app) == "bluegreen_my_shop_v2"
    site = nginx.render_site(app)
    assert "upstream bluegreen_my_shop_v2 {" in site
    assert "proxy_pass http://bluegreen_my_shop_v2;" in site


def test_worker_pids_without_a_running_master(tmp_path: Path) -> None:
    assert nginx.worker_pids(str(tmp_path / "missing.pid")) == set()
    (tmp_path / "garbage.pid").write_text("not a pid\n")
    assert nginx.worker_pids(str(tmp_path / "garbage.pid")) == set()
    (tmp_path / "empty.pid").write_text("")
    assert nginx.master_pid(str(tmp_path / "empty.pid")) is None
    gone = subprocess.Popen(["/bin/true"])
    gone.wait(timeout=10)  # a pid file left by a master that exited
    (tmp_path / "stale.pid").write_text(f"{gone.pid}\n")
    assert nginx.worker_pids(str(tmp_path / "stale.pid")) == set()


def test_worker_pids_are_the_masters_children(tmp_path: Path) -> None:
    child = subprocess.Popen(["sleep", "30"])
    try:
        (tmp_path / "master.pid").write_text(f"{os.getpid()}\n")
        assert nginx.master_pid(str(tmp_path / "master.pid")) == os.getpid()
        assert child.pid in nginx.worker_pids(str(tmp_path / "master.pid"))
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)


# --------------------------------------------------------------------------------------------
# real nginx, real unix-socket apps


@pytest.fixture
def colors(tmp_path: Path, serve: ServerFactory) -> None:
    """One app server per color on tmp_path/run/shop.<color>.sock, answering "hello from <color>"."""
    (tmp_path / "run").mkdir()
    for color in ("blue", "green"):
        serve(str(tmp_path / "run" / f"shop.{color}.sock"), [(200, f"hello from {color}\n")], color=color)


def start_nginx(tmp_path: Path, site: str, port: int) -> subprocess.Popen[bytes]:
    conf = write_nginx_conf(tmp_path, site, worker_processes=1, worker_connections=64)
    proc = subprocess.Popen(
        [
            NGINX,
            "-p",
            f"{tmp_path}/",
            "-c",
            str(conf),
            "-e",
            str(tmp_path / "error.log"),
            "-g",
            "daemon off;",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"nginx exited {proc.returncode}: {(tmp_path / 'error.log').read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            if nginx.worker_pids(str(tmp_path / "nginx.pid")):
                return proc
        except OSError:
            pass
        time.sleep(0.02)
    stop_nginx(proc)
    raise AssertionError("nginx did not start listening")


def stop_nginx(proc: subprocess.Popen[bytes]) -> None:
    """Stop the nginx master we started (by its pid), and any worker it leaves behind."""
    try:
        workers = psutil.Process(proc.pid).children()
    except psutil.NoSuchProcess:
        workers = []
    stop_process(proc, timeout=10)
    for w in workers:
        try:
            w.wait(timeout=5)
        except psutil.TimeoutExpired:
            os.kill(w.pid, signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass


def get(conn: http.client.HTTPConnection, path: str) -> tuple[int, str, bytes]:
    conn.request("GET", path, headers={"Host": "shop.example.org"})
    resp = conn.getresponse()
    return resp.status, resp.getheader("X-Bluegreen-Color", ""), resp.read()


@pytest.mark.skipif(not os.access(NGINX, os.X_OK), reason="nginx not installed")
def test_real_nginx_follows_the_live_symlink_without_reload(tmp_path: Path, colors: None) -> None:
    port = free_port()
    app = make_app(tmp_path, listen=f"127.0.0.1:{port}")
    for color in app.colors:
        Path(color.static_root).mkdir(parents=True)
        Path(color.static_root, "app.css").write_text(f"/* {color.name} */\n")
    Path(app.color("blue").static_root, "app.1234.css").write_text("/* only in blue */\n")
    switch.point(app, app.color("blue"))

    proc = start_nginx(tmp_path, nginx.render_site(app), port)
    try:
        pidfile = str(tmp_path / "nginx.pid")
        workers = nginx.worker_pids(pidfile)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)  # one keep-alive client throughout
        assert get(conn, "/") == (200, "blue", b"hello from blue\n")
        assert get(conn, "/static/app.css")[::2] == (200, b"/* blue */\n")

        switch.point(app, app.color("green"))
        assert switch.live_color(app) == "green"
        assert get(conn, "/") == (200, "green", b"hello from green\n")
        assert get(conn, "/static/app.css")[::2] == (200, b"/* green */\n")
        # a page rendered by blue just before the switch still finds its hashed asset
        assert get(conn, "/static/app.1234.css")[::2] == (200, b"/* only in blue */\n")
        assert get(conn, "/static/missing.css")[0] == 404
        fresh = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        assert get(fresh, "/")[1] == "green"
        fresh.close()
        conn.close()

        assert nginx.worker_pids(pidfile) == workers  # no reload happened: the same workers served it all
        assert proc.poll() is None
    finally:
        stop_nginx(proc)

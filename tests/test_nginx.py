"""Tests for supervisor_bluegreen.host.nginx: the rendered site, and a real nginx following the live symlink.

The real-nginx test is the claim socket mode rests on: re-pointing the live socket symlink moves
new requests to the other color with no nginx reload, and static files of either color are served.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import jinja2
import psutil
import pytest
from conftest import ServerFactory, nginx_test, stop_process, write_nginx_conf

from example.stack import free_port
from supervisor_bluegreen.host import links, nginx
from supervisor_bluegreen.shared import config
from supervisor_bluegreen.shared.config import App

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


def static_chain(site: str) -> list[tuple[str, str]]:
    """(root, where try_files goes next) of each static location, in the order nginx tries them."""
    return re.findall(r"\n        root (\S+);\n        try_files /\$bluegreen_path (\S+);", site)


def test_render_site_socket_mode(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    site = nginx.render_site(app)
    assert "upstream bluegreen_shop {" in site
    assert f"server unix:{tmp_path}/run/shop.live.sock fail_timeout=0;" in site
    assert "proxy_pass http://bluegreen_shop;" in site
    assert "listen 80;" in site and "server_name shop.example.org;" in site
    assert static_chain(site) == [
        (f"{tmp_path}/run/shop.live-static", "@bluegreen_shop_static_1"),
        (f"{tmp_path}/blue/static", "@bluegreen_shop_static_2"),
        (f"{tmp_path}/green/static", "=404"),
    ]
    assert "location @bluegreen_shop_static_1 {" in site and "location @bluegreen_shop_static_2 {" in site
    # issue 13: nothing outside the static roots can be asked for, and no link leads out of them
    assert "root /;" not in site and site.count("disable_symlinks if_not_owner;") == 3
    assert "X-Bluegreen-Site" not in site  # the marker belongs to nginx mode only


def test_a_template_cannot_reach_python(tmp_path: Path) -> None:
    """Root renders the template: jinja2 must keep it to text (a template that climbs to os.system is refused)."""
    template = tmp_path / "site.j2"
    template.write_text("{{ app.__class__.__init__.__globals__['os'].getcwd() }}\n")
    app = make_app(tmp_path, nginx_template=str(template))
    with pytest.raises(jinja2.exceptions.SecurityError):
        nginx.render_site(app)


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
    assert site.count("add_header X-Bluegreen-Site green always;") == 4  # static locations, pages, maintenance page
    assert static_chain(site) == [
        (f"{tmp_path}/green/static", "@bluegreen_shop_static_1"),
        (f"{tmp_path}/blue/static", "=404"),
    ]
    assert nginx.site_path(app, app.color("green")) == f"{tmp_path}/sa/shop.green.conf"


def test_upstream_name_sanitises() -> None:
    app = make_app(Path("/srv"), name="my-shop.v2")
    assert nginx.upstream_name(app) == "bluegreen_my_shop_v2"
    site = nginx.render_site(app)
    assert "upstream bluegreen_my_shop_v2 {" in site
    assert "proxy_pass http://bluegreen_my_shop_v2;" in site


@pytest.mark.integration
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


@pytest.mark.integration
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


@pytest.mark.integration
@pytest.mark.skipif(not os.access(NGINX, os.X_OK), reason="nginx not installed")
def test_real_nginx_follows_the_live_symlink_without_reload(tmp_path: Path, colors: None) -> None:
    port = free_port()
    app = make_app(tmp_path, listen=f"127.0.0.1:{port}")
    for color in app.colors:
        Path(color.static_root).mkdir(parents=True)
        Path(color.static_root, "app.css").write_text(f"/* {color.name} */\n")
    Path(app.color("blue").static_root, "app.1234.css").write_text("/* only in blue */\n")
    links.point(app, app.color("blue"))

    proc = start_nginx(tmp_path, nginx.render_site(app), port)
    try:
        pidfile = str(tmp_path / "nginx.pid")
        workers = nginx.worker_pids(pidfile)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)  # one keep-alive client throughout
        assert get(conn, "/") == (200, "blue", b"hello from blue\n")
        assert get(conn, "/static/app.css")[::2] == (200, b"/* blue */\n")

        links.point(app, app.color("green"))
        assert links.live_color(app) == "green"
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


# --------------------------------------------------------------------------------------------
# the site for real deployments: HTTPS, /media/, X-Forwarded-Proto, body size, caching of hashed names only


def self_signed(tmp_path: Path) -> tuple[str, str]:
    cert, key = str(tmp_path / "site.crt"), str(tmp_path / "site.key")
    subject = ["-subj", "/CN=shop.example.org", "-keyout", key, "-out", cert]
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", *subject],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def test_default_server_name_is_not_debians_catch_all(tmp_path: Path) -> None:
    app = make_app(tmp_path, server_name="")
    assert app.server_name == "localhost"
    app = make_app(tmp_path, server_name="", public_host="shop.example.org")
    assert app.server_name == "shop.example.org"
    assert "server_name _;" not in nginx.render_site(app)


def test_render_site_for_real_deployments(tmp_path: Path) -> None:
    app = make_app(
        tmp_path,
        ssl_certificate="/etc/ssl/shop.crt",
        ssl_certificate_key="/etc/ssl/shop.key",
        media_root=f"{tmp_path}/media/",
        client_max_body_size="50m",
    )
    site = nginx.render_site(app)
    assert "return 301 https://$host$request_uri;" in site
    assert "listen 443 ssl;" in site and "ssl_certificate /etc/ssl/shop.crt;" in site
    assert f"location /media/ {{\n        alias {tmp_path}/media/;\n        disable_symlinks if_not_owner;" in site
    assert "client_max_body_size 50m;" in site
    assert "proxy_set_header X-Forwarded-Proto $scheme;" in site
    assert "expires 7d" not in site  # unhashed static files are never cached blind
    assert '"~\\.[0-9a-f]{12}\\.[A-Za-z0-9]+$" "public, max-age=31536000, immutable";' in site


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"ssl_certificate": "/etc/ssl/a.crt"}, "ssl_certificate and ssl_certificate_key go together"),
        ({"media_url": "media"}, "must start and end with '/'"),
        ({"client_max_body_size": "lots"}, "is not an nginx size"),
        ({"server_name": "a; include /etc/passwd"}, "must not contain"),
        ({"media_root": "relative/media"}, "must be an absolute path"),
    ],
)
def test_site_options_are_validated(options: dict[str, str], fragment: str) -> None:
    with pytest.raises(config.ConfigError) as exc:
        make_app(Path("/srv"), **options)
    assert fragment in str(exc.value)


@pytest.mark.integration
@pytest.mark.skipif(not os.access(NGINX, os.X_OK), reason="nginx not installed")
@pytest.mark.parametrize("variant", ["http", "https", "https-nginx-mode", "no-static"])
def test_every_site_variant_passes_nginx_test(tmp_path: Path, variant: str) -> None:
    options: dict[str, str] = {"media_root": f"{tmp_path}/media", "listen": "127.0.0.1:8080"}
    if variant.startswith("https"):
        cert, key = self_signed(tmp_path)
        options.update(ssl_certificate=cert, ssl_certificate_key=key, ssl_listen="127.0.0.1:8443")
    if variant == "no-static":
        options.update(live_static="", static_root="", media_root="")
    if variant.endswith("nginx-mode"):
        options.update(switch="nginx", live_socket="", live_static="", nginx_sites="/x/sa", nginx_enabled="/x/se/s")
    app = make_app(tmp_path, **options)
    site = nginx.render_site(app, app.color("blue") if app.switch_mode == "nginx" else None)
    proc = nginx_test(tmp_path, site)
    assert proc.returncode == 0, f"{site}\n{proc.stderr}"


@pytest.mark.integration
@pytest.mark.skipif(not os.access(NGINX, os.X_OK), reason="nginx not installed")
def test_real_nginx_caches_hashed_static_names_only_and_serves_media(tmp_path: Path, serve: ServerFactory) -> None:
    (tmp_path / "run").mkdir()
    blue = serve(str(tmp_path / "run" / "shop.blue.sock"), [(200, "hello\n")], color="blue")
    serve(str(tmp_path / "run" / "shop.green.sock"), [(200, "hello\n")], color="green")
    port = free_port()
    app = make_app(tmp_path, listen=f"127.0.0.1:{port}", media_root=f"{tmp_path}/media")
    for color in app.colors:
        Path(color.static_root).mkdir(parents=True)
    Path(app.color("blue").static_root, "app.css").write_text("plain\n")
    Path(app.color("blue").static_root, "app.0123456789ab.css").write_text("hashed\n")
    Path(tmp_path, "media").mkdir()
    Path(tmp_path, "media", "upload.txt").write_text("uploaded\n")
    links.point(app, app.color("blue"))
    proc = start_nginx(tmp_path, nginx.render_site(app), port)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)

        def fetch(path: str) -> tuple[int, str, bytes]:
            conn.request("GET", path, headers={"Host": "shop.example.org"})
            resp = conn.getresponse()
            return resp.status, resp.getheader("Cache-Control", ""), resp.read()

        assert fetch("/static/app.0123456789ab.css") == (200, "public, max-age=31536000, immutable", b"hashed\n")
        assert fetch("/static/app.css") == (200, "no-cache", b"plain\n")
        assert fetch("/media/upload.txt")[::2] == (200, b"uploaded\n")
        assert fetch("/")[::2] == (200, b"hello\n")
        conn.close()
        assert blue.requests[-1][1].get("X-Forwarded-Proto") == "http"
    finally:
        stop_nginx(proc)


@pytest.mark.integration
@pytest.mark.skipif(not os.access(NGINX, os.X_OK), reason="nginx not installed")
def test_real_nginx_https_site_serves_https_and_loopback_http(tmp_path: Path, serve: ServerFactory) -> None:
    import ssl

    (tmp_path / "run").mkdir()
    blue = serve(str(tmp_path / "run" / "shop.blue.sock"), [(200, "hello\n")], color="blue")
    port, tls_port = free_port(), free_port()
    cert, key = self_signed(tmp_path)
    app = make_app(
        tmp_path,
        listen=f"127.0.0.1:{port}",
        ssl_listen=f"127.0.0.1:{tls_port}",
        ssl_certificate=cert,
        ssl_certificate_key=key,
        live_static="",
        static_root="",
    )
    links.point(app, app.color("blue"))
    proc = start_nginx(tmp_path, nginx.render_site(app), port)
    try:
        plain = http.client.HTTPConnection("127.0.0.1", port, timeout=5)  # bluegreen's own check: from loopback
        plain.request("GET", "/", headers={"Host": "shop.example.org"})
        assert plain.getresponse().status == 200
        context = ssl.create_default_context(cafile=cert)
        context.check_hostname = False
        tls = http.client.HTTPSConnection("127.0.0.1", tls_port, timeout=5, context=context)
        tls.request("GET", "/", headers={"Host": "shop.example.org"})
        resp = tls.getresponse()
        assert (resp.status, resp.read()) == (200, b"hello\n")
        assert blue.requests[-1][1].get("X-Forwarded-Proto") == "https"
    finally:
        stop_nginx(proc)


# --------------------------------------------------------------------------------------------
# maintenance: root's page, checked by nginx on each request (no reload)


def test_render_site_answers_503_with_the_maintenance_page(tmp_path: Path) -> None:
    app = make_app(tmp_path, maintenance_dir=f"{tmp_path}/www", maintenance_retry_after="300")
    site = nginx.render_site(app)
    assert f"if (-f {tmp_path}/www/shop.html) {{\n            return 503;" in site
    assert "error_page 503 @bluegreen_shop_maintenance;" in site
    assert f"root {tmp_path}/www;\n        try_files /shop.html =503;\n        disable_symlinks on;" in site
    assert "add_header Retry-After 300 always;" in site
    static = site.split("location ~ ^/static/", 1)[1].split("}", 1)[0]
    assert "return 503" not in static and "maintenance" not in static  # static files stay served


@pytest.mark.integration
@pytest.mark.skipif(not os.access(NGINX, os.X_OK), reason="nginx not installed")
def test_real_nginx_serves_the_maintenance_page_without_reload(tmp_path: Path, colors: None) -> None:
    from supervisor_bluegreen.shared import maintenance

    port = free_port()
    app = make_app(tmp_path, listen=f"127.0.0.1:{port}", maintenance_dir=f"{tmp_path}/www")
    for color in app.colors:
        Path(color.static_root).mkdir(parents=True)
        Path(color.static_root, "app.css").write_text(f"/* {color.name} */\n")
    links.point(app, app.color("blue"))
    proc = start_nginx(tmp_path, nginx.render_site(app), port)
    try:
        workers = nginx.worker_pids(str(tmp_path / "nginx.pid"))
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)  # one keep-alive client throughout
        assert get(conn, "/") == (200, "blue", b"hello from blue\n")

        maintenance.write_page(app, "Back at 10:00 <UTC>")
        for path in ("/", "/health", "/some/page?x=1"):
            conn.request("GET", path, headers={"Host": "shop.example.org"})
            resp = conn.getresponse()
            body = resp.read().decode()
            assert resp.status == 503, path
            assert resp.getheader("Retry-After") == "60"
            assert resp.getheader("Content-Type", "").startswith("text/html")
            assert "Back at 10:00 &lt;UTC&gt;" in body
        assert get(conn, "/static/app.css")[::2] == (200, b"/* blue */\n")  # static stays served
        assert os.stat(app.maintenance_page).st_mode & 0o777 == 0o644

        assert maintenance.remove_page(app) is True
        assert get(conn, "/") == (200, "blue", b"hello from blue\n")
        conn.close()
        assert nginx.worker_pids(str(tmp_path / "nginx.pid")) == workers  # no reload
    finally:
        stop_nginx(proc)


def test_the_maintenance_page_refuses_a_folder_others_can_write(tmp_path: Path) -> None:
    from supervisor_bluegreen.shared import maintenance
    from supervisor_bluegreen.shared.store import UnsafePath

    www = tmp_path / "www"
    www.mkdir(mode=0o777)
    www.chmod(0o777)
    app = make_app(tmp_path, maintenance_dir=str(www))
    with pytest.raises(UnsafePath, match="writable by everyone"):
        maintenance.write_page(app, "x")
    assert not os.path.lexists(app.maintenance_page)

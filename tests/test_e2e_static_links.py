"""Issue 13: nginx serves only what the app meant from its static and media folders, whatever links the app user makes.

A real nginx (its workers run as root here: the refusal must come from the site, not from file modes)
serves the rendered site. The static roots, the media folder and the run/ folder holding the live static
link belong to the app user, as ``bluegreen init`` lays them out; a forked child that is that user
(``nobody``) plants links to /, /etc and /etc/passwd in them, in place of a static root, and in place of
the live link itself. Each answers 403 or 404 and never a byte of /etc/passwd, while the static files of
both colors and the live link still serve, before and after a switch.
"""

from __future__ import annotations

import http.client
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import ServerFactory, require_nginx
from test_nginx import make_app, start_nginx, stop_nginx
from test_trust import NOBODY, as_app_user

from example.stack import free_port
from supervisor_bluegreen.host import links, nginx

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="acting as the app user needs root")

PASSWD = b"root:x:0:0:"


@pytest.fixture
def site(serve: ServerFactory) -> Iterator[SimpleNamespace]:
    """The app's folders owned by the app user, blue live, and a real nginx serving the rendered site."""
    require_nginx()
    root = Path(tempfile.mkdtemp(prefix="bglinks-", dir="/tmp"))
    proc = None
    try:
        root.chmod(0o755)
        port = free_port()
        app = make_app(root, listen=f"127.0.0.1:{port}", media_root=f"{root}/media")
        (root / "run").mkdir()
        for color in app.colors:
            serve(color.socket, [(200, f"hello from {color.name}\n")], color=color.name)

        def lay_out() -> None:  # as the app user, as collectstatic and uploads make them
            for color in app.colors:
                Path(color.static_root).mkdir(parents=True)
                Path(color.static_root, "app.css").write_text(f"/* {color.name} */\n")
                Path(color.static_root, f"{color.name}.0123456789ab.css").write_text(f"/* only {color.name} */\n")
            Path(root, "media", "upload.txt").write_text("uploaded\n")

        for folder in (root / "blue", root / "green", root / "run", root / "media"):
            folder.mkdir(exist_ok=True)
            os.chown(folder, NOBODY, NOBODY)
        as_app_user(lay_out)
        links.point(app, app.color("blue"))
        proc = start_nginx(root, nginx.render_site(app), port)
        yield SimpleNamespace(root=root, app=app, port=port)
    finally:
        if proc is not None:
            stop_nginx(proc)
        shutil.rmtree(root, ignore_errors=True)


def get(site: SimpleNamespace, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", site.port, timeout=5)
    try:
        conn.request("GET", path, headers={"Host": "shop.example.org"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def refused(site: SimpleNamespace, path: str) -> None:
    status, body = get(site, path)
    assert status in (403, 404) and PASSWD not in body, (path, status, body[:80])


def serves_both_colors(site: SimpleNamespace, live: str) -> None:
    assert get(site, "/static/app.css") == (200, f"/* {live} */\n".encode())
    for color in ("blue", "green"):  # a page rendered by either color finds its hashed assets
        assert get(site, f"/static/{color}.0123456789ab.css") == (200, f"/* only {color} */\n".encode())
    assert get(site, "/media/upload.txt") == (200, b"uploaded\n")


def test_the_live_link_belongs_to_the_owner_of_the_static_root(site: SimpleNamespace) -> None:
    st = os.lstat(site.app.live_static)
    assert (st.st_uid, st.st_gid) == (NOBODY, NOBODY)
    serves_both_colors(site, "blue")
    links.point(site.app, site.app.color("green"))
    assert os.lstat(site.app.live_static).st_uid == NOBODY
    serves_both_colors(site, "green")


def test_links_planted_in_a_static_root_and_in_media_are_not_followed(site: SimpleNamespace) -> None:
    blue, media = site.app.color("blue").static_root, site.root / "media"

    def plant() -> None:
        os.symlink("/etc", f"{blue}/etc")
        os.symlink("/etc/passwd", f"{blue}/passwd.css")
        os.symlink("/", f"{blue}/all")
        os.symlink("/etc/passwd", media / "passwd.txt")
        os.symlink("/etc", media / "etc")

    as_app_user(plant)
    for path in ("/static/etc/passwd", "/static/passwd.css", "/static/all/etc/passwd", "/media/passwd.txt",
                 "/media/etc/passwd"):  # fmt: skip
        refused(site, path)
    serves_both_colors(site, "blue")


def test_a_static_root_replaced_by_a_link_to_root_serves_nothing_of_it(site: SimpleNamespace) -> None:
    blue = site.app.color("blue").static_root

    def replace() -> None:
        os.rename(blue, f"{blue}.old")
        os.symlink("/", blue)

    as_app_user(replace)
    refused(site, "/static/etc/passwd")
    refused(site, "/static/var/log/nginx/access.log")
    # green's files still serve, and once green is live, its unhashed names too
    assert get(site, "/static/green.0123456789ab.css") == (200, b"/* only green */\n")
    links.point(site.app, site.app.color("green"))
    refused(site, "/static/etc/passwd")
    assert get(site, "/static/app.css") == (200, b"/* green */\n")


def test_the_live_link_replaced_by_a_link_to_root_serves_nothing_of_it(site: SimpleNamespace) -> None:
    live = site.app.live_static

    def replace() -> None:  # run/ is the app user's (gunicorn makes its sockets there): it can re-point the link
        os.symlink("/", f"{live}.evil")
        os.rename(f"{live}.evil", live)

    as_app_user(replace)
    refused(site, "/static/etc/passwd")
    assert get(site, "/static/blue.0123456789ab.css") == (200, b"/* only blue */\n")  # the colors' roots still serve

"""Tests for supervisor_bluegreen.host.health against real tiny HTTP servers.

Each color's server listens on a unix socket under tmp_path, as gunicorn does behind nginx;
the http:// URL target (the public check through nginx) gets a server on 127.0.0.1.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

from conftest import ServerFactory

from example.stack import free_port
from supervisor_bluegreen.host.health import Probe, gate, probe
from supervisor_bluegreen.shared.config import HealthCheck

FAST = HealthCheck(interval=0.01, timeout=1.0, passes=3, deadline=5.0)


# --------------------------------------------------------------------------------------------
# probe()


def test_probe_ok(tmp_path: Path, serve: ServerFactory) -> None:
    sock = str(tmp_path / "blue.sock")
    srv = serve(sock, [(200, "ok 1.2.3")])
    result = probe(sock, HealthCheck(body="ok"))
    assert result.ok is True
    assert result.status == 200
    assert result.detail == "status 200"
    assert result.headers["x-bluegreen-color"] == "blue"
    assert result.elapsed_ms < 1000
    assert result.describe().startswith("ok status 200 (")
    assert srv.paths == ["/health"]


def test_probe_wrong_status(tmp_path: Path, serve: ServerFactory) -> None:
    sock = str(tmp_path / "blue.sock")
    serve(sock, [(503, "starting")])
    result = probe(sock, HealthCheck())
    assert (result.ok, result.status, result.detail) == (False, 503, "status 503, expected 200")
    assert result.describe().startswith("FAIL status 503, expected 200 (")


def test_probe_expected_non_200_status(tmp_path: Path, serve: ServerFactory) -> None:
    sock = str(tmp_path / "blue.sock")
    serve(sock, [(204, "")])
    assert probe(sock, HealthCheck(status=204)).ok is True


def test_probe_body_lacks_text(tmp_path: Path, serve: ServerFactory) -> None:
    sock = str(tmp_path / "blue.sock")
    serve(sock, [(200, "database down")])
    result = probe(sock, HealthCheck(body="ok"))
    assert (result.ok, result.status) == (False, 200)
    assert result.detail == "body lacks 'ok': 'database down'"


def test_probe_hanging_server_fails_within_timeout(tmp_path: Path, serve: ServerFactory) -> None:
    sock = str(tmp_path / "blue.sock")
    serve(sock, hang=True)
    t0 = time.monotonic()
    result = probe(sock, HealthCheck(timeout=0.3))
    took = time.monotonic() - t0
    assert (result.ok, result.status) == (False, None)
    assert result.detail == "no answer within 0.3 s"
    assert 0.25 <= took < 1.5


def test_probe_no_socket_file(tmp_path: Path) -> None:
    sock = str(tmp_path / "green.sock")
    result = probe(sock, HealthCheck())
    assert (result.ok, result.status, result.detail) == (False, None, f"no socket at {sock}")


def test_probe_socket_file_nobody_listens_on(tmp_path: Path) -> None:
    """A socket left behind by a killed gunicorn: the file exists, nothing accepts."""
    sock = str(tmp_path / "green.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(sock)
    s.close()
    assert os.path.exists(sock)
    result = probe(sock, HealthCheck())
    assert (result.ok, result.detail) == (False, f"connection refused at {sock}")


def test_probe_sends_configured_host_header(tmp_path: Path, serve: ServerFactory) -> None:
    sock = str(tmp_path / "blue.sock")
    srv = serve(sock)
    check = HealthCheck(path="/ping", host="shop.example.org")
    assert probe(sock, check).ok
    assert probe(sock, check, host="other.example.org", path="/deep").ok
    (p1, h1), (p2, h2) = srv.requests
    assert (p1, h1["Host"], h1["User-Agent"]) == ("/ping", "shop.example.org", "supervisor-bluegreen")
    assert (p2, h2["Host"]) == ("/deep", "other.example.org")


def test_probe_of_an_app_behind_tls_says_https_as_nginx_does(tmp_path: Path, serve: ServerFactory) -> None:
    sock = str(tmp_path / "blue.sock")
    srv = serve(sock)
    assert probe(sock, HealthCheck(path="/", https=True)).ok
    assert probe(sock, HealthCheck(path="/")).ok
    (_, tls), (_, plain) = srv.requests
    assert tls["X-Forwarded-Proto"] == "https" and "X-Forwarded-Proto" not in plain


def test_probe_follows_a_symlinked_socket(tmp_path: Path, serve: ServerFactory) -> None:
    """The live socket is a symlink; connecting to it reaches the color it points at."""
    serve(str(tmp_path / "green.sock"), color="green")
    os.symlink(tmp_path / "green.sock", tmp_path / "live.sock")
    result = probe(str(tmp_path / "live.sock"), HealthCheck())
    assert result.ok and result.headers["x-bluegreen-color"] == "green"


# --------------------------------------------------------------------------------------------
# gate()


def test_gate_passes_after_exactly_n_consecutive_passes(tmp_path: Path, serve: ServerFactory) -> None:
    sock = str(tmp_path / "blue.sock")
    srv = serve(sock)
    seen: list[Probe] = []
    result = gate(sock, FAST, report=seen.append)
    assert (result.ok, result.reason, result.probes) == (True, "3 consecutive passes", 3)
    assert len(srv.requests) == 3
    assert [p.ok for p in seen] == [True, True, True]
    assert result.last is seen[-1]


def test_gate_failure_in_the_middle_resets_the_streak(tmp_path: Path, serve: ServerFactory) -> None:
    sock = str(tmp_path / "blue.sock")
    srv = serve(sock, [(200, "ok"), (200, "ok"), (500, "oops"), (200, "ok"), (200, "ok"), (200, "ok")])
    seen: list[Probe] = []
    result = gate(sock, FAST, report=seen.append)
    assert result.ok and result.probes == 6
    assert [p.status for p in seen] == [200, 200, 500, 200, 200, 200]
    assert len(srv.requests) == 6


def test_gate_deadline_fails_with_last_probe_detail(tmp_path: Path, serve: ServerFactory) -> None:
    sock = str(tmp_path / "blue.sock")
    serve(sock, [(502, "bad gateway")])
    check = HealthCheck(interval=0.05, timeout=1.0, passes=3, deadline=0.3)
    t0 = time.monotonic()
    result = gate(sock, check)
    took = time.monotonic() - t0
    assert result.ok is False
    assert result.reason == "not healthy within 0.3 s: last probe status 502, expected 200"
    assert result.last is not None and result.last.status == 502
    assert result.probes >= 2
    assert 0.3 <= took < 1.5


def test_gate_deadline_without_any_socket(tmp_path: Path) -> None:
    sock = str(tmp_path / "green.sock")
    result = gate(sock, HealthCheck(interval=0.05, passes=1, deadline=0.2))
    assert result.reason == f"not healthy within 0.2 s: last probe no socket at {sock}"


def test_gate_waits_for_a_server_that_binds_late(tmp_path: Path, serve: ServerFactory) -> None:
    """gunicorn --preload binds only after import: early probes fail, the gate still passes."""
    sock = str(tmp_path / "green.sock")
    timer = threading.Timer(0.2, serve, args=(sock,))
    timer.start()
    try:
        seen: list[Probe] = []
        result = gate(sock, HealthCheck(interval=0.02, passes=2, deadline=5.0), report=seen.append)
    finally:
        timer.join()
    assert result.ok
    assert seen[0].detail == f"no socket at {sock}"
    assert [p.ok for p in seen[-2:]] == [True, True]


def test_gate_aborted_stops_at_once(tmp_path: Path, serve: ServerFactory) -> None:
    sock = str(tmp_path / "green.sock")
    srv = serve(sock, [(503, "starting")])
    answers = iter([None, "shop_green went FATAL"])
    check = HealthCheck(interval=0.01, passes=3, deadline=30.0)
    t0 = time.monotonic()
    result = gate(sock, check, aborted=lambda: next(answers))
    assert time.monotonic() - t0 < 1.0
    assert (result.ok, result.reason, result.probes) == (False, "shop_green went FATAL", 1)
    assert result.last is not None and result.last.status == 503
    assert len(srv.requests) == 1


def test_gate_aborted_before_the_first_probe(tmp_path: Path, serve: ServerFactory) -> None:
    sock = str(tmp_path / "green.sock")
    srv = serve(sock)
    result = gate(sock, FAST, aborted=lambda: "job cancelled")
    assert (result.ok, result.reason, result.probes, result.last) == (False, "job cancelled", 0, None)
    assert srv.requests == []


def test_url_target_uses_the_urls_own_path(serve: ServerFactory) -> None:
    srv = serve(("127.0.0.1", 0), tcp=True)
    port = srv.server_address[1]
    check = HealthCheck(path="/health", host="shop.example.org", interval=0.01, passes=2)
    result = gate(f"http://127.0.0.1:{port}/ready", check)
    assert result.ok and result.probes == 2
    assert srv.paths == ["/ready", "/ready"]
    assert {h["Host"] for _, h in srv.requests} == {"shop.example.org"}
    assert probe(f"http://127.0.0.1:{port}", check).ok  # no path in the URL: "/"
    assert srv.paths[-1] == "/"


def test_url_target_refused(tmp_path: Path) -> None:
    port = free_port()  # bound, never listened: nothing accepts on that port now
    result = probe(f"http://127.0.0.1:{port}/health", HealthCheck())
    assert (result.ok, result.detail) == (False, f"connection refused at http://127.0.0.1:{port}/health")


def test_url_target_keeps_its_query_string(serve: ServerFactory) -> None:
    srv = serve(("127.0.0.1", 0), tcp=True)
    probe(f"http://127.0.0.1:{srv.server_address[1]}/health?deep=1", HealthCheck())
    assert srv.paths == ["/health?deep=1"]

"""Drain detection against real AF_UNIX sockets and a real gunicorn; only the wait loop gets a fake clock."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import FakeClock, stop_process

from supervisor_bluegreen.host.drain import (
    DrainResult,
    connected,
    listening,
    open_connections,
    read_proc_net_unix,
    wait_drained,
)

APP = "/srv/app/blue.sock"
SAMPLE = """\
Num       RefCount Protocol Flags    Type St Inode Path
00000000ae198196: 00000002 00000000 00010000 0001 01 591591 /srv/app/blue.sock
0000000098d59f1d: 00000003 00000000 00000000 0001 03 591597 /srv/app/blue.sock
000000003cfb8fe3: 00000003 00000000 00000000 0001 03 591595 /srv/app/blue.sock
00000000494e0a47: 00000003 00000000 00000000 0001 02     0 /srv/app/blue.sock
0000000011111111: 00000003 00000000 00000000 0001 03 591598
0000000022222222: 00000002 00000000 00010000 0001 01 591600 /srv/app/green.sock
0000000033333333: 00000003 00000000 00000000 0001 03 591601 /srv/app/green.sock
0000000044444444: 00000002 00000000 00010000 0001 01 591602 @/srv/app/blue.sock
0000000055555555: 00000003 00000000 00000000 0001 03 591603 @/srv/app/blue.sock
0000000066666666: 00000002 00000000 00010000 0001 01 591604 /srv/my app/blue.sock
0000000077777777: 00000003 00000000 00000000 0001 03 591605 /srv/my app/blue.sock
0000000088888888: 00000003 00000000 00000000 0001 03 591606 /srv/app/blue.sock.old
"""


def test_connected_counts_server_side_sockets_of_that_path_only() -> None:
    # two accepted + one still in the accept queue; not the listener, the unnamed client,
    # green, the abstract name, nor a path that merely starts the same
    assert connected(SAMPLE, APP) == 3
    assert connected(SAMPLE, "/srv/app/green.sock") == 1
    assert connected(SAMPLE, "@/srv/app/blue.sock") == 1
    assert connected(SAMPLE, "/srv/my app/blue.sock") == 1
    assert connected(SAMPLE, "/srv/app/red.sock") == 0
    assert connected(SAMPLE, "") == 0
    assert connected("", APP) == 0


def test_listening_tells_a_visible_listener_from_a_wrong_path() -> None:
    assert listening(SAMPLE, APP)
    assert listening(SAMPLE, "/srv/my app/blue.sock")
    assert not listening(SAMPLE, "/srv/app/blue.sock.old")  # connected but no listener
    assert not listening(SAMPLE, "/srv/app/red.sock")


def test_open_connections_follows_real_sockets(tmp_path: Path) -> None:
    path = str(tmp_path / "s p.sock")  # a space in the path, on purpose
    link = tmp_path / "live.sock"
    link.symlink_to(path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    clients: list[socket.socket] = []
    accepted: list[socket.socket] = []
    try:
        server.bind(path)
        server.listen(8)
        assert listening(read_proc_net_unix(), path)
        assert open_connections(path) == 0
        for target in (path, path, str(link)):  # via the symlink too, like nginx after a switch
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            clients.append(c)
            c.connect(target)
        assert open_connections(path) == 3  # queued, not yet accepted: still work to serve
        accepted.extend(server.accept()[0] for _ in clients)
        assert open_connections(path) == 3
        assert open_connections(str(link)) == 0  # listed under the bound path, never the symlink
        for c in clients:
            c.close()
        assert open_connections(path) == 3  # the server has not closed its ends yet
        for a in accepted:
            a.close()
        assert open_connections(path) == 0
    finally:
        for s in [*clients, *accepted, server]:
            s.close()


WSGI_APP = '''\
import time


def app(environ, start_response):
    """/slow takes 1.5 s; anything else answers at once."""
    if environ["PATH_INFO"] == "/slow":
        time.sleep(1.5)
    body = b"ok\\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''


@pytest.fixture(scope="module")
def gunicorn_sock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real gunicorn (gthread: 1 worker, 2 threads) on a unix socket, stopped by pid."""
    root = tmp_path_factory.mktemp("drain")
    (root / "drainapp.py").write_text(WSGI_APP)
    sock = str(root / "app.sock")
    assert len(sock) < 100, f"unix socket path too long: {sock}"
    cmd = [sys.executable, "-m", "gunicorn", "--workers", "1", "--threads", "2", "--no-control-socket"]
    cmd += ["--chdir", str(root), "--bind", f"unix:{sock}", "drainapp:app"]
    with open(root / "gunicorn.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while not (os.path.exists(sock) and listening(read_proc_net_unix(), sock)):
            assert proc.poll() is None, f"gunicorn exited: {(root / 'gunicorn.log').read_text()}"
            assert time.monotonic() < deadline, f"gunicorn not listening: {(root / 'gunicorn.log').read_text()}"
            time.sleep(0.05)
        assert get(sock, "/").startswith(b"HTTP/1.0 200")  # the worker is booted, not just the arbiter
        assert wait_drained(sock, 5).drained
        yield sock
    finally:
        stop_process(proc, timeout=5)


def get(sock: str, path: str) -> bytes:
    """An HTTP/1.0 GET read to EOF and then closed, as nginx does with a non-keepalive upstream."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
        c.settimeout(10)
        c.connect(sock)
        c.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
        chunks = []
        while chunk := c.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


@pytest.mark.integration
def test_in_flight_request_holds_the_drain_until_it_completes(gunicorn_sock: str) -> None:
    responses: list[bytes] = []
    started = time.monotonic()
    client = threading.Thread(target=lambda: responses.append(get(gunicorn_sock, "/slow")))
    client.start()
    try:
        time.sleep(0.3)
        assert open_connections(gunicorn_sock) == 1
        result = wait_drained(gunicorn_sock, timeout=5, interval=0.02)
        total = time.monotonic() - started
    finally:
        client.join(10)
    assert result == DrainResult(True, 0, result.waited)
    assert 0.9 <= result.waited <= 2.5, result  # about the 1.2 s the request still had to run
    assert 1.5 <= total <= 3.0
    assert responses and responses[0].startswith(b"HTTP/1.0 200") and responses[0].endswith(b"ok\n")
    assert open_connections(gunicorn_sock) == 0


@pytest.mark.integration
def test_idle_keepalive_connection_blocks_the_drain(gunicorn_sock: str) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
        c.settimeout(5)
        c.connect(gunicorn_sock)
        c.sendall(b"GET / HTTP/1.1\r\nHost: app\r\n\r\n")
        head = b""
        while not head.endswith(b"ok\n"):
            head += c.recv(65536)
        assert head.startswith(b"HTTP/1.1 200") and b"keep-alive" in head.lower()
        # the response is complete; gthread keeps the idle connection for --keep-alive (2 s)
        result = wait_drained(gunicorn_sock, timeout=0.5, interval=0.05)
        assert not result.drained
        assert result.remaining >= 1
        assert 0.5 <= result.waited < 1.5
    # the client hung up: gunicorn closes its end at once
    assert wait_drained(gunicorn_sock, timeout=1.5, interval=0.02).drained


def counts(*values: int) -> tuple[list[str], Callable[[str], int]]:
    """A ``count`` that answers ``values`` in turn and records the paths it was asked about."""
    asked: list[str] = []
    it = iter(values)

    def count(path: str) -> int:
        asked.append(path)
        return next(it)

    return asked, count


def test_wait_drained_stops_at_the_first_zero() -> None:
    t = FakeClock()
    asked, count = counts(3, 2, 1, 0)
    result = wait_drained("/s", timeout=5, interval=0.25, clock=t, sleep=t.sleep, count=count)
    assert result == DrainResult(True, 0, 0.75)
    assert asked == ["/s"] * 4
    assert t.slept == [0.25, 0.25, 0.25]


def test_wait_drained_already_drained_never_sleeps() -> None:
    t = FakeClock()
    _, count = counts(0)
    result = wait_drained("/s", timeout=5, clock=t, sleep=t.sleep, count=count)
    assert result == DrainResult(True, 0, 0.0)
    assert t.slept == []


def test_wait_drained_times_out_with_the_last_count() -> None:
    t = FakeClock()
    _, count = counts(4, 3, 2, 2, 2)
    result = wait_drained("/s", timeout=1.0, interval=0.4, clock=t, sleep=t.sleep, count=count)
    assert result.drained is False
    assert result.remaining == 2
    assert result.waited == pytest.approx(1.0)
    assert t.slept == pytest.approx([0.4, 0.4, 0.2])  # the last sleep is cut to the deadline, then one last check


def test_wait_drained_zero_timeout_checks_once() -> None:
    t = FakeClock()
    asked, count = counts(1)
    result = wait_drained("/s", timeout=0, clock=t, sleep=t.sleep, count=count)
    assert result == DrainResult(False, 1, 0.0)
    assert asked == ["/s"]
    assert t.slept == []

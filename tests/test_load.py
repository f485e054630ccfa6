"""Tests for example.load: pure summarize() math and real-socket behaviour.

Why real sockets: the load generator's whole job is to notice resets,
refusals and 5xx responses, so it is exercised against a tiny real server
that we can switch, break and kill.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from example.load import Load, Sample, summarize

# --------------------------------------------------------------------------
# summarize() on hand-made samples


def ok(kind: str, start: float, end: float, color: str = "blue") -> Sample:
    return Sample(kind, start, end, 200, None, color, "1")


def bad(kind: str, start: float, end: float, status: int | None, error: str | None) -> Sample:
    return Sample(kind, start, end, status, error, "", "")


def test_summarize_empty() -> None:
    s = summarize([])
    assert s == {
        "requests": 0,
        "failed": 0,
        "failed_by_kind": {},
        "max_gap_ms": 0.0,
        "p99_ms": 0.0,
        "max_ms": 0.0,
        "old_after_switch": 0,
        "switches": 0,
    }


def test_summarize_empty_window_is_whole_window_gap() -> None:
    assert summarize([], window=(1.0, 3.0))["max_gap_ms"] == pytest.approx(2000.0)


def test_summarize_failed_by_kind() -> None:
    samples = [
        ok("keepalive", 0.0, 0.1),
        bad("keepalive", 0.1, 0.2, None, "RemoteDisconnected"),
        bad("keepalive", 0.2, 0.3, None, "RemoteDisconnected"),
        bad("fresh", 0.1, 0.2, None, "ConnectionRefusedError"),
        bad("fresh", 0.2, 0.3, 502, "http_502"),
        bad("slow", 0.0, 2.0, 404, None),  # non-200 without error still fails
        bad("slow", 0.0, 30.0, None, "timeout"),
    ]
    s = summarize(samples)
    assert s["requests"] == 7
    assert s["failed"] == 6
    assert s["failed_by_kind"] == {
        "keepalive:RemoteDisconnected": 2,
        "fresh:ConnectionRefusedError": 1,
        "fresh:http_502": 1,
        "slow:http_404": 1,
        "slow:timeout": 1,
    }


def test_summarize_gaps_use_successes_only() -> None:
    samples = [
        ok("keepalive", 0.0, 1.0),
        ok("keepalive", 1.0, 1.1),
        bad("keepalive", 1.1, 1.5, None, "ConnectionResetError"),  # not a success
        ok("fresh", 1.1, 1.6),  # gap 1.1 -> 1.6 = 500 ms
        ok("slow", 0.0, 1.9),  # slow successes count for gaps
    ]
    assert summarize(samples)["max_gap_ms"] == pytest.approx(500.0)


def test_summarize_gaps_window_edges() -> None:
    samples = [ok("keepalive", 0.0, t) for t in (1.0, 1.2, 1.3)]
    # window start -> first success = 700 ms dominates
    assert summarize(samples, window=(0.3, 1.4))["max_gap_ms"] == pytest.approx(700.0)
    # last success -> window end = 1700 ms dominates
    assert summarize(samples, window=(1.0, 3.0))["max_gap_ms"] == pytest.approx(1700.0)
    # successes outside the window are ignored
    assert summarize(samples, window=(1.25, 1.35))["max_gap_ms"] == pytest.approx(50.0)


def test_summarize_p99_and_max_exclude_slow_and_failures() -> None:
    samples = [ok("keepalive", 0.0, (i + 1) / 1000.0) for i in range(100)]  # 1..100 ms
    samples.append(ok("slow", 0.0, 2.0))
    samples.append(bad("fresh", 0.0, 5.0, None, "timeout"))
    s = summarize(samples)
    assert s["p99_ms"] == pytest.approx(99.0)
    assert s["max_ms"] == pytest.approx(100.0)


def test_summarize_old_after_switch() -> None:
    switches = [(10.0, "green"), (20.0, "blue")]
    samples = [
        ok("keepalive", 5.0, 11.0, "blue"),  # started before any switch: fine
        ok("keepalive", 10.0, 10.1, "blue"),  # started exactly at confirm: not after
        ok("keepalive", 10.5, 10.6, "blue"),  # OLD: after green switch
        ok("keepalive", 11.0, 11.1, "green"),
        ok("slow", 19.0, 21.0, "green"),  # started before 2nd switch: fine
        ok("keepalive", 20.5, 20.6, "green"),  # OLD: after switch back to blue
        ok("keepalive", 21.0, 21.1, "blue"),
        ok("keepalive", 12.0, 12.1, ""),  # no color header: ignored
        bad("keepalive", 12.0, 12.1, 502, "http_502"),  # failures: ignored
    ]
    s = summarize(samples, switches)
    assert s["old_after_switch"] == 2
    assert s["switches"] == 2
    # order of the switches list must not matter
    assert summarize(samples, list(reversed(switches)))["old_after_switch"] == 2


def test_summarize_is_pure() -> None:
    """It sorts no input in place and no order of the inputs changes the figures (benches summarize a run twice)."""
    samples = [ok("fresh", 0.0, 0.3, "green"), ok("keepalive", 0.06, 0.1, "green"), ok("keepalive", 0.0, 0.05)]
    switches = [(0.2, "blue"), (0.05, "green")]  # out of order: an in-place sort would show
    before = (list(samples), list(switches))
    first = summarize(samples, switches)
    assert (samples, switches) == before
    assert first == summarize(samples[::-1], switches[::-1])
    assert (first["requests"], first["switches"], first["old_after_switch"]) == (3, 2, 0)
    assert first["max_gap_ms"] == pytest.approx(200.0)


# --------------------------------------------------------------------------
# a tiny real HTTP/1.1 server


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/slow":
            time.sleep(float(parse_qs(url.query).get("seconds", ["1"])[0]))
        srv = self.server
        body = b"ok\n"
        self.send_response(srv.status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Bluegreen-Color", srv.color)
        self.send_header("X-App-Version", "1.0")
        self.end_headers()
        self.wfile.write(body)
        if srv.close_after_response:
            # Close the idle keep-alive connection without announcing it.
            self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.color = "blue"
        self.status = 200
        self.close_after_response = False
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self._killed = False

    @property
    def port(self) -> int:
        return self.server_address[1]

    def run(self) -> _Server:
        self._thread.start()
        return self

    def get_request(self) -> tuple[socket.socket, object]:
        sock, addr = super().get_request()
        with self._conns_lock:
            self._conns.add(sock)
        return sock, addr

    def shutdown_request(self, request: socket.socket) -> None:  # type: ignore[override]
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # broken pipes after kill() are expected

    def kill(self) -> None:
        """Stop accepting and tear down every open connection (a crash)."""
        if self._killed:
            return
        self._killed = True
        if self._thread.is_alive():
            self.shutdown()
        self.server_close()
        with self._conns_lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(2.0)


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server().run()
    try:
        yield srv
    finally:
        srv.kill()


def _load(srv: _Server, **kw: object) -> Load:
    opts: dict[str, object] = {
        "keepalive": 3,
        "fresh": 2,
        "slow": 1,
        "slow_path": "/slow?seconds=0.2",
        "timeout": 5.0,
        "max_seconds": 20.0,
    }
    opts.update(kw)
    return Load("127.0.0.1", srv.port, **opts)  # type: ignore[arg-type]


# --------------------------------------------------------------------------
# end-to-end


def test_rejects_non_loopback() -> None:
    for host in ("10.0.0.1", "example.com", "::1", "localhost"):
        with pytest.raises(ValueError):
            Load(host, 80)


def test_steady_load_has_no_failures(server: _Server) -> None:
    load = _load(server)
    with load:
        time.sleep(0.3)
        w0 = time.monotonic()
        time.sleep(0.5)
        w1 = time.monotonic()
    samples = load.samples
    s = summarize(samples, window=(w0, w1))
    assert s["failed"] == 0, s["failed_by_kind"]
    assert s["requests"] > 50
    assert {x.kind for x in samples} == {"keepalive", "fresh", "slow"}
    assert {x.color for x in samples} == {"blue"}
    assert {x.version for x in samples} == {"1.0"}
    assert all(x.start <= x.end for x in samples)
    assert s["max_gap_ms"] < 500.0
    assert 0.0 < s["p99_ms"] <= s["max_ms"]
    assert not load.running
    # keep-alive clients really reused their connection
    assert load.reconnects == 0


def test_switch_is_seen_and_old_color_detected(server: _Server) -> None:
    with _load(server) as load:
        time.sleep(0.3)
        server.color = "green"
        confirmed = time.monotonic()
        time.sleep(0.4)
    samples = load.samples
    s = summarize(samples, [(confirmed, "green")])
    assert s["failed"] == 0
    assert s["old_after_switch"] == 0
    assert s["switches"] == 1
    assert any(x.color == "green" and x.start > confirmed for x in samples)
    # The metric can fail: claim the switch went to a color never served.
    assert summarize(samples, [(confirmed, "purple")])["old_after_switch"] > 0


def test_server_killed_mid_run_records_failures(server: _Server) -> None:
    with _load(server, pause=0.002) as load:
        time.sleep(0.3)
        killed = time.monotonic()
        server.kill()
        time.sleep(0.3)
        end = time.monotonic()
    samples = load.samples
    s = summarize(samples, window=(killed - 0.1, end))
    assert s["failed"] > 0
    kinds = s["failed_by_kind"]
    assert kinds.get("fresh:ConnectionRefusedError", 0) > 0, kinds
    assert any(k.startswith("keepalive:") for k in kinds), kinds
    assert s["max_gap_ms"] >= 250.0
    # every failure is recorded as-is, never retried away
    assert all(x.error for x in samples if x.status is None)


def test_5xx_is_failure_with_status(server: _Server) -> None:
    server.status = 502
    with _load(server, slow=0) as load:
        time.sleep(0.2)
    s = summarize(load.samples)
    assert s["requests"] > 0
    assert s["failed"] == s["requests"]
    assert set(s["failed_by_kind"]) == {"keepalive:http_502", "fresh:http_502"}
    assert all(x.status == 502 and x.error == "http_502" for x in load.samples)
    assert s["max_gap_ms"] == 0.0  # no successes at all


def test_idle_close_between_requests_is_not_a_failure(server: _Server) -> None:
    server.close_after_response = True
    with _load(server, keepalive=2, fresh=0, slow=0, pause=0.02) as load:
        time.sleep(0.4)
    s = summarize(load.samples)
    assert s["requests"] >= 10
    assert s["failed"] == 0, s["failed_by_kind"]
    assert load.reconnects >= s["requests"] - 2 - 2  # all but first/last per client


def test_max_seconds_bounds_the_run(server: _Server) -> None:
    load = _load(server, max_seconds=0.2).start()
    try:
        deadline = time.monotonic() + 3.0
        while load.running and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not load.running
    finally:
        t0 = time.monotonic()
        samples = load.stop()
    assert time.monotonic() - t0 < 0.5
    assert samples
    assert summarize(samples)["failed"] == 0

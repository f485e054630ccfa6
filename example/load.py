"""Continuous HTTP load that records every request outcome and never retries.

Why: a blue/green switch is only "zero downtime" if no request fails while it
happens, so every attempt must be counted exactly once; a retry (or a client
library that silently resends) would hide exactly the failures we must prove
absent.
"""

from __future__ import annotations

import bisect
import http.client
import ipaddress
import itertools
import math
import select
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

COLOR_HEADER = "X-Bluegreen-Color"
VERSION_HEADER = "X-App-Version"
KINDS = ("keepalive", "fresh", "slow")


@dataclass(frozen=True)
class Sample:
    """One request attempt; failed iff ``error`` is set or ``status != 200``."""

    kind: str
    start: float
    end: float
    status: int | None
    error: str | None
    color: str
    version: str

    @property
    def ok(self) -> bool:
        """Success means a complete 200 response with no transport error."""
        return self.error is None and self.status == 200


def _error_name(exc: BaseException) -> str:
    """Short, stable label so failures group well in ``failed_by_kind``."""
    if isinstance(exc, TimeoutError):  # socket.timeout is TimeoutError
        return "timeout"
    return type(exc).__name__


def _peer_closed(sock: socket.socket) -> bool:
    """True if an idle keep-alive socket is readable (EOF or stray bytes).

    Why: a server may legitimately close an idle keep-alive connection
    between requests (e.g. nginx worker shutdown after reload). Like any sane
    HTTP client (urllib3 does the same), we detect that *before* sending and
    reconnect, instead of writing a request into a dead socket. This is not a
    retry: no request has been sent yet.
    """
    try:
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


class Load:
    """Background load: keep-alive, fresh-connection and slow clients.

    Why three kinds: keep-alive connections catch resets of reused
    connections, fresh ones catch refused/lost connects, slow ones keep a
    request in flight at all times so draining is exercised.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        keepalive: int = 8,
        fresh: int = 2,
        slow: int = 1,
        path: str = "/",
        slow_path: str = "/slow?seconds=2",
        timeout: float = 30.0,
        max_seconds: float = 600.0,
        pause: float = 0.0,
    ) -> None:
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback or ipaddress.ip_address(host).version != 4:
            raise ValueError(f"Load only targets 127.0.0.0/8, got {host!r}")
        if min(keepalive, fresh, slow) < 0:
            raise ValueError("client counts must be >= 0")
        self.host = host
        self.port = port
        self.keepalive = keepalive
        self.fresh = fresh
        self.slow = slow
        self.path = path
        self.slow_path = slow_path
        self.timeout = timeout
        self.max_seconds = max_seconds
        self.pause = pause
        self._lock = threading.Lock()
        self._samples: list[Sample] = []
        self._reconnects = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._deadline = 0.0
        self._started = False

    # -- public API -------------------------------------------------------

    def start(self) -> Self:
        """Launch all client threads; each stops on ``stop()`` or max_seconds."""
        if self._started:
            raise RuntimeError("Load already started")
        self._started = True
        self._deadline = time.monotonic() + self.max_seconds
        plan = (
            [("keepalive", self.path, True)] * self.keepalive
            + [("fresh", self.path, False)] * self.fresh
            + [("slow", self.slow_path, True)] * self.slow
        )
        for i, (kind, path, persistent) in enumerate(plan):
            t = threading.Thread(
                target=self._client,
                args=(kind, path, persistent),
                name=f"load-{kind}-{i}",
                daemon=True,  # never block interpreter exit
            )
            self._threads.append(t)
            t.start()
        return self

    def stop(self) -> list[Sample]:
        """Signal stop, wait (at most ``timeout`` s) for in-flight requests.

        In-flight requests are allowed to finish so they are recorded, not
        aborted (aborting would fabricate failures).
        """
        self._stop.set()
        deadline = time.monotonic() + self.timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return self.samples

    @property
    def samples(self) -> list[Sample]:
        """Snapshot copy of the samples recorded so far."""
        with self._lock:
            return list(self._samples)

    @property
    def reconnects(self) -> int:
        """Legitimate connection closes seen by persistent clients.

        Counts ``Connection: close`` responses and idle sockets the server
        closed between requests; useful to show that the switch really did
        recycle connections (these are not failures).
        """
        with self._lock:
            return self._reconnects

    @property
    def running(self) -> bool:
        """True while any client thread is still alive."""
        return any(t.is_alive() for t in self._threads)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals --------------------------------------------------------

    def _stopping(self) -> bool:
        return self._stop.is_set() or time.monotonic() >= self._deadline

    def _record(self, sample: Sample) -> None:
        with self._lock:
            self._samples.append(sample)

    def _count_reconnect(self) -> None:
        with self._lock:
            self._reconnects += 1

    def _new_conn(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def _client(self, kind: str, path: str, persistent: bool) -> None:
        """Loop one request at a time; exactly one Sample per attempt."""
        headers = {} if persistent else {"Connection": "close"}
        conn: http.client.HTTPConnection | None = None
        used = False  # persistent conn has completed at least one request
        try:
            while not self._stopping():
                if conn is None or not persistent:
                    conn = self._new_conn()
                    used = False
                elif conn.sock is None:
                    # Previous response said Connection: close; http.client
                    # closed it and will reopen on the next request.
                    if used:
                        self._count_reconnect()
                elif _peer_closed(conn.sock):
                    conn.close()
                    self._count_reconnect()
                status: int | None = None
                start = time.monotonic()
                try:
                    conn.request("GET", path, headers=headers)
                    resp = conn.getresponse()
                    status = resp.status
                    resp.read()
                except Exception as exc:  # noqa: BLE001 - every failure is data
                    end = time.monotonic()
                    self._record(Sample(kind, start, end, status, _error_name(exc), "", ""))
                    conn.close()
                    conn = None  # next request gets a brand-new connection
                else:
                    end = time.monotonic()
                    code = resp.status
                    error = f"http_{code}" if code >= 500 else None
                    self._record(
                        Sample(
                            kind,
                            start,
                            end,
                            code,
                            error,
                            resp.getheader(COLOR_HEADER, "") or "",
                            resp.getheader(VERSION_HEADER, "") or "",
                        )
                    )
                    used = True
                if not persistent and conn is not None:
                    conn.close()
                    conn = None
                if self.pause > 0:
                    self._stop.wait(self.pause)
        finally:
            if conn is not None:
                conn.close()


def _percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile; 0.0 for no data."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(pct / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


def summarize(
    samples: Sequence[Sample],
    switches: Sequence[tuple[float, str] | tuple[float, str, float]] = (),
    *,
    window: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """Reduce samples to the numbers tests and benchmarks assert on.

    ``switches`` is ``[(confirmed_monotonic_time, new_color[, began_monotonic_time]), ...]``.
    ``window`` only bounds ``max_gap_ms`` (its edges count as gap ends);
    all other figures cover every sample. Without a window the gap is only
    between consecutive successes (0.0 if fewer than two).
    """
    ok = [s for s in samples if s.ok]
    failed_by_kind: dict[str, int] = {}
    failed = 0
    for s in samples:
        if s.ok:
            continue
        failed += 1
        reason = s.error if s.error is not None else f"http_{s.status}"
        key = f"{s.kind}:{reason}"
        failed_by_kind[key] = failed_by_kind.get(key, 0) + 1

    ends = sorted(s.end for s in ok)
    if window is not None:
        lo, hi = window
        points = [lo, *(e for e in ends if lo <= e <= hi), hi]
    else:
        points = ends
    max_gap = max((b - a for a, b in itertools.pairwise(points)), default=0.0)

    latencies = sorted(s.end - s.start for s in ok if s.kind != "slow")

    ordered = sorted(switches)
    times = [t for t, *_ in ordered]
    # a switch may say when it began (third item): from then on until it is confirmed, either color is right
    began = [sw[2] if len(sw) > 2 else sw[0] for sw in ordered]
    old = 0
    for s in ok:
        if not s.color:
            continue
        i = bisect.bisect_left(times, s.start) - 1  # last switch with t < start
        in_next = i + 1 < len(ordered) and began[i + 1] <= s.start
        if i >= 0 and not in_next and s.color != ordered[i][1]:
            old += 1

    return {
        "requests": len(samples),
        "failed": failed,
        "failed_by_kind": failed_by_kind,
        "max_gap_ms": max_gap * 1000.0,
        "p99_ms": _percentile(latencies, 99) * 1000.0,
        "max_ms": (latencies[-1] * 1000.0) if latencies else 0.0,
        "old_after_switch": old,
        "switches": len(switches),
    }

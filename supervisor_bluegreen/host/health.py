"""HTTP health checks over a color's own unix socket (or a TCP URL).

Health means a real GET answered with the expected status (and body text), never
"supervisord says RUNNING" nor "the socket file exists": supervisord calls a program
RUNNING after ``startsecs``, and gunicorn with ``--preload`` binds only after import.
"""

from __future__ import annotations

import http.client
import socket
import time
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlsplit

from supervisor_bluegreen.shared.config import HealthCheck


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over an AF_UNIX socket (connect() follows symlinks, like nginx does)."""

    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.unix_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


@dataclass(frozen=True)
class Probe:
    """The outcome of one GET."""

    ok: bool
    status: int | None
    detail: str
    elapsed_ms: float
    headers: dict[str, str]

    def describe(self) -> str:
        return f"{'ok' if self.ok else 'FAIL'} {self.detail} ({self.elapsed_ms:.0f} ms)"


def connection_for(target: str, timeout: float) -> tuple[http.client.HTTPConnection, str]:
    """A connection for a socket path or an http:// URL, and the request path prefix it implies."""
    if target.startswith(("http://", "https://")):
        parts = urlsplit(target)
        cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls(parts.hostname or "127.0.0.1", parts.port, timeout=timeout), path
    return UnixHTTPConnection(target, timeout), ""


def judge(status: int, body: str, check: HealthCheck) -> str | None:
    """Why a response fails ``check``, or None when it passes."""
    if status != check.status:
        return f"status {status}, expected {check.status}"
    if check.body and check.body not in body:
        return f"body lacks {check.body!r}: {body[:80]!r}"
    return None


def probe(target: str, check: HealthCheck, path: str | None = None, host: str | None = None) -> Probe:
    """One GET of the health path on ``target`` (socket path or URL) within ``check.timeout``."""
    started = time.monotonic()
    try:
        conn, base = connection_for(target, check.timeout)
    except ValueError as exc:  # a URL with a bad port: a failed probe, not a crashed job
        return Probe(False, None, f"bad URL {target!r}: {exc}", 0.0, {})
    url = path or base or check.path  # a URL target names its own path

    def elapsed() -> float:
        return (time.monotonic() - started) * 1000

    try:
        sent = {"Host": host or check.host, "User-Agent": "supervisor-bluegreen"}
        if check.https:  # what nginx's TLS site tells the app: an app that redirects to HTTPS answers it
            sent["X-Forwarded-Proto"] = "https"
        conn.request("GET", url, headers=sent)
        resp = conn.getresponse()
        body = resp.read(65536).decode("utf-8", "replace")
        headers = {k.lower(): v for k, v in resp.getheaders()}
    except FileNotFoundError:
        return Probe(False, None, f"no socket at {target}", elapsed(), {})
    except ConnectionRefusedError:
        return Probe(False, None, f"connection refused at {target}", elapsed(), {})
    except (socket.timeout, TimeoutError):
        return Probe(False, None, f"no answer within {check.timeout:g} s", elapsed(), {})
    except (OSError, http.client.HTTPException) as exc:
        return Probe(False, None, f"{type(exc).__name__}: {exc}", elapsed(), {})
    finally:
        conn.close()
    why = judge(resp.status, body, check)
    return Probe(why is None, resp.status, why or f"status {resp.status}", elapsed(), headers)


@dataclass(frozen=True)
class GateResult:
    ok: bool
    reason: str
    probes: int
    last: Probe | None


def gate(
    target: str,
    check: HealthCheck,
    aborted: Callable[[], str | None] = lambda: None,
    report: Callable[[Probe], None] = lambda p: None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> GateResult:
    """Pass only after ``check.passes`` consecutive good probes before ``check.deadline``.

    ``aborted`` is asked before every probe and ends the gate at once with its reason
    (the target went BACKOFF/FATAL/EXITED, or the job was cancelled).
    """
    deadline = clock() + check.deadline
    streak, count, last = 0, 0, None
    while True:
        why = aborted()
        if why:
            return GateResult(False, why, count, last)
        last = probe(target, check)
        count += 1
        report(last)
        streak = streak + 1 if last.ok else 0
        if streak >= check.passes:
            return GateResult(True, f"{streak} consecutive passes", count, last)
        remaining = deadline - clock()
        if remaining <= 0:
            return GateResult(False, f"not healthy within {check.deadline:g} s: last probe {last.detail}", count, last)
        sleep(min(check.interval, remaining))

"""One host's supervisor-bluegreen as the collection's modules see it: reached the way supervisorctl reaches
supervisord (its config's ``[supervisorctl]`` section, or the parameters), and what a task does decided from the
app's status by pure functions, so they are tested without a host. Standard library only: the modules run on the
host's own Python, which need not hold supervisor-bluegreen."""

from __future__ import annotations

import configparser
import http.client
import os
import re
import socket
import time
import urllib.parse
import xmlrpc.client
from typing import Any, Callable

DEFAULT_CONF = "/etc/supervisor/supervisord.conf"
ACTIVE = ("queued", "running")
COMMIT = re.compile(r"^[0-9a-f]{7,40}$")
WHO = "ansible"

# the connection options every module takes (documented in doc_fragments/connection.py)
CONNECTION_ARGS: dict[str, dict[str, Any]] = {
    "supervisord_conf": {"type": "path", "default": DEFAULT_CONF},
    "serverurl": {"type": "str"},
    "username": {"type": "str"},
    "password": {"type": "str", "no_log": True},
    "who": {"type": "str", "default": WHO},
}


class BluegreenError(Exception):
    """What fail_json says: the app's own message (a refused deploy, a lock) or why the host cannot be reached."""


def ctl_settings(
    conf: str, serverurl: str | None = None, username: str | None = None, password: str | None = None
) -> tuple[str, str | None, str | None]:
    """(serverurl, username, password) as supervisorctl takes them: the parameters, else the config's
    ``[supervisorctl]`` section (``%(here)s`` is the config's folder), else supervisorctl's default."""
    section: dict[str, str] = {}
    if os.path.exists(conf):
        parser = configparser.RawConfigParser(strict=False)
        try:
            parser.read(conf, encoding="utf-8")
        except configparser.Error as exc:
            raise BluegreenError(f"{conf}: {exc}") from None
        if parser.has_section("supervisorctl"):
            here = os.path.dirname(os.path.abspath(conf))
            section = {k: v.replace("%(here)s", here) for k, v in parser.items("supervisorctl")}
    elif not serverurl:
        raise BluegreenError(f"{conf}: no such file (set supervisord_conf, or serverurl)")
    url = serverurl or section.get("serverurl") or "http://localhost:9001"
    return url, username or section.get("username"), password or section.get("password")


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.socket_path)
        self.sock = sock


class _Transport(xmlrpc.client.Transport):
    """HTTP over supervisord's unix socket, or over TCP, with a timeout on every call."""

    def __init__(self, socket_path: str | None, timeout: float) -> None:
        super().__init__()
        self.socket_path, self.timeout = socket_path, timeout

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        chost, self._extra_headers, _ = self.get_host_info(host)  # the Authorization header, from the URL
        if self.socket_path:
            return _UnixConnection(self.socket_path, self.timeout)
        return http.client.HTTPConnection(chost, timeout=self.timeout)


def server(serverurl: str, username: str | None, password: str | None, timeout: float = 30) -> Any:
    """An XML-RPC proxy to supervisord at ``serverurl`` (``unix:///path`` or ``http://host:port``)."""
    auth = ""
    if username:
        auth = urllib.parse.quote(username, safe="") + ":" + urllib.parse.quote(password or "", safe="") + "@"
    if serverurl.startswith("unix://"):
        transport = _Transport(serverurl[len("unix://") :], timeout)
        return xmlrpc.client.ServerProxy(f"http://{auth}localhost/RPC2", transport=transport)
    parsed = urllib.parse.urlsplit(serverurl)
    if parsed.scheme != "http" or not parsed.netloc:
        raise BluegreenError(f"serverurl {serverurl!r}: expected unix:///path or http://host:port")
    return xmlrpc.client.ServerProxy(f"http://{auth}{parsed.netloc}/RPC2", transport=_Transport(None, timeout))


def connect(params: dict[str, Any]) -> Any:
    """The proxy a module's parameters name (CONNECTION_ARGS)."""
    url, user, password = ctl_settings(
        params["supervisord_conf"], params.get("serverurl"), params.get("username"), params.get("password")
    )
    return server(url, user, password)


def call(what: str, fn: Callable[..., Any], *args: Any) -> Any:
    """One RPC; a fault or an unreachable supervisord becomes a BluegreenError with the server's own words."""
    try:
        return fn(*args)
    except xmlrpc.client.Fault as exc:  # "FAILED: abiapp: ...": the app's own words after the fault's name
        raise BluegreenError(re.sub(r"^[A-Z_]+: ", "", exc.faultString)) from None
    except (OSError, xmlrpc.client.ProtocolError) as exc:
        raise BluegreenError(f"{what}: cannot reach supervisord: {exc}") from None


def app_status(rpc: Any, app: str) -> dict[str, Any]:
    """The app's ``bluegreen.status`` entry."""
    return call("status", rpc.bluegreen.status, app)[0]


def live_commit(status: dict[str, Any]) -> str:
    """The full commit the live color serves ("" before the first deploy)."""
    live = status.get("live") or ""
    return str(status.get("colors", {}).get(live, {}).get("commit") or "") if live else ""


def previous_commit(status: dict[str, Any]) -> str:
    """The commit of the warm rollback target ("" when there is none)."""
    previous = status.get("previous") or ""
    return str(status.get("colors", {}).get(previous, {}).get("commit") or "") if previous else ""


def same_commit(full: str, asked: str) -> bool:
    """Whether ``asked`` (a commit id, 7 to 40 hex digits) names ``full``; a branch or tag never does."""
    asked = asked.strip().lower()
    return bool(full) and bool(COMMIT.match(asked)) and full.lower().startswith(asked)


def settled(status: dict[str, Any]) -> bool:
    """No job queued or running and no watch window open: what the host serves is what it will serve."""
    return not status.get("running") and not status.get("watch")


def facts(status: dict[str, Any], job: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a task returns about the host: live color and commit, the rollback target, the job and its window."""
    window = (job or {}).get("watch") or {}
    return {
        "live": status.get("live") or "",
        "commit": live_commit(status),
        "previous": status.get("previous") or "",
        "previous_commit": previous_commit(status),
        "job": int((job or {}).get("id") or 0),
        "job_status": (job or {}).get("status") or "",
        "rolled_back": window.get("state") == "rolled back",
        "window": window.get("state") or "",
    }


def done(job: dict[str, Any], through_window: bool) -> bool:
    """Whether a followed job is over: finished, and with ``through_window`` its watch window too."""
    if job.get("status") in ACTIVE:
        return False
    return not (through_window and (job.get("watch") or {}).get("state") == "running")


def outcome(job: dict[str, Any]) -> str | None:
    """Why a finished job failed the task (its own message), or None when it did what was asked."""
    if job.get("status") != "succeeded":
        return str(job.get("message") or f"job {job.get('id')} {job.get('status')}")
    window = job.get("watch") or {}
    if window.get("state") == "rolled back":
        return f"{job.get('message') or 'deployed'}; rolled back automatically: {window.get('reason', '')}".strip()
    return None


def follow(
    rpc: Any,
    app: str,
    job_id: int,
    timeout: float,
    through_window: bool,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Poll job ``job_id`` until ``done`` (a deploy superseded in the queue is done: its message says by which)."""
    deadline = clock() + timeout
    while True:
        job = call("job", rpc.bluegreen.job, app, int(job_id), 0)["job"]
        if done(job, through_window):
            return job
        if clock() > deadline:
            raise BluegreenError(f"{app}: job {job_id} still {job.get('status')} after {timeout:g} s")
        sleep(1.0)


def rollback_args(status: dict[str, Any], to: str) -> str:
    """``bluegreen.rollback``'s ``to``: "" (the warm previous color) when it holds ``to``, else ``to`` itself."""
    return "" if not to or same_commit(previous_commit(status), to) else to

"""Shared fixtures and helpers.

Real stacks (supervisord + two gunicorn colors + nginx) stopped by pid in teardown; tiny HTTP servers on
unix sockets; a minimal nginx main config; the smallest ``[app:shop]`` config; stopping a child by pid.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from example.stack import NGINX, Stack  # noqa: E402
from supervisor_bluegreen.shared.store import Store  # noqa: E402


def require_nginx() -> None:
    """The e2e tests need Debian's nginx; fail loudly (never skip) when it is missing."""
    if not os.access(NGINX, os.X_OK):
        pytest.fail(f"{NGINX} is missing: run `make test` (it installs Debian's nginx) or scripts/bootstrap.sh")


SLOW_TEST = """\
import time
from django.test import SimpleTestCase


class Slow(SimpleTestCase):
    def test_slow(self):
        time.sleep(4)
"""


@pytest.fixture(scope="module")
def make_stack() -> Iterator[Callable[..., Stack]]:
    """Factory of laid-out (not started) stacks in short /tmp folders; every one is killed by pid at the end."""
    require_nginx()
    stacks: list[Stack] = []

    def make(**kwargs: object) -> Stack:
        root = Path(tempfile.mkdtemp(prefix="bg-", dir="/tmp"))
        stack = Stack(root, **kwargs)  # type: ignore[arg-type]
        stacks.append(stack)
        return stack.layout()

    try:
        yield make
    finally:
        for stack in stacks:
            stack.kill()
            stack.drop()
            shutil.rmtree(stack.root, ignore_errors=True)


# The e2e stacks' pace: a color is healthy after two passes 0.1 s apart; a drain waits at most 10 s.
QUICK = {"health_passes": "2", "health_interval": "0.1", "drain_timeout": "10"}


def blue_live(make: Callable[..., Stack], **kwargs: object) -> Stack:
    """A started stack with blue live, as after a user's first switch."""
    stack = make(**kwargs).start()
    first = stack.ctl("bluegreen", "switch", "abiapp", "blue")
    assert first.returncode == 0, first.stdout + first.stderr
    return stack


def status(stack: Stack) -> dict:
    """`supervisorctl bluegreen status --json` of the only app, as a user scripts it."""
    out = stack.ctl("bluegreen", "status", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads(out.stdout)[0]


def history(stack: Stack, count: int = 20) -> list[dict]:
    """The newest finished jobs first, as ``bluegreen.history`` answers a script."""
    return stack.rpc().bluegreen.history("abiapp", count)


def other(color: str) -> str:
    return "green" if color == "blue" else "blue"


def jobs_done(stack: Stack, timeout: float = 120) -> dict:
    """The status once no job runs: a command returns when traffic moved, its job goes on with the workers."""
    deadline = time.monotonic() + timeout
    while True:
        now = status(stack)
        if not now["running"] or time.monotonic() > deadline:
            assert not now["running"], f"a job still runs after {timeout:g} s: {now['running']}"
            return now
        time.sleep(0.2)


def push(stack: Stack, files: dict[str, str], message: str, branch: str = "main") -> str:
    """Commit ``files`` on top of main and push them to ``branch`` of the bare repository; the commit."""
    return stack.push(files, message, branch)


def served(stack: Stack) -> tuple[str, str]:
    """(color, version) of a response through nginx."""
    with urllib.request.urlopen(stack.url("/health"), timeout=5) as resp:
        return resp.headers["X-Bluegreen-Color"], resp.headers["X-App-Version"]


def wait_step(stack: Stack, job_id: int, step: str, timeout: float = 60) -> None:
    log = stack.root / "state" / "abiapp" / "jobs" / f"{job_id}.log"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and f"] {step} ..." in log.read_text():
            return
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} never reached {step}: {log.read_text() if log.exists() else 'no log'}")


def job_id_of(out: subprocess.CompletedProcess[str] | str) -> int:
    text = out if isinstance(out, str) else out.stdout
    return int(text.split("queued as job ")[1].split(";")[0].split()[0])


def build_processes(stack: Stack) -> list[str]:
    """Command lines of the build commands (``manage.py ...``) running in this stack's checkouts."""
    found = []
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if "manage.py" in cmdline and (proc.info["cwd"] or "").startswith(f"{stack.root}/"):
            found.append(cmdline)
    return found


def slow_deploy(stack: Stack, version: str, branch: str) -> int:
    """A detached deploy of a release whose tests take 4 s, once its test command runs; its job id."""
    slow = push(stack, {"exampleapp/tests_slow.py": SLOW_TEST, "VERSION": f"{version}\n"}, version, branch=branch)
    job_id = job_id_of(stack.ctl("bluegreen", "deploy", "abiapp", slow, "--detach"))
    wait_step(stack, job_id, "test")
    deadline = time.monotonic() + 10
    while not any(" test " in f"{cmdline} " for cmdline in build_processes(stack)):
        assert time.monotonic() < deadline, f"job {job_id}: no manage.py test process in {stack.root}"
        time.sleep(0.05)
    return job_id


def store_of(stack: Stack) -> Store:
    """The app's store, read straight from its database (as supervisord does: it never waits for the listener),
    so a test sees the jobs while supervisord restarts too."""
    return Store(str(stack.root / "state"), "abiapp", sync=False, lock_wait=5)


def wait_finished(stack: Stack, job_id: int, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    job: dict | None = None
    while time.monotonic() < deadline:
        job = store_of(stack).read_job(job_id) or {}
        if job.get("status") not in ("queued", "running"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish: {job}")


def settled(stack: Stack, timeout: float = 120) -> dict:
    """The status once nothing is pending: no job queued or running, no watch window, no contract, the lock free."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = status(stack)
        if not (now["running"] or now["watch"] or now["contract"] or now["locked"]):
            return now
        time.sleep(0.2)
    raise AssertionError(f"still busy after {timeout:g} s (a stuck job?): {status(stack)}")


def stop_process(proc: subprocess.Popen, timeout: float) -> None:
    """Stop a child we started, by its pid: SIGTERM, wait ``timeout`` s, then SIGKILL."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)


def shop_config(tmp_path: Path, **extra: str) -> str:
    """The smallest socket-mode ``[app:shop]`` config under tmp_path (whose run/ it creates), then ``extra`` keys."""
    (tmp_path / "run").mkdir(exist_ok=True)
    return (
        "[app:shop]\n"
        "program = shop_%(color)s\n"
        f"socket = {tmp_path}/run/shop.%(color)s.sock\n"
        f"live_socket = {tmp_path}/run/shop.live.sock\n"
        "public_url = http://127.0.0.1/health\n"
        f"state_dir = {tmp_path}/state\n"
    ) + "".join(f"{key} = {value}\n" for key, value in extra.items())


def write_nginx_conf(
    tmp_path: Path, site: str, *, worker_processes: int | None = None, worker_connections: int | None = None
) -> Path:
    """Write ``site`` to tmp_path/site.conf and a minimal main nginx.conf including it; return nginx.conf.

    Every path nginx writes (pid, error.log, *_temp_path) is in tmp_path; ``user root`` when run as root.
    """
    (tmp_path / "site.conf").write_text(site)
    user = "user root;\n" if os.geteuid() == 0 else ""
    workers = f"worker_processes {worker_processes};\n" if worker_processes else ""
    events = f"events {{ worker_connections {worker_connections}; }}\n" if worker_connections else "events {}\n"
    temps = "".join(
        f"    {kind}_temp_path {tmp_path}/{kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        f"{user}{workers}pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\n{events}"
        f"http {{\n{temps}    access_log off;\n    include {tmp_path}/site.conf;\n}}\n"
    )
    return conf


def nginx_test(tmp_path: Path, site: str) -> subprocess.CompletedProcess[str]:
    """``nginx -t`` of ``site`` included in a minimal main config whose writable paths are in tmp_path."""
    conf = write_nginx_conf(tmp_path, site)
    argv = [NGINX, "-t", "-p", f"{tmp_path}/", "-c", str(conf), "-e", str(tmp_path / "error.log")]
    return subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)


class FakeClock:
    """A clock (call it for the time) that moves only when the code under test sleeps on it."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


# --------------------------------------------------------------------------------------------
# tiny HTTP servers standing in for a color's gunicorn


class ScriptedHandler(BaseHTTPRequestHandler):
    """Answers with the server's next scripted (status, body); records path and headers."""

    server: TinyServer  # type: ignore[assignment]

    def do_GET(self) -> None:
        srv = self.server
        with srv.lock:
            srv.requests.append((self.path, dict(self.headers.items())))
            status, body = srv.script[min(len(srv.requests), len(srv.script)) - 1]
        if srv.hang:
            srv.release.wait(10)
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Bluegreen-Color", srv.color)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass

    def address_string(self) -> str:
        return "unix"


class TinyServer:
    """State shared by both server flavours (mixed into each)."""

    daemon_threads = True
    block_on_close = False
    script: list[tuple[int, str]]
    requests: list[tuple[str, dict[str, str]]]
    hang: bool
    color: str
    lock: threading.Lock
    release: threading.Event

    def setup_script(self, script: list[tuple[int, str]], hang: bool, color: str) -> None:
        self.script, self.hang, self.color = script, hang, color
        self.requests, self.lock, self.release = [], threading.Lock(), threading.Event()

    @property
    def paths(self) -> list[str]:
        return [p for p, _ in self.requests]


class UnixServer(TinyServer, socketserver.ThreadingUnixStreamServer):
    pass


class TCPServer(TinyServer, ThreadingHTTPServer):
    pass


ServerFactory = Callable[..., TinyServer]


@pytest.fixture
def serve() -> Iterator[ServerFactory]:
    """serve(address, script=[(200, 'ok')], hang=False, tcp=False, color='blue'): a running server, stopped at teardown.

    ``address`` is a unix socket path, or (host, port) with tcp=True. Every answer carries X-Bluegreen-Color.
    """
    servers: list[tuple[TinyServer, threading.Thread]] = []

    def start(
        address: str | tuple[str, int],
        script: list[tuple[int, str]] | None = None,
        hang: bool = False,
        tcp: bool = False,
        color: str = "blue",
    ) -> TinyServer:
        cls = TCPServer if tcp else UnixServer
        srv = cls(address, ScriptedHandler)
        srv.setup_script(script or [(200, "ok")], hang, color)
        thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        servers.append((srv, thread))
        return srv

    try:
        yield start
    finally:
        for srv, thread in servers:
            srv.release.set()
            srv.shutdown()
            srv.server_close()
            thread.join(timeout=5)


# --------------------------------------------------------------------------------------------
# the fast layer starts no program

SPAWN_LOG = os.environ.get("BLUEGREEN_SPAWN_LOG")  # record mode: start them, append "nodeid\targv" lines there
_running: list[pytest.Item] = []  # the test being set up, run or torn down (its module fixtures included)
_refused: dict[str, list[list[str]]] = {}  # nodeid: the argv it tried to start


def _argv_of(args: object) -> list[str]:
    if isinstance(args, (str, bytes, os.PathLike)):
        return [os.fsdecode(args)]
    return [os.fsdecode(arg) if isinstance(arg, (bytes, os.PathLike)) else str(arg) for arg in args]  # type: ignore[union-attr]


def _fast(item: pytest.Item) -> bool:
    return not (item.get_closest_marker("e2e") or item.get_closest_marker("integration"))


def _check_spawn(args: object) -> None:
    """Refuse a program started by a fast-layer test (or a fixture it set up): ``pytest.fail``, which code under
    test catching ``Exception`` does not swallow. With BLUEGREEN_SPAWN_LOG it is logged and let through."""
    if not _running or not _fast(_running[-1]):
        return
    item, argv = _running[-1], _argv_of(args)
    if SPAWN_LOG:
        with open(SPAWN_LOG, "a", encoding="utf-8") as log:
            log.write(f"{item.nodeid}\t{json.dumps(argv)}\n")
        return
    if threading.current_thread() is not threading.main_thread():
        _refused.setdefault(item.nodeid, []).append(argv)
    pytest.fail(f"{item.nodeid} started a program: {argv}; mark it integration (or use a fake)")


@pytest.fixture(scope="session", autouse=True)
def no_program_in_fast_layer() -> Iterator[None]:
    """A test neither ``e2e`` nor ``integration`` fails as soon as it (or a fixture it sets up) starts any program.

    The fast layer (``make test-fast``) stays seconds long and needs no nginx, database, supervisord, git, Django
    or setpriv: all of those run under ``make test``, in tests marked ``integration`` or ``e2e``. Every child goes
    through ``subprocess.Popen._execute_child`` (run, check_output, asyncio, psutil.Popen) or ``os.system``.
    """
    real_execute_child, real_system = subprocess.Popen._execute_child, os.system  # type: ignore[attr-defined]

    def execute_child(self: subprocess.Popen, args: object, *rest: object, **kwargs: object) -> None:
        _check_spawn(args)
        real_execute_child(self, args, *rest, **kwargs)

    def system(command: str) -> int:
        _check_spawn(["/bin/sh", "-c", command])
        return real_system(command)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(subprocess.Popen, "_execute_child", execute_child)
        patch.setattr(os, "system", system)
        yield


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    _running.append(item)
    try:
        return (yield)
    finally:
        _running.pop()


@pytest.fixture(autouse=True)
def started_no_program(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a fast-layer test whose thread tried to start a program (the refusal ended that thread, not the test)."""
    yield
    if refused := _refused.pop(request.node.nodeid, None):
        pytest.fail(f"{request.node.nodeid} started programs: {refused}; mark it integration (or use a fake)")


# The e2e files that take longest, longest first (minutes each: a deploy runs the whole build under load).
LONGEST_FIRST = ("test_e2e_deploy.py", "test_e2e_schema.py", "test_e2e_faults.py", "test_e2e_guard.py",
                 "test_e2e_switch.py", "test_e2e_push.py", "test_demo.py")  # fmt: skip


def _file_rank(item: pytest.Item) -> int:
    name = item.path.name
    if name in LONGEST_FIRST:
        return LONGEST_FIRST.index(name)
    return len(LONGEST_FIRST) + (not name.startswith(("test_e2e_", "test_demo")))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that start real servers are ``e2e`` (``-m 'not e2e'`` is the fast subset, seconds long).

    The files of whole stacks run first, the longest first (a file keeps its own order): with ``-n 2 --dist
    loadfile --no-loadscope-reorder`` (xdist otherwise hands out the files with the most tests first, the e2e
    files last) the long ones start at once and the short ones fill in, instead of one long file running alone
    at the end.
    """
    for item in items:
        if item.path.name.startswith(("test_e2e_", "test_demo")) or "make_stack" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.e2e)
    items.sort(key=_file_rank)

"""supervisord is never held up by the plugin (issue 9), shown on a real supervisord.

A small stack: supervisord with the bluegreen RPC extension and ctl plugin, the "app" (a real HTTP
server per color under supervisor) and a listener. Its listener's dependencies broken: supervisord
still starts and serves the app, and bluegreen commands say what is wrong. The job queue's lock held
by a process that is SIGSTOPped, and the listener SIGSTOPped as if mid-job: `supervisorctl status`
and `bluegreen status` still answer within a second, and a new job is refused as busy at once.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import xmlrpc.client
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import stop_process
from supervisor.xmlrpc import Faults, SupervisorTransport
from test_trust import broken_listener_env

from example.stack import free_port

pytestmark = pytest.mark.e2e

VENV = Path(sys.prefix)

# answers every event at once, does nothing else: a listener that is RUNNING for supervisord
QUIET_LISTENER = """
import sys
while True:
    sys.stdout.write("READY\\n")
    sys.stdout.flush()
    line = sys.stdin.readline()
    if not line:
        break
    headers = dict(token.split(":", 1) for token in line.split())
    sys.stdin.read(int(headers["len"]))
    sys.stdout.write("RESULT 2\\nOK")
    sys.stdout.flush()
"""

HOLD_QUEUE = """
import sys, time
from supervisor_bluegreen.shared.store import Store
with Store(sys.argv[1], "shop").queue_lock():
    print("held", flush=True)
    time.sleep(300)
"""


class MiniStack:
    """supervisord + bluegreen plugin + two colors (http.server) + a listener, in a short /tmp folder."""

    def __init__(self, listener: str, env: dict[str, str] | None = None):
        self.root = Path(tempfile.mkdtemp(prefix="bgt-", dir="/tmp"))
        self.env = env or dict(os.environ)
        self.ports = {"blue": free_port(), "green": free_port()}
        self.proc: subprocess.Popen[bytes] | None = None
        r = self.root
        (r / "state").mkdir(mode=0o750)
        (r / "run").mkdir()
        (r / "listener.py").write_text(QUIET_LISTENER)
        self.ini = r / "bluegreen.ini"
        self.ini.write_text(
            "[app:shop]\nprogram = shop_%(color)s\n"
            f"socket = {r}/run/shop.%(color)s.sock\nlive_socket = {r}/run/shop.live.sock\n"
            f"public_url = http://127.0.0.1:{self.ports['blue']}/\nstate_dir = {r}/state\n"
        )
        commands = {
            "quiet": f"{sys.executable} {r}/listener.py",
            "real": f"{VENV}/bin/bluegreen listener --config {self.ini}",
        }
        programs = "".join(
            f"[program:shop_{color}]\ncommand = {sys.executable} -m http.server --bind 127.0.0.1 {port}\n"
            f"directory = {r}\nstartsecs = 1\nstdout_logfile = {r}/shop_{color}.log\nredirect_stderr = true\n\n"
            for color, port in self.ports.items()
        )
        self.conf = r / "supervisord.conf"
        self.conf.write_text(f"""\
[unix_http_server]
file = {r}/run/sv.sock
chmod = 0700

[supervisord]
logfile = {r}/supervisord.log
pidfile = {r}/run/supervisord.pid
childlogdir = {r}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[rpcinterface:bluegreen]
supervisor.rpcinterface_factory = supervisor_bluegreen.rpcinterface:make_bluegreen_rpcinterface
config = {self.ini}

[supervisorctl]
serverurl = unix://{r}/run/sv.sock

[ctlplugin:bluegreen]
supervisor.ctl_factory = supervisor_bluegreen.controllerplugin:make_bluegreen_controllerplugin

{programs}[eventlistener:bluegreen]
command = {commands[listener]}
events = PROCESS_STATE,REMOTE_COMMUNICATION
startsecs = 1
startretries = 1
stderr_logfile = {r}/listener.err.log
""")

    def rpc(self) -> xmlrpc.client.ServerProxy:
        transport = SupervisorTransport(None, None, f"unix://{self.root}/run/sv.sock")
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)

    def start(self) -> MiniStack:
        log = open(self.root / "supervisord.out", "ab")
        self.proc = subprocess.Popen([f"{VENV}/bin/supervisord", "-n", "-c", str(self.conf)], stdout=log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env,
                                     start_new_session=True)  # fmt: skip
        log.close()
        return self

    def states(self) -> dict[str, str]:
        return {i["name"]: i["statename"] for i in self.rpc().supervisor.getAllProcessInfo()}

    def wait(self, want: dict[str, tuple[str, ...]], timeout: float = 30) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, (self.root / "supervisord.out").read_text()
            try:
                states = self.states()
                if all(states.get(name) in ok for name, ok in want.items()):
                    return states
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"not {want} within {timeout} s: {states}")

    def ctl(self, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
        t0 = time.monotonic()
        out = subprocess.run([f"{VENV}/bin/supervisorctl", "-c", str(self.conf), *args], capture_output=True,
                             text=True, timeout=30, stdin=subprocess.DEVNULL)  # fmt: skip
        return out, time.monotonic() - t0

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, 30)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def stacks() -> Iterator[list[MiniStack]]:
    made: list[MiniStack] = []
    try:
        yield made
    finally:
        for stack in made:
            stack.stop()


def timed(fn, *args):
    t0 = time.monotonic()
    try:
        return fn(*args), time.monotonic() - t0
    except xmlrpc.client.Fault as fault:
        return fault, time.monotonic() - t0


def test_supervisord_starts_and_serves_the_app_when_the_listener_side_is_broken(stacks, tmp_path) -> None:
    """requests, psutil and jinja2 unimportable (in supervisord too): the app runs, bluegreen says why not."""
    stack = MiniStack("real", broken_listener_env(tmp_path))
    stacks.append(stack)
    stack.start().wait(
        {"shop_blue": ("RUNNING",), "shop_green": ("RUNNING",), "bluegreen": ("FATAL", "BACKOFF", "EXITED")}
    )  # both colors reach RUNNING (on a loaded machine green may still be STARTING when blue is up)
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.ports['blue']}/", timeout=5) as resp:
        assert resp.status == 200  # the live app serves
    assert "broken install (test shim)" in (stack.root / "listener.err.log").read_text()  # the shim did bite
    out, _ = stack.ctl("bluegreen", "status")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "shop" in out.stdout
    out, _ = stack.ctl("bluegreen", "health", "shop")
    assert out.returncode != 0
    assert "the bluegreen event listener (bluegreen) is not running" in out.stdout + out.stderr


def test_status_answers_within_a_second_while_the_queue_lock_is_held_and_the_listener_is_stopped(stacks) -> None:
    stack = MiniStack("quiet")
    stacks.append(stack)
    stack.start().wait({"shop_blue": ("RUNNING",), "shop_green": ("RUNNING",), "bluegreen": ("RUNNING",)})
    _, baseline = stack.ctl("status")  # supervisorctl's own start-up on this machine, nothing held
    listener_pid = stack.rpc().supervisor.getProcessInfo("bluegreen")["pid"]
    holder = subprocess.Popen([sys.executable, "-c", HOLD_QUEUE, str(stack.root / "state")], stdout=subprocess.PIPE,
                              text=True)  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        os.kill(holder.pid, signal.SIGSTOP)  # it will never let go by itself
        os.kill(listener_pid, signal.SIGSTOP)  # the listener, stopped as if in the middle of a job
        rpc = stack.rpc()
        infos, seconds = timed(rpc.supervisor.getAllProcessInfo)
        assert seconds < 1.0 and len(infos) == 3
        status, seconds = timed(rpc.bluegreen.status, "shop")
        assert seconds < 1.0 and status[0]["app"] == "shop"
        fault, seconds = timed(rpc.bluegreen.health, "shop")
        assert seconds < 1.0
        assert isinstance(fault, xmlrpc.client.Fault) and fault.faultCode == Faults.STILL_RUNNING
        assert "busy" in fault.faultString and "try again" in fault.faultString
        fault, seconds = timed(rpc.bluegreen.cancel, "shop")
        assert seconds < 1.0 and isinstance(fault, xmlrpc.client.Fault)
        for args in (("status",), ("bluegreen", "status")):
            out, seconds = stack.ctl(*args)
            assert out.returncode == 0, out.stdout + out.stderr
            assert seconds < baseline + 1.0, f"supervisorctl {' '.join(args)}: {seconds:.2f} s"
        # a FIFO planted at the database: refused at once, supervisord unaffected
        db = stack.root / "state" / "shop" / "store.db"
        os.rename(db, f"{db}.aside")
        try:
            os.mkfifo(db)
            fault, seconds = timed(rpc.bluegreen.status, "shop")
            assert seconds < 1.0 and isinstance(fault, xmlrpc.client.Fault)
            assert "store.db: it is a FIFO, not a regular file" in fault.faultString
            out, seconds = stack.ctl("status")
            assert out.returncode == 0 and seconds < baseline + 1.0
        finally:
            os.replace(f"{db}.aside", db)
    finally:
        os.kill(listener_pid, signal.SIGCONT)
        os.kill(holder.pid, signal.SIGKILL)
        os.kill(holder.pid, signal.SIGCONT)
        holder.wait(timeout=10)
        assert holder.stdout is not None
        holder.stdout.close()
    assert os.listdir(stack.root / "state" / "shop" / "jobs") == []  # nothing was queued while busy


def test_status_answers_and_jobs_are_refused_at_once_when_the_state_disk_is_full(stacks) -> None:
    stack = MiniStack("quiet")
    stacks.append(stack)
    state = stack.root / "state"
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0750", "tmpfs", str(state)], check=True)
    try:
        stack.start().wait({"shop_blue": ("RUNNING",), "bluegreen": ("RUNNING",)})
        _, baseline = stack.ctl("status")
        with open(state / "filler", "wb") as f:  # the disk fills up (a backup, a log gone wild)
            try:
                while True:
                    f.write(b"x" * 65536)
                    f.flush()
            except OSError:
                pass
        rpc = stack.rpc()
        status, seconds = timed(rpc.bluegreen.status, "shop")
        assert seconds < 1.0 and status[0]["app"] == "shop"
        fault, seconds = timed(rpc.bluegreen.health, "shop")
        assert seconds < 1.0 and isinstance(fault, xmlrpc.client.Fault), fault
        assert "No space left on device" in fault.faultString
        for args in (("status",), ("bluegreen", "status")):
            out, seconds = stack.ctl(*args)
            assert out.returncode == 0, out.stdout + out.stderr
            assert seconds < baseline + 1.0
        assert stack.states()["shop_blue"] == "RUNNING"
    finally:
        if stack.proc is not None:
            stop_process(stack.proc, 30)
            stack.proc = None
        subprocess.run(["umount", str(state)], check=False)

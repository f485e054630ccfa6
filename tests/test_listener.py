"""Tests for supervisor_bluegreen.listener.loop: supervisor's event listener protocol and event handling.

The protocol tests run the Listener in a real subprocess fed like supervisord feeds it, so they see
the exact bytes on its stdout: any stray print there would desynchronise supervisord.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import shop_config
from supervisor import childutils

from supervisor_bluegreen.listener import loop as listener
from supervisor_bluegreen.listener.loop import Listener
from supervisor_bluegreen.shared.store import Store

RUN_LISTENER = "import sys; from supervisor_bluegreen.listener.loop import Listener; Listener(sys.argv[1]).run()"


def event(name: str, payload: str = "", serial: int = 1) -> str:
    """One event exactly as supervisord writes it to a listener's stdin."""
    return (
        f"ver:3.0 server:supervisor serial:{serial} pool:bluegreen poolserial:{serial} "
        f"eventname:{name} len:{len(payload)}\n{payload}"
    )


EVENTS = [
    event("PROCESS_STATE_STARTING", "processname:shop_green groupname:shop_green from_state:STOPPED tries:0", 1),
    event("PROCESS_STATE_FATAL", "processname:shop_green groupname:shop_green from_state:BACKOFF", 2),
    event("REMOTE_COMMUNICATION", 'type:bluegreen\n{"app": "shop", "job": 1}', 3),
    event("REMOTE_COMMUNICATION", "type:somebody-else\nhello", 4),
    event("TICK_5", "when:1700000000", 5),
    event("SUPERVISOR_STATE_CHANGE_RUNNING", "", 6),
    event("PROCESS_COMMUNICATION_STDOUT", "processname:x groupname:x pid:1\nline one\nline two\n", 7),
]


def expected_stdout(events: int) -> bytes:
    return b"READY\n" + b"RESULT 2\nOKREADY\n" * events


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "bluegreen.ini"
    path.write_text(shop_config(tmp_path))
    return path


def run_listener(config_path: Path, stdin: str) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPERVISOR_")}
    return subprocess.run(
        [sys.executable, "-c", RUN_LISTENER, str(config_path)],
        input=stdin.encode(),
        capture_output=True,
        env=env,
        timeout=30,
        check=False,
    )


# --------------------------------------------------------------------------------------------
# the protocol, in a real process


@pytest.mark.integration
def test_protocol_only_on_stdout_one_result_per_event(tmp_path: Path) -> None:
    proc = run_listener(write_config(tmp_path), "".join(EVENTS))
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout == expected_stdout(len(EVENTS))
    assert b"shop: live color none" in proc.stderr
    assert Store(str(tmp_path / "state"), "shop").read()["live"] is None


@pytest.mark.integration
def test_protocol_with_a_broken_config(tmp_path: Path) -> None:
    """A broken config must not stop the listener answering: supervisord would otherwise stall."""
    path = tmp_path / "bluegreen.ini"
    path.write_text("[app:shop]\nprogram = shop\nsocket = run/shop.sock\n")
    proc = run_listener(path, "".join(EVENTS))
    assert proc.returncode == 0
    assert proc.stdout == expected_stdout(len(EVENTS))
    stderr = proc.stderr.decode()
    assert "config is broken, no jobs will run until it is fixed" in stderr
    assert "[app:shop] socket: 'run/shop.sock' must be an absolute path" in stderr
    assert not (tmp_path / "state").exists()


@pytest.mark.integration
def test_protocol_with_a_missing_config(tmp_path: Path) -> None:
    proc = run_listener(tmp_path / "nope.ini", "".join(EVENTS[:2]))
    assert proc.stdout == expected_stdout(2)
    assert f"{tmp_path}/nope.ini: cannot read: No such file or directory" in proc.stderr.decode()


@pytest.mark.integration
def test_protocol_without_any_event(tmp_path: Path) -> None:
    proc = run_listener(write_config(tmp_path), "")
    assert proc.stdout == b"READY\n"


@pytest.mark.integration
def test_start_reconciles_interrupted_jobs_and_links(tmp_path: Path) -> None:
    """A job left 'running' by a killed listener ends 'interrupted'; the live link decides the live color."""
    config_path = write_config(tmp_path)
    store = Store(str(tmp_path / "state"), "shop")
    job = store.create_job("switch", {"wanted": "green"})
    store.update_job(job["id"], status="running")
    store.update(live="blue")
    os.symlink(tmp_path / "run" / "shop.green.sock", tmp_path / "run" / "shop.live.sock")

    proc = run_listener(config_path, EVENTS[0])
    assert proc.stdout == expected_stdout(1)
    after = store.read_job(job["id"])
    assert after["status"] == "interrupted"
    assert after["message"] == "shop: switch interrupted (listener restarted)"
    assert store.read_log(job["id"])[0] == "interrupted: the listener stopped while this job ran\n"
    assert store.read()["live"] == "green"
    assert b"state said live=blue, links say green: recording green" in proc.stderr


@pytest.mark.integration
def test_wake_after_the_config_was_fixed_starts_the_workers(tmp_path: Path) -> None:
    """Started with a broken config, the listener picks up the fixed file at the next bluegreen wake."""
    path = tmp_path / "bluegreen.ini"
    path.write_text("[app:shop]\nprogram = shop\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPERVISOR_")}
    proc = subprocess.Popen(
        [sys.executable, "-c", RUN_LISTENER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdin is not None and proc.stdout is not None
        assert proc.stdout.read(6) == b"READY\n"
        proc.stdin.write(EVENTS[0].encode())
        proc.stdin.flush()
        assert proc.stdout.read(17) == b"RESULT 2\nOKREADY\n"
        good = write_config(tmp_path)
        os.utime(good, (time.time() + 5, time.time() + 5))  # surely a new mtime
        out, err = proc.communicate(EVENTS[2].encode(), timeout=30)  # then end of input
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert out == b"RESULT 2\nOKREADY\n"
    assert b"config is broken" in err
    assert b"shop: live color none" in err
    assert (tmp_path / "state" / "shop" / "store.db").exists()


# --------------------------------------------------------------------------------------------
# event handling (pure logic)


def test_in_process_the_protocol_goes_to_the_given_stdout_and_nothing_to_the_real_one(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """childutils' functions default to the sys.stdout of their import: the loop must hand its own stdout over."""
    out = io.StringIO()
    Listener("/nonexistent.ini", io.StringIO("".join(EVENTS)), out).run()
    assert out.getvalue() == expected_stdout(len(EVENTS)).decode()
    captured = capfd.readouterr()
    assert captured.out == ""
    assert "/nonexistent.ini: cannot read" in captured.err


def test_headers_are_read_by_childutils() -> None:
    assert childutils.get_headers(EVENTS[4].split("\n", 1)[0]) == {
        "ver": "3.0",
        "server": "supervisor",
        "serial": "5",
        "pool": "bluegreen",
        "poolserial": "5",
        "eventname": "TICK_5",
        "len": "15",
    }


def test_an_event_handle_fails_on_is_logged_and_answered(capfd: pytest.CaptureFixture[str]) -> None:
    """get_headers refuses a token without one ':'; supervisord sends none, but the loop answers even then."""
    bad = event("PROCESS_STATE_RUNNING", "processname:a:b groupname:a junk", 1)
    out = io.StringIO()
    lst = Listener("/nonexistent.ini", io.StringIO(bad + EVENTS[1]), out)
    lst.run()
    assert out.getvalue() == expected_stdout(2).decode()
    assert "PROCESS_STATE_RUNNING: ValueError" in capfd.readouterr().err
    assert lst.watch.crashed_since("shop_green", 0.0) == "FATAL"  # the next event was handled


def test_process_state_updates_the_watch_by_name() -> None:
    lst = Listener("/nonexistent.ini")
    t0 = time.monotonic()
    lst.handle({"eventname": "PROCESS_STATE_FATAL"}, "processname:shop_green groupname:shop_green from_state:BACKOFF")
    assert lst.watch.crashed_since("shop_green", t0) == "FATAL"
    assert lst.watch.crashed_since("shop_blue", 0.0) is None
    assert lst.watch.crashed_since("shop_green", time.monotonic() + 1) is None  # nothing newer than that


def test_process_state_updates_the_watch_in_both_forms_for_a_group() -> None:
    lst = Listener("/nonexistent.ini")
    t0 = time.monotonic()
    lst.handle({"eventname": "PROCESS_STATE_EXITED"}, "processname:shop_blue groupname:web from_state:RUNNING pid:7")
    assert lst.watch.crashed_since("web:shop_blue", t0) == "EXITED"
    assert lst.watch.crashed_since("shop_blue", t0) == "EXITED"
    lst.handle({"eventname": "PROCESS_STATE_RUNNING"}, "processname:shop_blue groupname:web from_state:STARTING\n")
    # supervisord restarted it at once: the crash is still seen by a gate that started before it
    assert lst.watch.crashed_since("web:shop_blue", t0) == "EXITED"


@pytest.fixture
def two_workers() -> tuple[Listener, SimpleNamespace, SimpleNamespace]:
    """A Listener with two stand-in workers: only their wake events matter to handle()."""
    lst = Listener("/nonexistent.ini")
    a, b = (SimpleNamespace(wake=threading.Event(), dispatch_health=lambda: None) for _ in range(2))
    lst.workers.update({"a": a, "b": b})  # type: ignore[dict-item]
    return lst, a, b


def test_remote_communication_wakes_every_worker(
    two_workers: tuple[Listener, SimpleNamespace, SimpleNamespace],
) -> None:
    lst, a, b = two_workers
    lst.handle({"eventname": "REMOTE_COMMUNICATION"}, 'type:bluegreen\n{"app": "a", "job": 3}')
    assert a.wake.is_set() and b.wake.is_set()


@pytest.mark.parametrize(
    ("headers", "payload"),
    [
        ({"eventname": "REMOTE_COMMUNICATION"}, "type:deploy\nbluegreen"),
        ({"eventname": "PROCESS_COMMUNICATION_STDOUT"}, "type:bluegreen\n"),
        ({"eventname": "TICK_60"}, "when:1"),
        ({}, ""),
    ],
)
def test_other_events_wake_nobody(
    two_workers: tuple[Listener, SimpleNamespace, SimpleNamespace], headers: dict[str, str], payload: str
) -> None:
    lst, a, b = two_workers
    lst.handle(headers, payload)
    assert not a.wake.is_set() and not b.wake.is_set()


# --------------------------------------------------------------------------------------------
# main refuses to run outside supervisord


def test_main_refuses_without_supervisor_server_url(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.delenv("SUPERVISOR_SERVER_URL", raising=False)
    assert listener.main(str(write_config(tmp_path))) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "bluegreen listener must run under supervisord as [eventlistener:bluegreen]\n"
    assert not (tmp_path / "state").exists()


@pytest.mark.integration
def test_cli_listener_refuses_without_supervisor_server_url(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPERVISOR_")}
    proc = subprocess.run(
        [sys.executable, "-m", "supervisor_bluegreen.ctl.cli", "listener", "--config", str(write_config(tmp_path))],
        input=b"",
        capture_output=True,
        env=env,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stdout == b""
    assert b"must run under supervisord as [eventlistener:bluegreen]" in proc.stderr

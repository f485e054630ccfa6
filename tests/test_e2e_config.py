"""A broken bluegreen config never keeps supervisord (and so the live app) from starting."""

from __future__ import annotations

import subprocess
import time

import pytest
from conftest import status

from example.stack import Stack

BROKEN = "[app:abiapp]\nprogram = abiapp_blue\nhealth_passes = many\n"


@pytest.fixture(scope="module")
def stack(make_stack) -> Stack:
    """One laid-out stack for the module (a layout is a database, clones, collectstatic and migrate): `check` reads
    its config first, then the other test breaks and starts it."""
    return make_stack()


def test_check_command_lists_every_problem_with_file_and_key(stack: Stack, tmp_path) -> None:
    bad = tmp_path / "bluegreen.ini"
    bad.write_text(
        BROKEN + "[app:other]\nprogram = x_%(colour)s\nsocket = relative.sock\nlive_socket = /l\npublic_url = ftp://x\n"
    )
    out = subprocess.run([f"{stack.venv}/bin/bluegreen", "check", str(bad)], capture_output=True, text=True)
    assert out.returncode == 1
    for line in (
        f"{bad}: config is broken:",
        "[app:abiapp] socket: required but missing",
        "[app:other] program: cannot expand 'x_%(colour)s': only %(color)s is known",
        "[app:other] socket: 'relative.sock' must be an absolute path",
        "[app:other] public_url: 'ftp://x' is not an http:// URL",
    ):
        assert line in out.stderr, out.stderr
    ok = subprocess.run([f"{stack.venv}/bin/bluegreen", "check", str(stack.ini)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip().endswith(": OK")


def test_broken_config_is_reported_once_and_by_every_command_until_fixed(stack: Stack) -> None:
    good = stack.ini.read_text()
    stack.ini.write_text(BROKEN)
    stack.start()  # every program comes up RUNNING: the app is served whatever the plugin thinks
    for args in (["status"], ["switch"], ["rollback"], ["health", "abiapp", "blue"]):
        out = stack.ctl("bluegreen", *args)
        assert out.returncode == 1, out.stdout
        assert "bluegreen config is broken" in out.stdout
        assert "[app:abiapp] socket: required but missing" in out.stdout
        assert "[app:abiapp] health_passes: 'many' is not a whole number" in out.stdout
    log = (stack.root / "log" / "supervisord.log").read_text()
    assert log.count("bluegreen: config is broken") == 1  # logged once, plainly
    assert "Traceback" not in log
    listener_log = stack.root / "log" / "bluegreen.log"
    deadline = time.monotonic() + 15  # supervisord copies the listener's stderr into its log in its own time
    while "config is broken, no jobs will run until it is fixed" not in listener_log.read_text():
        assert time.monotonic() < deadline, listener_log.read_text()
        time.sleep(0.2)

    stack.ini.write_text(good)  # fixed: picked up without restarting anything
    out = stack.ctl("bluegreen", "switch", "abiapp", "blue")
    assert out.returncode == 0, out.stdout
    assert status(stack)["live"] == "blue"


def test_init_sees_the_plugin_loaded_in_a_running_supervisord(stack: Stack) -> None:
    """A second app's init on this server is told `reread && update`, not a reload that restarts every app."""
    from supervisor_bluegreen.ctl import init

    assert init.plugin_loaded(str(stack.root / "etc" / "supervisord.conf")) is True

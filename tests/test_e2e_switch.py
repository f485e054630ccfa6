"""End to end, socket mode: real supervisord + two gunicorn colors of the example app + nginx, under load.

The stack is shared by the module; every test leaves blue live and both colors healthy.
"""

from __future__ import annotations

import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from conftest import blue_live, status

from example.load import Load, summarize
from example.stack import Stack

DEADLINE = 6.0
BROKEN_CODE = {
    # appended to the color's views.py: a later def wins when urls.py reads views.health
    "500": "\ndef health(request):\n    raise RuntimeError('health is broken')\n",
    "hang": "\ndef health(request):\n    import time\n    time.sleep(3600)\n",
}


@pytest.fixture(scope="module")
def stack(make_stack) -> Stack:
    return blue_live(
        make_stack,
        celery=False,  # an app without worker programs: a switch moves traffic only
        ini_overrides={
            "health_deadline": str(DEADLINE),
            "health_timeout": "1",
            "health_passes": "3",
            "health_interval": "0.1",
        },
        # RUNNING at once, so a crashing target reaches the health gate (not just supervisor's startsecs)
        # stopwaitsecs short: the "hang" release would hold gunicorn's 30 s graceful stop on every repair
        program_overrides={"program:abiapp_green": {"startsecs": "0", "startretries": "1", "stopwaitsecs": "3"}},
    )


def color_served(stack: Stack, path: str = "/health") -> str:
    with urllib.request.urlopen(stack.url(path), timeout=5) as resp:
        return resp.headers["X-Bluegreen-Color"]


@contextmanager
def load_on(stack: Stack, **kwargs: object) -> Iterator[tuple[Load, list]]:
    """Continuous keep-alive + fresh + slow load; yields the load and a list to record switches in."""
    switches: list = []
    load = Load("127.0.0.1", stack.port, keepalive=6, fresh=2, slow=1, slow_path="/slow?seconds=2", **kwargs)
    load.start()
    try:
        time.sleep(0.5)
        yield load, switches
    finally:
        load.stop()


def restart_green(stack: Stack) -> None:
    out = stack.ctl("restart", "abiapp_green")
    assert "started" in out.stdout, out.stdout
    stack.wait_running(30, ("abiapp_green",))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # wait for it to answer, not just to run
        health = stack.ctl("bluegreen", "health", "abiapp", "green")
        if health.returncode == 0:
            return
        time.sleep(0.3)
    raise AssertionError(f"green not healthy again: {health.stdout}")


def test_first_switch_made_blue_live(stack: Stack) -> None:
    st = status(stack)
    assert st["live"] == "blue"
    assert st["colors"]["blue"]["role"] == "live"
    assert st["colors"]["green"]["state"] == "RUNNING"
    assert st["colors"]["blue"]["version"]  # the checkout's commit
    assert color_served(stack) == "blue"


def test_switch_and_rollback_under_load_lose_no_request(stack: Stack) -> None:
    with load_on(stack) as (load, switches):
        for command in ("switch", "rollback", "switch", "rollback"):
            began = time.monotonic()
            out = stack.ctl("bluegreen", command, "abiapp")
            assert out.returncode == 0, out.stdout
            assert "live (was" in out.stdout.splitlines()[-1]
            switches.append((time.monotonic(), status(stack)["live"], began))
            time.sleep(0.7)
    result = summarize(load.samples, switches)
    assert [sw[1] for sw in switches] == ["green", "blue", "green", "blue"]
    assert result["requests"] > 100
    assert result["failed"] == 0, result["failed_by_kind"]
    assert result["old_after_switch"] == 0
    slow = [s for s in load.samples if s.kind == "slow"]
    assert slow and all(s.ok for s in slow)  # long requests in flight across every switch completed
    assert {s.color for s in load.samples if s.ok} == {"blue", "green"}


def test_switch_output_shows_steps_with_timings(stack: Stack) -> None:
    out = stack.ctl("bluegreen", "switch")
    assert out.returncode == 0, out.stdout
    for step in ("health gate", "switch", "verify", "record"):
        assert f"{step} done in" in out.stdout
    assert out.stdout.strip().splitlines()[-1].startswith("abiapp: green live (was blue) in ")
    back = stack.ctl("bluegreen", "rollback")
    assert back.returncode == 0, back.stdout
    assert color_served(stack) == "blue"


def test_static_assets_of_both_colors_stay_servable(stack: Stack) -> None:
    (stack.root / "blue/static/only-blue.txt").write_text("blue asset\n")
    (stack.root / "green/static/only-green.txt").write_text("green asset\n")
    for path in ("/static/only-blue.txt", "/static/only-green.txt"):
        with urllib.request.urlopen(stack.url(path), timeout=5) as resp:
            assert resp.status == 200
    assert stack.ctl("bluegreen", "switch").returncode == 0
    try:
        for path in ("/static/only-blue.txt", "/static/only-green.txt"):
            with urllib.request.urlopen(stack.url(path), timeout=5) as resp:
                assert resp.status == 200
    finally:
        assert stack.ctl("bluegreen", "rollback").returncode == 0


def break_green(stack: Stack, how: str) -> None:
    views = stack.checkout("green") / "exampleapp" / "views.py"
    if how == "import":
        wsgi = stack.checkout("green") / "exampleapp" / "wsgi.py"
        wsgi.write_text("raise RuntimeError('release is broken at import')\n" + wsgi.read_text())
    elif how == "nosocket":
        conf = stack.root / "etc/supervisor.d/abiapp.conf"
        text = conf.read_text()
        conf.write_text(
            text.replace(
                f"{stack.venv}/bin/gunicorn --bind unix:{stack.root}/run/abiapp.green.sock",
                f"{stack.venv}/bin/python -c 'import time; time.sleep(3600)' #",
                1,
            )
        )
        assert "time.sleep(3600)" in conf.read_text()
        stack.ctl("update", "abiapp_green")
        return
    else:
        views.write_text(views.read_text() + BROKEN_CODE[how])
    stack.ctl("restart", "abiapp_green")


def repair_green(stack: Stack, how: str) -> None:
    subprocess.run(["git", "checkout", "--", "."], cwd=stack.checkout("green"), check=True)
    if how == "nosocket":
        stack.write_supervisor_conf()
        stack.ctl("update", "abiapp_green")
    restart_green(stack)


@pytest.mark.parametrize(
    "how",
    ["import", "hang", pytest.param("500", marks=pytest.mark.chaos), pytest.param("nosocket", marks=pytest.mark.chaos)],
)
def test_broken_target_is_refused_and_live_keeps_serving(stack: Stack, how: str) -> None:
    with load_on(stack) as (load, _):
        break_green(stack, how)
        try:
            t0 = time.monotonic()
            out = stack.ctl("bluegreen", "switch", "abiapp")
            took = time.monotonic() - t0
            st = status(stack)
        finally:
            repair_green(stack, how)
    result = summarize(load.samples)
    assert out.returncode != 0, out.stdout
    assert "blue live, unchanged" in out.stdout or "not RUNNING; nothing changed" in out.stdout, out.stdout
    assert took < DEADLINE + 8, out.stdout
    assert st["live"] == "blue"
    assert result["failed"] == 0, result["failed_by_kind"]
    assert {s.color for s in load.samples if s.ok} == {"blue"}
    if how == "import":
        # refused by the gate (the target exited) or by supervisor's state, and the log says why
        assert "went EXITED" in out.stdout or "went BACKOFF" in out.stdout or "not RUNNING" in out.stdout
    if how == "500":
        assert "status 500, expected 200" in out.stdout
    if how == "hang":
        assert f"not healthy within {DEADLINE:g} s" in out.stdout and "no answer within 1 s" in out.stdout


def test_crashing_target_shows_its_stderr_tail(stack: Stack) -> None:
    """When the gate ran, the failure shows why the target died, from its own stderr log."""
    break_green(stack, "import")
    try:
        out = stack.ctl("bluegreen", "switch")
    finally:
        repair_green(stack, "import")
    assert out.returncode != 0
    if "not RUNNING" not in out.stdout:
        assert "release is broken at import" in out.stdout, out.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["switch", "nope"], "unknown app 'nope' (configured: abiapp)"),
        (["switch", "abiapp", "purple"], "unknown color 'purple' for app abiapp (colors: blue, green)"),
        (["health", "abiapp", "purple"], "unknown color 'purple'"),
        (["status", "nope"], "unknown app 'nope'"),
        (["switch", "abiapp", "blue"], "blue is already live"),
        (["frobnicate"], "unknown bluegreen command 'frobnicate'"),
        (["switch", "a", "b", "c"], "usage: bluegreen switch [APP] [COLOR]"),
        (["switch", "abiapp;reboot"], "unknown app 'abiapp;reboot'"),
        (["health", "$(reboot)"], "unknown app '$(reboot)'"),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(stack: Stack, args: list[str], message: str) -> None:
    before = status(stack)
    out = stack.ctl("bluegreen", *args)
    assert out.returncode != 0
    assert message in out.stdout, out.stdout
    after = status(stack)
    assert after["live"] == before["live"] == "blue"
    assert after["switched_at"] == before["switched_at"]


def test_health_command_probes_over_the_colors_socket(stack: Stack) -> None:
    out = stack.ctl("bluegreen", "health", "abiapp", "green")
    assert out.returncode == 0, out.stdout
    assert out.stdout.strip().splitlines()[-1].startswith("abiapp green: ok status 200")
    assert status(stack)["last_health"]["color"] == "green"


def test_help_and_human_status(stack: Stack) -> None:
    helped = stack.ctl("help", "bluegreen")
    assert "bluegreen switch [APP] [COLOR]" in helped.stdout
    human = stack.ctl("bluegreen", "status")
    assert human.returncode == 0
    assert "abiapp (socket switch): live blue" in human.stdout
    assert "green    idle" in human.stdout


def test_inet_server_needs_auth_and_serves_the_same_api(stack: Stack) -> None:
    via_inet = stack.ctl("bluegreen", "status", "--json", inet=True)
    assert via_inet.returncode == 0, via_inet.stdout
    assert '"live": "blue"' in via_inet.stdout
    anonymous = subprocess.run(
        [
            f"{stack.venv}/bin/supervisorctl",
            *("-c", str(stack.conf), "-s", f"http://127.0.0.1:{stack.rpc_port}"),
            *("bluegreen", "status"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert anonymous.returncode != 0
    assert "Server requires authentication" in anonymous.stdout
    switched = stack.ctl("bluegreen", "switch", inet=True)
    assert switched.returncode == 0, switched.stdout
    assert stack.ctl("bluegreen", "rollback").returncode == 0  # unix socket sees the same state


def test_state_survives_supervisorctl_reload(stack: Stack) -> None:
    """reload re-creates the RPC interface and restarts the listener: state comes from disk and the links."""
    out = stack.ctl("reload")
    assert "Restarted supervisord" in out.stdout
    time.sleep(1)
    stack.wait_running(60)
    restart_green(stack)
    assert status(stack)["live"] == "blue"
    switched = stack.ctl("bluegreen", "switch")
    assert switched.returncode == 0, switched.stdout
    assert color_served(stack) == "green"
    assert stack.ctl("bluegreen", "rollback").returncode == 0

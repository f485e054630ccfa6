"""End to end, the seed's nginx mode: per-color site files, atomic enabled link, nginx -t, verified reload."""

from __future__ import annotations

import os
import time
import urllib.request

import pytest
from conftest import blue_live, status

from example.load import Load, summarize
from example.stack import Stack


@pytest.fixture(scope="module")
def stack(make_stack) -> Stack:
    ini = {"health_passes": "2", "health_interval": "0.1", "nginx_verify_timeout": "2"}
    return blue_live(make_stack, mode="nginx", celery=False, ini_overrides=ini)


def site_marker(stack: Stack) -> str:
    with urllib.request.urlopen(stack.url("/health"), timeout=5) as resp:
        assert resp.headers["X-Bluegreen-Color"] == resp.headers["X-Bluegreen-Site"]
        return resp.headers["X-Bluegreen-Site"]


def enabled(stack: Stack) -> str:
    return os.readlink(stack.root / "nginx/sites-enabled/abiapp.conf")


def test_switch_swaps_the_site_and_verifies_the_reload(stack: Stack) -> None:
    assert site_marker(stack) == "blue"
    with Load("127.0.0.1", stack.port, keepalive=4, fresh=2, slow=1) as load:
        time.sleep(0.5)
        out = stack.ctl("bluegreen", "switch")
        time.sleep(0.5)
    assert out.returncode == 0, out.stdout
    assert "nginx reloaded: workers" in out.stdout
    assert enabled(stack).endswith("abiapp.green.conf")
    assert site_marker(stack) == "green"
    assert status(stack)["live"] == "green"
    result = summarize(load.samples)
    # nginx < 1.27.4 closes idle keep-alive connections on reload: only such resets may fail, never a 5xx
    assert all(k.startswith("keepalive:") for k in result["failed_by_kind"]), result["failed_by_kind"]
    assert stack.ctl("bluegreen", "rollback").returncode == 0
    assert site_marker(stack) == "blue"


def rewrite_ini(stack: Stack, key: str, value: str) -> str:
    before = stack.ini.read_text()
    lines = [f"{key} = {value}" if line.startswith(f"{key} =") else line for line in before.splitlines()]
    stack.ini.write_text("\n".join(lines) + "\n")
    return before


@pytest.mark.parametrize(
    ("key", "command", "reason"),
    [
        ("nginx_test", "/bin/false", "nginx config test failed (/bin/false)"),
        # `nginx -s reload` exits 0 even when nothing happened: the switch looks for new workers
        ("nginx_reload", "/bin/true", "nginx reload was not applied"),
    ],
)
def test_failed_nginx_step_leaves_the_old_site_live(stack: Stack, key: str, command: str, reason: str) -> None:
    before = rewrite_ini(stack, key, command)
    try:
        out = stack.ctl("bluegreen", "switch")
    finally:
        stack.ini.write_text(before)
    assert out.returncode == 1
    assert reason in out.stdout
    assert "links restored" in out.stdout and "blue live, unchanged" in out.stdout
    assert enabled(stack).endswith("abiapp.blue.conf")
    assert site_marker(stack) == "blue"

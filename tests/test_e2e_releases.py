"""End to end: releases on real supervisord, gunicorn, nginx, git, MariaDB and Celery, under load.

Each deploy builds a release folder of its own beside the live site; a refused one leaves the warm
rollback target running; ``rollback --to`` starts any kept release again (refused past a later
release's contract migration); ``restart`` applies a changed environment file with zero downtime,
and a value that breaks the app is switched back by the watch window. The stack is shared by the
module; tests run in file order.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Iterator

import pytest
from conftest import blue_live, push, served, settled, status
from test_e2e_deploy import FAILING_TEST

from example.load import Load, summarize
from example.stack import Stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(make_stack: Callable[..., Stack]) -> Iterator[Stack]:
    yield blue_live(make_stack, env_file=True, celery=False, watch="6")


def version_json(stack: Stack) -> dict:
    with urllib.request.urlopen(stack.url("/version"), timeout=5) as resp:
        return json.loads(resp.read())


def releases_of(stack: Stack) -> list[str]:
    out = stack.ctl("bluegreen", "releases", "abiapp")
    assert out.returncode == 0, out.stdout
    return out.stdout.strip().splitlines()


def test_a_refused_deploy_keeps_the_rollback_target_and_rollback_brings_back_the_release_before(stack: Stack) -> None:
    before = served(stack)  # blue, the example app as laid out
    good = push(stack, {"VERSION": "r-good\n"}, "good")
    bad = push(stack, {"VERSION": "r-bad\n", "exampleapp/tests_broken.py": FAILING_TEST}, "bad", branch="bad")
    with Load("127.0.0.1", stack.port, keepalive=4, fresh=2, slow=1) as load:
        time.sleep(0.5)
        first = stack.ctl("bluegreen", "deploy", "abiapp", good)
        refused = stack.ctl("bluegreen", "deploy", "abiapp", bad)
        back = stack.ctl("bluegreen", "rollback", "abiapp")
        time.sleep(0.5)
    assert first.returncode == 0, first.stdout
    assert refused.returncode == 1 and "test failed" in refused.stdout and "green live, unchanged" in refused.stdout
    assert back.returncode == 0, back.stdout
    assert "build" not in back.stdout and "checkout done" not in back.stdout  # warm: nothing was built
    assert served(stack) == before
    result = summarize(load.samples)
    assert result["failed"] == 0, result["failed_by_kind"]
    now = status(stack)
    assert (now["live"], now["previous"]) == ("blue", "green")
    assert any(good[:12] in line and "run by green" in line for line in releases_of(stack))
    assert not any(bad[:12] in line for line in releases_of(stack))  # a refused build is no release


def test_three_deploys_then_rollback_to_the_first_serves_it_and_a_contract_refuses_older(stack: Stack) -> None:
    commits = [push(stack, {"VERSION": f"r{n}\n"}, f"r{n}") for n in (1, 2, 3)]
    with Load("127.0.0.1", stack.port, keepalive=4, fresh=2, slow=1) as load:
        for commit in commits:
            out = stack.ctl("bluegreen", "deploy", "abiapp", commit)
            assert out.returncode == 0, out.stdout
        assert served(stack)[1] == "r3"
        back = stack.ctl("bluegreen", "rollback", "abiapp", "--to", commits[0][:8])
        time.sleep(0.5)
    assert back.returncode == 0, back.stdout
    assert f"rolled back to {commits[0][:7]}" in back.stdout
    assert "migrate" not in back.stdout.replace("never migrates", "")
    assert served(stack)[1] == "r1"
    result = summarize(load.samples)
    assert result["failed"] == 0, result["failed_by_kind"]
    assert "release" in stack.ctl("bluegreen", "history", "abiapp", "-n", "1").stdout

    # a release with a contract migration, run once its window passed
    migration = (
        "from django.db import migrations\n\n\nclass Migration(migrations.Migration):\n"
        "    dependencies = [('exampleapp', '0001_initial')]\n"
        "    bluegreen = 'contract'\n"
        "    operations = [migrations.RunSQL('SELECT 1', migrations.RunSQL.noop)]\n"
    )
    contract = push(stack, {"VERSION": "r-contract\n", "exampleapp/migrations/0002_contract.py": migration}, "c")
    out = stack.ctl("bluegreen", "deploy", "abiapp", contract)
    assert out.returncode == 0, out.stdout
    settled(stack)
    refused = stack.ctl("bluegreen", "rollback", "abiapp", "--to", commits[1][:8])
    assert refused.returncode != 0
    assert "contract migrations of a later release were applied after it" in refused.stdout, refused.stdout
    assert served(stack)[1] == "r-contract"


def test_restart_applies_a_changed_environment_and_a_breaking_value_is_rolled_back(stack: Stack) -> None:
    env = stack.root / "etc" / "app.env"
    env.write_text("EXAMPLE_GREETING='hallo'\n")
    live = status(stack)["live"]
    with Load("127.0.0.1", stack.port, keepalive=4, fresh=2, slow=1) as load:
        time.sleep(0.5)
        out = stack.ctl("bluegreen", "restart", "abiapp")
        time.sleep(0.5)
    assert out.returncode == 0, out.stdout
    assert version_json(stack)["greeting"] == "hallo"
    assert status(stack)["live"] != live
    result = summarize(load.samples)
    assert result["failed"] == 0, result["failed_by_kind"]

    # a value that breaks the app a moment after it started: the gate passes, the window switches back
    settled(stack)
    env.write_text("EXAMPLE_GREETING='kaputt'\nEXAMPLE_FAIL_AFTER='1.5'\n")
    good = status(stack)["live"]
    out = stack.ctl("bluegreen", "restart", "abiapp")
    assert out.returncode == 0, out.stdout
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and status(stack)["live"] != good:
        time.sleep(0.5)
    assert status(stack)["live"] == good, status(stack)
    assert version_json(stack)["greeting"] == "hallo"
    history = ""
    while time.monotonic() < deadline and "rolled back automatically" not in history:  # the window's verdict
        history = stack.ctl("bluegreen", "history", "abiapp", "-n", "3").stdout  # is written after its rollback
        time.sleep(0.3)
    assert "rolled back automatically" in history, history

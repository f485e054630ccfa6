"""End to end: Celery workers follow the live release and must really run, on real supervisord, gunicorn,
nginx, git, MariaDB, RabbitMQ and Celery, under load.

A release whose worker passes supervisor's ``startsecs`` and dies seconds later is no success: the
deploy's workers step fails with the worker's stderr, and the watch window brings the previous color
back, its workers included (a task sent afterwards runs the previous release's code).
The stack is shared by the module; tests run in file order.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Iterator
from typing import Callable

import pytest
from celery import Celery
from conftest import QUICK, REPO, blue_live, push, served, status

from example import services
from example.load import Load, summarize
from example.stack import Stack

pytestmark = pytest.mark.e2e

# the release's Celery boots, passes startsecs (3 s in the example's ini), then exits: as a worker does whose
# broker or settings break only once it runs
DIES_AFTER_START = """

import sys as _sys
import threading as _threading

from celery.signals import worker_init


@worker_init.connect
def _exit_soon(**_kwargs):
    print("bad release: this worker exits in 5 s", file=_sys.stderr, flush=True)
    _threading.Timer(5.0, os._exit, (3,)).start()
"""


@pytest.fixture(scope="module")
def stack(make_stack: Callable[..., Stack]) -> Iterator[Stack]:
    yield blue_live(make_stack, watch="30", ini_overrides={**QUICK, "health_deadline": "10"})


def task_version(stack: Stack, timeout: float = 30.0) -> str:
    """Send one task to the app's queue; the version of the code that ran it (the example's TaskRun row)."""
    token = uuid.uuid4().hex
    Celery(broker=services.BROKER_URL).send_task("exampleapp.tasks.record_run", args=[token], queue=stack.name)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with services.mariadb(stack.database) as conn, conn.cursor() as cur:
            cur.execute("SELECT version FROM exampleapp_taskrun WHERE token = %s", (token,))
            row = cur.fetchone()
        if row:
            return row[0]
        time.sleep(0.2)
    raise AssertionError(f"task {token} was not run within {timeout:g} s")


def wait_live(stack: Stack, color: str, timeout: float = 60.0) -> dict:
    """The status once ``color`` is live again and no job runs (the window's rollback, workers included)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = status(stack)
        if now["live"] == color and not now["running"]:
            return now
        time.sleep(0.3)
    raise AssertionError(f"{color} is not live again after {timeout:g} s: {status(stack)}")


def test_a_worker_that_exits_after_start_fails_the_deploy_and_the_window_brings_the_previous_back(
    stack: Stack,
) -> None:
    before = served(stack)
    assert task_version(stack) == before[1]
    celery_py = (REPO / "example" / "app" / "exampleapp" / "celery.py").read_text()
    bad = push(stack, {"VERSION": "worker-dies\n", "exampleapp/celery.py": celery_py + DIES_AFTER_START}, "dies")
    with Load("127.0.0.1", stack.port, keepalive=4, fresh=2, slow=1) as load:
        out = stack.ctl("bluegreen", "deploy", "abiapp", bad, timeout=180)
        after = wait_live(stack, before[0])
        time.sleep(0.5)
    assert out.returncode == 1, out.stdout
    assert "workers FAILED" in out.stdout
    assert "worker abiapp_celery (pid " in out.stdout and "after it was RUNNING" in out.stdout, out.stdout
    assert "bad release: this worker exits in 5 s" in out.stdout  # its output, in the failure
    # the window's guard sees the worker's crash event at once, and may move traffic before the step says so
    assert (
        f"the watch window rolls back to {before[0]}, workers included" in out.stdout
        or f"traffic moved back to {before[0]} meanwhile: its rollback restarts the workers there" in out.stdout
    ), out.stdout
    assert served(stack) == before
    assert after["last_job"]["kind"] == "rollback" and after["last_job"]["status"] == "succeeded"
    assert task_version(stack) == before[1]  # the workers run the previous release again
    [worker] = after["workers"]
    assert (worker["program"], worker["state"]) == ("abiapp_celery", "RUNNING") and worker["pid"] > 0
    assert os.path.realpath(worker["directory"]) == os.path.realpath(stack.root / before[0] / "src")
    shown = stack.ctl("bluegreen", "status", "abiapp").stdout
    assert re.search(rf"worker +abiapp_celery +RUNNING +pid {worker['pid']}, up since ", shown), shown
    result = summarize(load.samples)
    assert result["failed"] == 0, result["failed_by_kind"]

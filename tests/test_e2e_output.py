"""End to end: build output is bounded and harmless (issue 13) on a real stack (supervisord, gunicorn, nginx,
MariaDB, git). A release whose tests print ESC/BEL sequences and 64 MB of coloured text goes live through
`bluegreen push` (the pre-receive hook's command) with exit status 0; its log reads back through
supervisorctl; the listener's memory and the job's log stay bounded."""

from __future__ import annotations

import re
import subprocess

import pytest
from conftest import QUICK, blue_live, job_id_of, push, served

from example.stack import Stack
from supervisor_bluegreen.shared.store import LOG_MAX, MARKER

pytestmark = pytest.mark.e2e

LINE = "\x1b[32mcolour\x1b[0m \x1b]0;title\x07 \u009b1m "  # SGR colours, a terminal title ended by BEL, a C1 CSI
NOISY_TEST = f"""\
import sys

from django.test import SimpleTestCase

LINE = {LINE!r}


class Noisy(SimpleTestCase):
    def test_prints_64_mb_of_colour(self):
        line = LINE + "x" * (1023 - len(LINE.encode())) + "\\n"  # 1 KB a line
        block = line * 1024
        for _ in range(64):
            sys.stdout.write(block)
        sys.stdout.flush()
"""
MB = 1 << 20


@pytest.fixture(scope="module")
def stack(make_stack) -> Stack:
    return blue_live(make_stack, celery=False, ini_overrides=QUICK)


def peak_rss(pid: int) -> int:
    """The highest resident set size of process ``pid`` so far (the kernel's VmHWM), in bytes."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        found = re.search(r"^VmHWM:\s+(\d+) kB$", f.read(), re.MULTILINE)
    assert found
    return int(found.group(1)) * 1024


def test_a_release_printing_64_mb_of_colour_goes_live_and_its_log_reads_back(stack: Stack) -> None:
    listener = stack.rpc().supervisor.getProcessInfo("bluegreen")["pid"]
    pushed = push(stack, {"exampleapp/tests_noisy.py": NOISY_TEST, "VERSION": "v-noisy\n"}, "noisy release")
    out = subprocess.run(
        [f"{stack.venv}/bin/bluegreen", "push", "-c", str(stack.conf), "abiapp", pushed],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert f"abiapp: green live at {pushed[:7]} in " in out.stdout
    assert "\x1b" not in out.stdout and "\x07" not in out.stdout  # nothing reached the pusher's terminal raw
    assert served(stack) == ("green", "v-noisy")
    assert stack.rpc().supervisor.getProcessInfo("bluegreen")["pid"] == listener  # the same listener all along
    assert peak_rss(listener) < 300 * MB, f"listener peak RSS {peak_rss(listener) / MB:.0f} MB"

    job_id = job_id_of(out)
    log_file = stack.root / "state" / "abiapp" / "jobs" / f"{job_id}.log"
    assert log_file.stat().st_size <= LOG_MAX < 32 * MB
    raw = log_file.read_bytes()
    assert not re.search(rb"[\x00-\x08\x0b-\x1f\x7f]|\xc2[\x80-\x9f]", raw)  # no control character on disk
    assert raw.count(MARKER.encode()) == 1 and b" bytes of output left out here" in raw
    assert b"    | \\x1b[32mcolour\\x1b[0m \\x1b]0;title\\x07 \\u009b1m xxx" in raw
    tail = raw.decode().splitlines()[-12:]
    assert any("health gate done in" in line or "switch done in" in line for line in tail), tail  # the newest lines

    log = stack.ctl("bluegreen", "log", "abiapp", str(job_id))
    assert log.returncode == 0, log.stdout[-3000:] + log.stderr[-3000:]
    assert "    | \\x1b[32mcolour\\x1b[0m" in log.stdout and "\x1b" not in log.stdout
    assert f"abiapp: green live at {pushed[:7]} in " in log.stdout.splitlines()[-1]
    for command in (("status",), ("history", "-n", "3")):
        shown = stack.ctl("bluegreen", *command)
        assert shown.returncode == 0, shown.stdout + shown.stderr

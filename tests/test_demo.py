"""`make demo` as a user runs it: the live color answers on the demo port; the printed push recipes work (a good
push goes live and history names its committer; a push whose tests fail is rejected and nothing moves);
demo-stop leaves no process."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil
from conftest import REPO, require_nginx

from example.stack import free_port


def demo(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "example.demo", command], cwd=REPO, env=env, capture_output=True, text=True, timeout=180
    )


def git_push(work: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(work), "push"], capture_output=True, text=True, timeout=300, env=env)


def bare_head(root: Path) -> str:
    out = subprocess.run(["git", "--git-dir", str(root / "app.git"), "rev-parse", "refs/heads/main"],
                         capture_output=True, text=True, check=True)  # fmt: skip
    return out.stdout.strip()


def served(port: int) -> tuple[str, bytes]:
    """The color that answers on the public port and the version it serves."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/version", timeout=5) as resp:
        return resp.headers["X-Bluegreen-Color"], resp.read()


def test_demo_starts_switches_prints_commands_and_stops_everything() -> None:
    require_nginx()
    root = Path(tempfile.mkdtemp(prefix="bg-demo-"))
    port = free_port()
    hosted = ("GL_USERNAME", "GITHUB_USER", "REMOTE_USER", "SUDO_USER")  # the hook would name them, not Alice
    env = {k: v for k, v in os.environ.items() if k not in hosted}
    env.update(BLUEGREEN_DEMO_ROOT=str(root), BLUEGREEN_DEMO_PORT=str(port))
    started = demo("start", env)
    pid = int((root / "run" / "stack.pid").read_text()) if (root / "run" / "stack.pid").exists() else None
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        assert "abiapp: blue live in" in started.stdout
        assert "abiapp: green live at " in started.stdout
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
            assert resp.status == 200
            assert resp.headers["X-Bluegreen-Color"] == "green"
        status_line = next(line for line in started.stdout.splitlines() if line.strip().endswith("bluegreen status"))
        shown = subprocess.run(status_line.split(), capture_output=True, text=True, timeout=60)
        assert shown.returncode == 0
        assert "green    live" in shown.stdout and "blue     idle" in shown.stdout
        # the printed push recipe: clone, commit (as Alice), push; the pre-receive hook takes it live
        printed = [line.strip() for line in started.stdout.splitlines()]
        clone = next(line.split()[2] for line in printed if line.startswith("git clone"))
        work = root / "work"
        subprocess.run(["git", "clone", "-q", clone, str(work)], check=True)
        (work / "VERSION").write_text("my first change\n")
        ident = ["-c", "user.name=Alice", "-c", "user.email=alice@example.org"]
        subprocess.run(["git", "-C", str(work), "add", "VERSION"], check=True)
        subprocess.run(["git", "-C", str(work), *ident, "commit", "-qm", "my first change"], check=True)
        pushed = git_push(work, env)
        assert pushed.returncode == 0 and " live at " in pushed.stderr, pushed.stderr
        good = bare_head(root)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/version", timeout=5) as resp:
            assert b"my first change" in resp.read()
        # the person beside the account, in history and in the log's header
        history_line = next(line for line in printed if line.endswith("bluegreen history -n 1"))
        ctl = history_line.split()[: history_line.split().index("bluegreen")]
        deadline = time.monotonic() + 90  # the push returned once traffic moved: its job hands Celery over still
        while '"running": {}' not in subprocess.run([*ctl, "bluegreen", "status", "--json"], capture_output=True,
                                                    text=True).stdout:  # fmt: skip
            assert time.monotonic() < deadline, "the push's job did not end"
            time.sleep(0.5)
        row = subprocess.run(history_line.split(), capture_output=True, text=True, timeout=60).stdout
        assert f"commit={good[:7]} color=" in row and "by Alice <alice@example.org> (" in row, row
        assert "via git push)" in row and "queued " in row and ", started " in row and ", ended " in row, row
        header = subprocess.run([*ctl, "bluegreen", "log"], capture_output=True, text=True, timeout=60).stdout
        assert re.match(r"job \d+ deploy \(succeeded\) by Alice <alice@example.org> \(.* via git push\), ref "
                        f"{good}, commit {good[:12]}: queued .*, started .*, ended ", header), header  # fmt: skip
        # the printed recipe for a release whose tests fail: the push is rejected, nothing moves
        live_before = served(port)
        for line in printed:
            if line.startswith(("printf ", "git add exampleapp/tests_broken.py")):
                subprocess.run(line, shell=True, cwd=work, check=True, env=env)
        rejected = git_push(work, env)
        assert rejected.returncode != 0, rejected.stderr
        assert "! [remote rejected] main -> main (pre-receive hook declined)" in rejected.stderr
        assert "this release is broken" in rejected.stderr and f"push rejected, main stays at {good}" in rejected.stderr
        assert "waiting for the watch window" not in rejected.stderr  # it built at once, beside the window
        assert bare_head(root) == good
        assert served(port) == live_before
        reset = next(line for line in printed if line.startswith("git reset"))
        subprocess.run(reset, shell=True, cwd=work, check=True)
        assert not (work / "exampleapp" / "tests_broken.py").exists()
        children = psutil.Process(pid).children(recursive=True)
        assert len(children) >= 5  # nginx, listener, two gunicorn masters and their workers
    finally:
        stopped = demo("stop", env)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    leftovers = [p for p in psutil.process_iter(["cmdline"]) if str(root) in " ".join(p.info["cmdline"] or [])]
    assert leftovers == []
    shutil.rmtree(root)  # kept when a check above fails, to look into

"""`make demo` as a user runs it: the live color answers on the demo port; demo-stop leaves no process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import psutil
from conftest import REPO, require_nginx

from example.stack import free_port


def demo(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "example.demo", command], cwd=REPO, env=env, capture_output=True, text=True, timeout=180
    )


def test_demo_starts_switches_prints_commands_and_stops_everything() -> None:
    require_nginx()
    root = Path(tempfile.mkdtemp(prefix="bg-demo-"))
    port = free_port()
    env = dict(os.environ, BLUEGREEN_DEMO_ROOT=str(root), BLUEGREEN_DEMO_PORT=str(port))
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
        # the printed push recipe: clone, commit, push; the post-receive hook takes it live
        clone = next(line.split()[2] for line in started.stdout.splitlines() if line.strip().startswith("git clone"))
        work = root / "work"
        subprocess.run(["git", "clone", "-q", clone, str(work)], check=True)
        (work / "VERSION").write_text("my first change\n")
        ident = ["-c", "user.name=Abi", "-c", "user.email=abi@example.org"]
        subprocess.run(["git", "-C", str(work), "add", "VERSION"], check=True)
        subprocess.run(["git", "-C", str(work), *ident, "commit", "-qm", "my first change"], check=True)
        pushed = subprocess.run(["git", "-C", str(work), "push"], capture_output=True, text=True, timeout=180)
        assert pushed.returncode == 0 and " live at " in pushed.stderr, pushed.stderr
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/version", timeout=5) as resp:
            assert b"my first change" in resp.read()
        children = psutil.Process(pid).children(recursive=True)
        assert len(children) >= 5  # nginx, listener, two gunicorn masters and their workers
    finally:
        stopped = demo("stop", env)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    leftovers = [p for p in psutil.process_iter(["cmdline"]) if str(root) in " ".join(p.info["cmdline"] or [])]
    assert leftovers == []
    shutil.rmtree(root)  # kept when a check above fails, to look into

"""``make bench`` (deploy part): what the orchestration itself costs, and how fast traffic follows a pass.

Each deploy runs the Django preset on the example app (MariaDB, Celery) under light load; a poller
asks nginx for /health on fresh connections as fast as it can. Reported per deploy, then as medians:
- ``total_s``: the deploy's wall time (job start to end);
- ``build_s``: the build steps (backup, migrate, collectstatic, compress, test);
- ``boot_s``: start + health gate (the app booting until it passes);
- ``workers_s``: Celery's graceful restart (warm shutdown + start);
- ``overhead_s``: total - build - boot - workers: resolve, drain, checkout, switch, verify, record,
  and the queueing between them: what bluegreen itself adds;
- ``pass_to_live_ms``: from the health gate passing to the first new-version response through nginx;
- ``release_s``, ``deps_s``: the release's folder (clone, its virtualenv) and the deps step of a code-only
  deploy (requirements unchanged).
Run twice: the demo's layout (one virtualenv outside the colors) and, as ``bluegreen init`` lays an app out,
each color with a virtualenv of its own (``own_venvs``): there each release gets a hard-link copy of the live
one, and the deps step finds its requirements already installed.
Results: a table and ``bench/results/deploy.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from example.stack import REPO, Stack
from supervisor_bluegreen.shared.store import Store

RESULTS = REPO / "bench" / "results"
BUILD = ("backup", "migrate", "collectstatic", "compress", "test")


class Poller(threading.Thread):
    """GET /health through nginx in a loop; remembers when each version was first seen."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.first_seen, self.stop = url, {}, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                with urllib.request.urlopen(self.url, timeout=5) as resp:
                    self.first_seen.setdefault(resp.headers["X-App-Version"], time.time())
            except OSError:
                pass


def new_commit(stack: Stack, version: str) -> str:
    work = stack.root / "work"
    (work / "VERSION").write_text(version + "\n")
    run = lambda *a: subprocess.run(["git", "-C", str(work), *a], check=True, capture_output=True, text=True)  # noqa: E731
    run("add", "VERSION")
    run("-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-qm", version)
    run("push", "-q", "origin", "HEAD:main")
    return run("rev-parse", "HEAD").stdout.strip()


def one_deploy(stack: Stack, poller: Poller, version: str) -> dict[str, Any]:
    new_commit(stack, version)
    out = stack.ctl("bluegreen", "deploy")
    if out.returncode != 0:
        raise SystemExit(f"deploy failed:\n{out.stdout}")
    job_id = int(out.stdout.split("queued as job ")[1].split()[0])
    job = Store(str(stack.root / "state"), "abiapp", sync=False).read_job(job_id) or {}
    steps = {s["name"]: s for s in job["steps"]}
    seconds = {name: s["seconds"] for name, s in steps.items()}
    total = job["finished"] - job["started"]
    build = sum(seconds.get(n, 0.0) for n in BUILD)  # deps and the release folder count as overhead
    boot = seconds["start"] + seconds["health gate"]
    workers = seconds.get("workers", 0.0)
    deadline = time.time() + 10
    while version not in poller.first_seen and time.time() < deadline:
        time.sleep(0.01)
    return {
        "total_s": round(total, 3),
        "build_s": round(build, 3),
        "boot_s": round(boot, 3),
        "workers_s": round(workers, 3),
        "drain_s": seconds.get("drain", 0.0),
        "overhead_s": round(total - build - boot - workers, 3),
        "pass_to_live_ms": round((poller.first_seen[version] - steps["health gate"]["ended"]) * 1000, 1),
        "release_s": seconds.get("release", 0.0),
        "deps_s": seconds.get("deps", 0.0),
    }


def run(deploys: int, own_venvs: bool = False) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="bg-bench-"))
    stack = Stack(root, own_venvs=own_venvs).layout().start()
    poller = Poller(stack.url("/health"))
    try:
        assert stack.ctl("bluegreen", "switch", "abiapp", "blue").returncode == 0
        subprocess.run(["git", "clone", "-q", str(root / "app.git"), str(root / "work")], check=True)
        poller.start()
        runs = []
        if own_venvs:  # the first deploy installs into the colors' own virtualenvs: not code-only
            one_deploy(stack, poller, "bench-0")
        for i in range(deploys):
            print(f"deploy {i + 1}/{deploys}{' (own virtualenvs)' if own_venvs else ''} ...", flush=True)
            runs.append(one_deploy(stack, poller, f"bench-{i + 1}"))
    finally:
        poller.stop.set()
        stack.stop()
        stack.drop()
        shutil.rmtree(root, ignore_errors=True)
    median = {k: round(statistics.median(r[k] for r in runs), 3) for k in runs[0]}
    return {"deploys": runs, "median": median}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--deploys", type=int, default=3)
    deploys = parser.parse_args().deploys
    results = run(deploys)
    results["own_venvs"] = run(deploys, own_venvs=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "deploy.json").write_text(json.dumps(results, indent=2) + "\n")
    for title, part in (("shared virtualenv", results), ("own virtualenvs", results["own_venvs"])):
        keys = list(part["median"])
        print(title)
        print("  ".join(["deploy".ljust(8), *(k.rjust(15) for k in keys)]))
        for i, r in enumerate(part["deploys"], 1):
            print("  ".join([str(i).ljust(8), *(f"{r[k]:15}" for k in keys)]))
        print("  ".join(["median".ljust(8), *(f"{part['median'][k]:15}" for k in keys)]))
    print(f"written: {RESULTS / 'deploy.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``make bench`` (deploy part): what the orchestration itself costs, how fast traffic follows a pass, and
what a switch costs an app with Celery.

Each deploy runs the Django preset on the example app (MariaDB, Celery) under light load; a poller
asks nginx for /health on fresh connections as fast as it can. Reported per deploy, then as medians:
- ``command_s``: ``supervisorctl bluegreen deploy``'s wall time: it returns once traffic moved;
- ``live_s``: the job's start to its record step (traffic moved and recorded);
- ``total_s``: the job's start to its end (the workers handed over after the command returned);
- ``build_s``: the wall time of the build steps (backup, migrate, collectstatic, compress, test: those side by
  side count once); the probe, the gate and deps count as overhead where they run alone;
- ``boot_s``: start + health gate (the app booting until it passes);
- ``workers_s``: the Celery handover (the new color's worker up, answering and settled; the old one's
  warm shutdown), after the command returned;
- ``overhead_s``: live - build - boot: resolve, release, drain, checkout, point, switch, verify, record,
  and the queueing between them: what bluegreen itself adds before traffic moves;
- ``pass_to_live_ms``: from the health gate passing to the first new-version response through nginx;
- ``release_s``, ``deps_s``: the release's folder (clone, its virtualenv) and the deps step of a code-only
  deploy (requirements unchanged).
Run twice: the demo's layout (one virtualenv outside the colors) and, as ``bluegreen init`` lays an app out,
each color with a virtualenv of its own (``own_venvs``): there each release gets a hard-link copy of the live
one, and the deps step finds its requirements already installed.
In the same run, alternating with those deploys on the same stack and commits, the seed's post-receive hook
(``seed_hook``: its steps in its order, one after another: backup, pull, migrate, collectstatic, compress, test,
restart the idle color, re-point the links, restart Celery); ``vs_seed`` is bluegreen's command time over the
hook's. Then switches and a rollback with tasks sent every 0.1 s: each command's time, and how long tasks
waited for a consumer (``consumer_gap_s``: the longest wait across the switches minus the longest without).
Results: a table and ``bench/results/deploy.json``.
"""

from __future__ import annotations

import argparse
import json
import os
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
from example.taskstream import TaskStream
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
    began = time.monotonic()
    out = stack.ctl("bluegreen", "deploy")
    command = time.monotonic() - began
    if out.returncode != 0:
        raise SystemExit(f"deploy failed:\n{out.stdout}")
    job_id = int(out.stdout.split("queued as job ")[1].split()[0])
    job = finished_job(stack, job_id)
    steps = {s["name"]: s for s in job["steps"]}
    seconds = {name: s["seconds"] for name, s in steps.items()}
    total = job["finished"] - job["started"]
    live = steps["record"]["ended"] - job["started"]
    build = wall([(s["ended"] - s["seconds"], s["ended"]) for n, s in steps.items() if n in BUILD])
    boot = seconds["start"] + seconds["health gate"]
    deadline = time.time() + 10
    while version not in poller.first_seen and time.time() < deadline:
        time.sleep(0.01)
    return {
        "command_s": round(command, 3),
        "live_s": round(live, 3),
        "total_s": round(total, 3),
        "build_s": round(build, 3),
        "boot_s": round(boot, 3),
        "workers_s": round(seconds.get("workers", 0.0), 3),
        "drain_s": seconds.get("drain", 0.0),
        "overhead_s": round(live - build - boot, 3),
        "pass_to_live_ms": round((poller.first_seen[version] - steps["health gate"]["ended"]) * 1000, 1),
        "release_s": seconds.get("release", 0.0),
        "deps_s": seconds.get("deps", 0.0),
        "steps": seconds,
    }


def wall(spans: list[tuple[float, float]]) -> float:
    """The time covered by ``spans`` (steps side by side count once): the build's own wall time."""
    covered, end = 0.0, float("-inf")
    for start, stop in sorted(spans):
        covered += max(0.0, stop - max(start, end))
        end = max(end, stop)
    return covered


def finished_job(stack: Stack, job_id: int, timeout: float = 180) -> dict[str, Any]:
    """The job once it ended (a command returns when traffic moved; the job goes on with the workers)."""
    store = Store(str(stack.root / "state"), "abiapp", sync=False)
    deadline = time.monotonic() + timeout
    while True:
        job = store.read_job(job_id) or {}
        if job.get("finished") or time.monotonic() > deadline:
            if job.get("status") != "succeeded":
                raise SystemExit(f"job {job_id} did not succeed: {job.get('message')}")
            return job
        time.sleep(0.1)


def seed_hook(stack: Stack, version: str) -> float:
    """The seed's post-receive hook on the same stack, step after step, as its write-up gives it; its seconds.

    In the idle color's checkout: backup (dumpdata), pull, migrate, collectstatic, compress (absent here, as for
    bluegreen's probe), test; ``supervisorctl restart`` of the idle color; the live links re-pointed (``ln -sfn``:
    this stack switches by links, the seed by a site link and ``nginx -s reload``); Celery restarted.
    """
    commit = new_commit(stack, version)
    live = os.path.basename(os.readlink(stack.root / "run" / "abiapp.live.sock")).split(".")[1]
    idle = "green" if live == "blue" else "blue"
    src, env, python = stack.checkout(idle), stack.env(idle), f"{stack.venv}/bin/python"

    def sh(*argv: str, out: Any = subprocess.DEVNULL) -> None:
        subprocess.run(argv, cwd=src, env=env, check=True, stdout=out, stderr=subprocess.DEVNULL)

    began = time.monotonic()
    with open(stack.root / "seed-backup.json", "w") as dump:
        sh(python, "manage.py", "dumpdata", out=dump)
    sh("git", "fetch", "-q", str(stack.root / "app.git"), "main")
    sh("git", "reset", "-q", "--hard", commit)
    sh(python, "manage.py", "migrate", "--noinput", "-v0")
    sh(python, "manage.py", "collectstatic", "--noinput", "-v0")
    subprocess.run([python, "manage.py", "help", "compress"], cwd=src, env=env, capture_output=True)
    sh(python, "manage.py", "test", "--noinput", "-v0")
    stack.ctl("restart", f"abiapp_{idle}")
    for link, target in (
        ("run/abiapp.live.sock", f"run/abiapp.{idle}.sock"),
        ("run/abiapp.live-static", f"{idle}/static"),
        ("live", idle),
    ):
        subprocess.run(["ln", "-sfn", str(stack.root / target), str(stack.root / link)], check=True)
    stack.ctl("stop", f"abiapp_celery_{live}")  # `service celeryd restart`: one worker, stopped, then started
    stack.ctl("start", f"abiapp_celery_{idle}")
    return time.monotonic() - began


def switches(stack: Stack, count: int) -> dict[str, Any]:
    """``count`` switches then a rollback with tasks sent every 0.1 s: command times, handover, consumer gap."""
    stream = TaskStream(stack.name, interval=0.1)
    stream.start()
    times: dict[str, list[float]] = {"switch": [], "rollback": []}
    handover = []
    try:
        time.sleep(8)
        since = time.time()
        for kind in ["switch"] * count + ["rollback"]:
            began = time.monotonic()
            out = stack.ctl("bluegreen", kind, "abiapp")
            times[kind].append(time.monotonic() - began)
            if out.returncode != 0:
                raise SystemExit(f"{kind} failed:\n{out.stdout}")
            job = finished_job(stack, int(out.stdout.split("queued as job ")[1].split()[0]))
            handover.append(next(s["seconds"] for s in job["steps"] if s["name"] == "workers"))
        time.sleep(1)
    finally:
        stream.stop()
    baseline = stream.outcome(stack.database, until=since)
    across = stream.outcome(stack.database, since=since)
    return {
        "switch_s": [round(t, 3) for t in times["switch"]],
        "switch_median_s": round(statistics.median(times["switch"]), 3),
        "rollback_s": round(times["rollback"][0], 3),
        "handover_median_s": round(statistics.median(handover), 3),
        "tasks_baseline": baseline.record(),
        "tasks_across": across.record(),
        "consumer_gap_s": round(max(0.0, across.wait_max_s - baseline.wait_max_s), 3),
    }


def run(deploys: int, own_venvs: bool = False) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="bg-bench-"))
    stack = Stack(root, own_venvs=own_venvs).layout().start()
    poller = Poller(stack.url("/health"))
    seed: list[float] = []
    try:
        assert stack.ctl("bluegreen", "switch", "abiapp", "blue").returncode == 0
        finished_job(stack, 1)
        subprocess.run(["git", "clone", "-q", str(root / "app.git"), str(root / "work")], check=True)
        poller.start()
        runs = []
        if own_venvs:  # the first deploy installs into the colors' own virtualenvs: not code-only
            one_deploy(stack, poller, "bench-0")
        for i in range(deploys):
            print(f"deploy {i + 1}/{deploys}{' (own virtualenvs)' if own_venvs else ''} ...", flush=True)
            runs.append(one_deploy(stack, poller, f"bench-{i + 1}"))
            if not own_venvs:  # alternating: the same stack, the next commit
                print(f"seed hook {i + 1}/{deploys} ...", flush=True)
                seed.append(seed_hook(stack, f"seed-{i + 1}"))
        switched = {} if own_venvs else switches(stack, 5)
    finally:
        poller.stop.set()
        stack.stop()
        stack.drop()
        shutil.rmtree(root, ignore_errors=True)
    median = {k: round(statistics.median(r[k] for r in runs), 3) for k in runs[0] if k != "steps"}
    median_steps = {n: round(statistics.median(r["steps"].get(n, 0.0) for r in runs), 3) for n in runs[0]["steps"]}
    if seed:
        median["seed_hook_s"] = round(statistics.median(seed), 3)
        median["vs_seed"] = round(median["command_s"] / median["seed_hook_s"], 3)
    return {"deploys": runs, "seed_hook_s": [round(t, 3) for t in seed], "median": median, "steps": median_steps,
            "switches": switched}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--deploys", type=int, default=3)
    deploys = parser.parse_args().deploys
    results = run(deploys)
    results["own_venvs"] = run(deploys, own_venvs=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "deploy.json").write_text(json.dumps(results, indent=2) + "\n")
    for title, part in (("shared virtualenv", results), ("own virtualenvs", results["own_venvs"])):
        keys = [k for k in part["deploys"][0] if k != "steps"]
        print(title)
        print("  ".join(["deploy".ljust(8), *(k.rjust(15) for k in keys)]))
        for i, r in enumerate(part["deploys"], 1):
            print("  ".join([str(i).ljust(8), *(f"{r[k]:15}" for k in keys)]))
        print("  ".join(["median".ljust(8), *(f"{part['median'].get(k, ''):15}" for k in keys)]))
        print("  per step (median s): " + ", ".join(f"{n} {t}" for n, t in part["steps"].items()))
    seen = results["median"]
    print(f"deploy command {seen['command_s']} s vs the seed's hook {seen['seed_hook_s']} s: {seen['vs_seed']}x")
    sw = results["switches"]
    print(f"switch command median {sw['switch_median_s']} s {sw['switch_s']}, rollback {sw['rollback_s']} s, "
          f"handover {sw['handover_median_s']} s after it; tasks waited at most {sw['tasks_across']['wait_max_s']} s "
          f"across ({sw['tasks_baseline']['wait_max_s']} s without a switch): consumer gap {sw['consumer_gap_s']} s, "
          f"missing {sw['tasks_across']['missing']} of {sw['tasks_across']['sent']}")  # fmt: skip
    print(f"written: {RESULTS / 'deploy.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

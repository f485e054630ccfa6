"""``make chaos``: N randomized fault trials against one real stack under continuous load.

One stack (supervisord, two gunicorn colors of the example Django app, nginx, Celery on RabbitMQ,
MariaDB) with a short watch window, one ``example.load.Load`` running for the whole run, and N
trials drawn (balanced, shuffled by ``--seed``) from these kinds:

- ``kill_random``: kill -9 of the listener at a random instant of a deploy (a uniform delay
  between 0 and 1.2 x the calibrated deploy duration after ``deploy --detach``);
- ``kill_failpoint``: the listener kills itself -9 at a random step of the pipeline (failpoints);
- ``import_crash``: a release whose code raises on import (wsgi.py under gunicorn, settings.py, or
  urls.py under gunicorn): refused before the switch;
- ``health_500``: a release whose health path answers 500: refused by the health gate;
- ``health_hang``: a release whose health path hangs: refused by the health gate;
- ``dies_after_golive``: a release whose gunicorn master is killed -9 1-2 s after the deploy's
  ``record`` step: the watch window must roll back by itself.

After each trial the stack must settle (listener up, no job queued/running, lock free, window
closed; bounded, else ``stuck_jobs``) and agree with itself (served color and version, status,
links, Celery, the rollback target), else ``inconsistent_states``. Failed requests are counted
outside the windows between a live color's death and the first success of the previous color
(``failed_requests``); those inside are ``failed_in_crash_windows``. ``crash_to_previous_live_ms``
is from the kill to the first successful response of the previous color that started after it.

Results: a markdown table and ``bench/results/chaos.json``. The stack's folder is kept (processes
stopped, database dropped) when a trial found a problem, or with ``--keep``.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request
import xmlrpc.client
from pathlib import Path
from typing import Any

import psutil

from example.load import Load
from example.stack import REPO, Stack
from supervisor_bluegreen.listener.failpoint import deploy_points
from supervisor_bluegreen.shared.store import Busy, Store

RESULTS = REPO / "bench" / "results"
APP_DIR = REPO / "example" / "app"
WATCH = 4.0
KINDS = {  # kind: weight in the balanced schedule
    "kill_random": 2,
    "kill_failpoint": 1,
    "import_crash": 1,
    "health_500": 1,
    "health_hang": 1,
    "dies_after_golive": 2,
}
REFUSED = ("import_crash", "health_500", "health_hang")
BUILD = "migrate"  # the stack's build: short trials; the failpoints are its steps and the pipeline's
FAILPOINTS = deploy_points(BUILD.split())
SETTLE_S = 60.0
JOB_S = 90.0


class Abort(Exception):
    """The stack cannot go on (it never settles): end the run, keep what was measured."""


# -- the stack, as a user scripts it --------------------------------------------------------------------------------


def status(stack: Stack) -> dict[str, Any]:
    out = stack.ctl("bluegreen", "status", "--json", timeout=30)
    if out.returncode != 0:
        raise RuntimeError(f"status failed: {out.stdout}{out.stderr}")
    return json.loads(out.stdout)[0]


def job_id_of(out: subprocess.CompletedProcess[str]) -> int:
    if "queued as job " not in out.stdout:
        raise RuntimeError(f"no job queued: rc={out.returncode} {out.stdout}{out.stderr}")
    return int(out.stdout.split("queued as job ")[1].split(";")[0].split()[0])


def jobs_dir(stack: Stack) -> Path:
    return stack.root / "state" / "abiapp" / "jobs"


def store_of(stack: Stack) -> Store:
    return Store(str(stack.root / "state"), "abiapp", sync=False)


def read_job(stack: Stack, job_id: int) -> dict[str, Any]:
    try:
        return store_of(stack).read_job(job_id) or {}
    except (OSError, ValueError, Busy):
        return {}


def job_ids(stack: Stack) -> list[int]:
    return store_of(stack).job_ids()


def wait_finished(stack: Stack, job_id: int, timeout: float = JOB_S) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = read_job(stack, job_id)
        if job and job.get("status") not in ("queued", "running"):
            return job
        time.sleep(0.2)
    return read_job(stack, job_id)


def wait_log(stack: Stack, job_id: int, text: str, timeout: float = JOB_S) -> bool:
    log = jobs_dir(stack) / f"{job_id}.log"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and text in log.read_text(errors="replace"):
            return True
        job = read_job(stack, job_id)
        if job.get("status") not in (None, "queued", "running"):
            return log.exists() and text in log.read_text(errors="replace")
        time.sleep(0.05)
    return False


def process_info(stack: Stack, name: str) -> dict[str, Any]:
    try:
        return stack.rpc().supervisor.getProcessInfo(name)
    except (OSError, xmlrpc.client.Fault):
        return {}


def wait_listener_back(stack: Stack, old_pid: int, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = process_info(stack, "bluegreen")
        if info.get("statename") == "RUNNING" and info.get("pid") != old_pid:
            return True
        time.sleep(0.1)
    return False


def settled(stack: Stack, timeout: float = SETTLE_S) -> tuple[dict[str, Any] | None, float]:
    """(status, seconds waited) once no job is queued or running, the lock is free and no window runs; None if never."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    while time.monotonic() < deadline:
        try:
            now = status(stack)
        except (RuntimeError, ValueError, subprocess.TimeoutExpired):
            time.sleep(0.3)
            continue
        listener = process_info(stack, "bluegreen").get("statename")
        if not now["running"] and not now["locked"] and not now["watch"] and listener == "RUNNING":
            return now, time.monotonic() - t0
        time.sleep(0.2)
    return None, time.monotonic() - t0


def served(stack: Stack) -> tuple[str, str]:
    with urllib.request.urlopen(stack.url("/health"), timeout=5) as resp:
        return resp.headers["X-Bluegreen-Color"], resp.headers["X-App-Version"]


def inconsistencies(stack: Stack, now: dict[str, Any]) -> list[str]:
    """What a user sees, compared with itself: tests/test_e2e_faults.py's assert_consistent, reported."""
    problems: list[str] = []
    live = now["live"]
    if live not in ("blue", "green"):
        return [f"status says live={live!r}"]
    checkout = stack.checkout(live)
    expected = (checkout / "VERSION").read_text().strip() if (checkout / "VERSION").exists() else None
    try:
        color, version = served(stack)
        if color != live:
            problems.append(f"nginx serves {color}, status says live {live}")
        if expected is not None and version != expected:
            problems.append(f"served version {version!r} != live checkout's VERSION {expected!r}")
    except OSError as exc:
        problems.append(f"GET /health through nginx failed: {exc!r}")
    if now["colors"][live]["state"] != "RUNNING":
        problems.append(f"live color {live} is {now['colors'][live]['state']}")
    link = stack.root / "run" / "abiapp.live.sock"
    if os.path.realpath(link) != str(stack.root / "run" / f"abiapp.{live}.sock"):
        problems.append(f"{link} resolves to {os.path.realpath(link)}, status says live {live}")
    if os.path.realpath(stack.root / "live") != str(stack.root / live):
        problems.append(f"live_root resolves to {os.path.realpath(stack.root / 'live')}, status says live {live}")
    idle = process_info(stack, f"abiapp_celery_{'green' if live == 'blue' else 'blue'}")
    if idle.get("statename") not in ("STOPPED", "EXITED"):
        problems.append(f"the idle color's Celery is {idle.get('statename')}: it consumes with the code traffic left")
    celery = process_info(stack, f"abiapp_celery_{live}")
    if celery.get("statename") != "RUNNING":
        problems.append(f"Celery is {celery.get('statename')}")
    else:
        try:
            cwd = psutil.Process(celery["pid"]).cwd()
            if cwd != str(checkout):
                problems.append(f"Celery runs in {cwd}, not the live checkout {checkout}")
        except psutil.Error as exc:
            problems.append(f"Celery pid {celery['pid']}: {exc!r}")
    previous = now["previous"]
    if previous:
        if previous == live:
            problems.append(f"previous == live == {live}")
        elif now["colors"][previous]["state"] != "RUNNING":
            problems.append(f"rollback target {previous} is {now['colors'][previous]['state']}")
    return problems


# -- releases -------------------------------------------------------------------------------------------------------


def app_file(name: str) -> str:
    return (APP_DIR / name).read_text()


def release(kind: str, rng: random.Random) -> tuple[str, dict[str, str]]:
    """(variant, files) of a release of ``kind``: the example app with one change."""
    if kind == "import_crash":
        variant = rng.choice(["wsgi", "settings", "urls"])
        boom = 'raise RuntimeError("chaos: this release crashes on import")\n'
        under_gunicorn = 'import sys\nif "gunicorn" in sys.argv[0]:\n    ' + boom
        name = {"wsgi": "exampleapp/wsgi.py", "settings": "exampleapp/settings.py", "urls": "exampleapp/urls.py"}
        text = app_file(name[variant]) + "\n" + (boom if variant == "settings" else under_gunicorn)
        return variant, {name[variant]: text}
    if kind == "health_500":
        views = app_file("exampleapp/views.py")
        ok = 'return HttpResponse(f"ok {VERSION}", content_type="text/plain")'
        assert ok in views
        return "500", {"exampleapp/views.py": views.replace(ok, 'return HttpResponse("chaos", status=500)')}
    if kind == "health_hang":
        views = app_file("exampleapp/views.py")
        head = '    """Readiness probe: 200 only when the database is reachable."""\n'
        assert head in views
        return "hang", {"exampleapp/views.py": views.replace(head, head + "    time.sleep(3600)\n")}
    return "", {}


# -- trials ---------------------------------------------------------------------------------------------------------


class Chaos:
    def __init__(self, stack: Stack, rng: random.Random, deploy_s: float):
        self.stack, self.rng, self.deploy_s = stack, rng, deploy_s
        self.failpoint = stack.root / "state" / "abiapp" / "failpoint"

    def deploy(self, commit: str) -> int:
        return job_id_of(self.stack.ctl("bluegreen", "deploy", "abiapp", commit, "--detach", timeout=60))

    def listener_pid(self) -> int:
        return int(process_info(self.stack, "bluegreen").get("pid") or 0)

    def trial(self, i: int, kind: str) -> dict[str, Any]:
        stack = self.stack
        before, _ = settled(stack)
        if before is None:
            raise Abort(f"trial {i}: the stack did not settle before the trial: {status(stack)}")
        rec: dict[str, Any] = {
            "trial": i,
            "kind": kind,
            "live_before": before["live"],
            "problems": [],
            "start_mono": time.monotonic(),
            "start_wall": time.time(),
        }
        variant, files = release(kind, self.rng)
        rec["variant"] = variant
        version = f"chaos-{i}-{kind}"
        commit = stack.push({"VERSION": version + "\n", **files}, f"trial {i}: {kind} {variant}", f"t{i}")
        first_job = (job_ids(stack) or [0])[-1] + 1
        if kind == "kill_random":
            self.kill_listener(rec, commit, delay=self.rng.uniform(0, 1.2 * self.deploy_s))
        elif kind == "kill_failpoint":
            self.kill_listener(rec, commit, point=self.rng.choice(FAILPOINTS))
        elif kind in REFUSED:
            job_id = self.deploy(commit)
            rec["job"] = job_id
            job = wait_finished(stack, job_id)
            rec["job_status"], rec["job_message"] = job.get("status"), (job.get("message") or "")[:300]
            if job.get("status") in ("queued", "running"):
                rec["problems"].append(f"deploy job {job_id} still {job.get('status')} after {JOB_S:g} s")
            elif job.get("status") == "succeeded":
                rec["problems"].append(f"unexpected: the {kind} release was deployed: {rec['job_message']}")
        else:
            self.dies_after_golive(rec, commit)
        now, waited = settled(stack)
        rec["settle_s"] = round(waited, 2)
        if now is None:
            rec["stuck"] = True
            now = status(stack)
            rec["problems"].append(
                f"stuck: not settled within {SETTLE_S:g} s: running={now['running']} "
                f"locked={now['locked']} watch={now['watch']}"
            )
        else:
            rec["stuck"] = False
        rec["live_after"] = now["live"]
        rec["inconsistent"] = inconsistencies(stack, now)
        if self.failpoint.exists():
            rec["failpoint_unreached"] = self.failpoint.read_text().strip()
            self.failpoint.unlink()
        if kind in REFUSED and now["live"] != before["live"]:
            rec["problems"].append(f"unexpected: live moved {before['live']} -> {now['live']} on a {kind} release")
        if kind == "dies_after_golive" and now["live"] != before["live"]:
            rec["problems"].append(f"unexpected: the dead release's color {now['live']} is live after the trial")
        jobs = [read_job(stack, j) for j in job_ids(stack) if j >= first_job]
        rec["jobs"] = [
            {
                "id": j.get("id"),
                "kind": j.get("kind"),
                "who": j.get("who"),
                "status": j.get("status"),
                "message": (j.get("message") or "")[:300],
            }
            for j in jobs
        ]
        auto = [j for j in jobs if j.get("kind") == "rollback" and j.get("who") == "bluegreen watch"]
        rec["auto_rollbacks"] = len(auto)
        if kind == "dies_after_golive" and rec.get("killed_wall"):
            if not auto:
                rec["problems"].append("no automatic rollback after the live color died")
            else:
                switch = [s for s in auto[0].get("steps") or [] if s.get("name") == "switch"]
                if switch and switch[0].get("ended"):
                    rec["listener_crash_to_switch_ms"] = round((switch[0]["ended"] - rec["killed_wall"]) * 1000, 1)
        if kind != "dies_after_golive" and auto:
            rec["problems"].append(f"unexpected automatic rollback(s) on a {kind} trial: {rec['jobs']}")
        rec["end_mono"] = time.monotonic()
        rec["seconds"] = round(rec["end_mono"] - rec["start_mono"], 2)
        return rec

    def kill_listener(self, rec: dict[str, Any], commit: str, *, delay: float = 0.0, point: str = "") -> None:
        stack = self.stack
        pid = self.listener_pid()
        if point:
            rec["failpoint"] = point
            self.failpoint.write_text(point)
        job_id = self.deploy(commit)
        rec["job"] = job_id
        if point:  # the listener kills itself when it reaches the point; a point this run never reaches ends the job
            deadline = time.monotonic() + JOB_S
            while time.monotonic() < deadline and self.listener_pid() == pid:
                if read_job(stack, job_id).get("status") not in (None, "queued", "running"):
                    break
                time.sleep(0.1)
            rec["listener_killed"] = self.listener_pid() != pid or not self.failpoint.exists()
            back = wait_listener_back(stack, pid) if rec["listener_killed"] else True
        else:
            rec["delay_s"] = round(delay, 3)
            time.sleep(delay)
            job = read_job(stack, job_id)
            rec["at_kill"] = f"{job.get('status')}:{job.get('step', '')}"
            if self.listener_pid() == pid:
                os.kill(pid, signal.SIGKILL)
            rec["listener_killed"] = True
            back = wait_listener_back(stack, pid)
        if rec["listener_killed"] and not back:
            rec["problems"].append("the listener did not come back within its bound")
        job = wait_finished(stack, job_id)
        rec["job_status"], rec["job_message"] = job.get("status"), (job.get("message") or "")[:300]
        if job.get("status") in ("queued", "running"):
            rec["problems"].append(f"deploy job {job_id} still {job.get('status')} after {JOB_S:g} s")

    def dies_after_golive(self, rec: dict[str, Any], commit: str) -> None:
        stack = self.stack
        job_id = self.deploy(commit)
        rec["job"] = job_id
        # 1-2 s after the deploy's go-live is recorded: while it restarts the workers, with the window open
        # (a kill after the job ends may come after the window: with watch = 4 s it is over by then)
        rec["variant"] = "after_record"
        if not wait_log(stack, job_id, "record done in"):
            job = read_job(stack, job_id)
            rec["problems"].append(f"the deploy never went live: {job.get('status')}: {job.get('message')}")
            return
        new = "green" if rec["live_before"] == "blue" else "blue"
        delay = self.rng.uniform(1.0, 2.0)
        time.sleep(delay)
        rec["delay_s"] = round(delay, 3)
        pid = process_info(stack, f"abiapp_{new}").get("pid")
        if not pid:
            rec["problems"].append(f"abiapp_{new} has no pid {delay:.1f} s after record")
            return
        job = read_job(stack, job_id)
        rec["at_kill"] = f"{job.get('status')}:{job.get('step', '')}"
        rec["killed_wall"] = time.time()
        rec["killed_mono"] = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        rec["killed_color"] = new
        job = wait_finished(stack, job_id)
        rec["job_status"], rec["job_message"] = job.get("status"), (job.get("message") or "")[:300]


# -- the run --------------------------------------------------------------------------------------------------------


def make_stack(root: Path) -> Stack:
    stack = Stack(
        root,
        celery=True,
        watch=f"{WATCH:g}",
        ini_overrides={
            "watch_interval": "0.3",
            "watch_failures": "3",
            "health_passes": "2",
            "health_interval": "0.1",
            "health_deadline": "15",
            "drain_timeout": "5",
            "build": BUILD,
        },
    )
    # a hung release must not hold a trial for gunicorn's 30 s graceful timeout when the gate stops it
    text = stack.rewrite((REPO / "conf/supervisor/abiapp.conf").read_text())
    for color in ("blue", "green"):
        section = text.split(f"[program:abiapp_{color}]")[1]
        command = section.split("command = ")[1].split("\n")[0]
        assert "--graceful-timeout 30" in command
        stack.program_overrides[f"program:abiapp_{color}"] = {
            "command": command.replace("--graceful-timeout 30", "--graceful-timeout 5"),
            "stopwaitsecs": "15",
        }
    return stack


def calibrate(stack: Stack, chaos: Chaos) -> float:
    """Seconds from ``deploy --detach`` to the job's end, for a release that holds."""
    commit = stack.push({"VERSION": "chaos-calibrate\n"}, "calibrate", "calibrate")
    t0 = time.time()
    job_id = chaos.deploy(commit)
    job = wait_finished(stack, job_id)
    if job.get("status") != "succeeded":
        raise Abort(f"the calibration deploy did not succeed: {job}")
    return job["finished"] - t0


def schedule(n: int, rng: random.Random, only: list[str] | None = None) -> list[str]:
    cycle = [k for k, w in KINDS.items() for _ in range(w) if not only or k in only]
    kinds: list[str] = []
    while len(kinds) < n:  # whole shuffled cycles: every kind keeps its share, in a random order
        block = list(cycle)
        rng.shuffle(block)
        kinds += block
    return kinds[:n]


def median_max(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"median": None, "max": None}
    return {"median": round(statistics.median(values), 1), "max": round(max(values), 1)}


def analyze(records: list[dict[str, Any]], samples: list[Any]) -> dict[str, Any]:
    """Crash windows from the samples; failed requests in and outside them, attributed to trials."""
    ok_by_color: dict[str, list[Any]] = {}
    for s in samples:  # sorted by start
        if s.ok:
            ok_by_color.setdefault(s.color, []).append(s)
    starts = {color: [s.start for s in ok] for color, ok in ok_by_color.items()}
    windows: list[tuple[float, float]] = []
    for rec in records:
        if "killed_mono" not in rec:
            continue
        killed, previous = rec["killed_mono"], rec["live_before"]
        ok = ok_by_color.get(previous, [])
        first = bisect.bisect_left(starts.get(previous, []), killed)
        horizon = killed + 120
        back = min((s.end for s in itertools.takewhile(lambda s: s.start < horizon, ok[first:])), default=None)  # noqa: B023
        if back is None:
            rec["problems"].append("no success of the previous color after the kill")
            windows.append((killed, rec.get("end_mono", killed)))
            continue
        rec["crash_to_previous_live_ms"] = round((back - killed) * 1000, 1)
        windows.append((killed, back))
    outside, inside = [], []
    for s in samples:
        if s.ok:
            continue
        if any(s.end >= lo and s.start <= hi for lo, hi in windows):
            inside.append(s)
        else:
            outside.append(s)
    for s in outside:
        owner = next((r for r in records if r["start_mono"] <= s.start <= r.get("end_mono", float("inf"))), None)
        where = f"trial {owner['trial']} ({owner['kind']})" if owner else "between trials"
        line = f"{s.kind} request failed ({s.error}, status {s.status}) at +{s.start - samples[0].start:.2f} s, {where}"
        if owner is not None:
            owner.setdefault("failed_requests", []).append(line)
    return {"outside": outside, "inside": inside}


def summarize_run(records: list[dict[str, Any]], samples: list[Any], extra: dict[str, Any]) -> dict[str, Any]:
    failed = analyze(records, samples)
    by_kind: dict[str, dict[str, Any]] = {}
    for kind in KINDS:
        rs = [r for r in records if r["kind"] == kind]
        by_kind[kind] = {
            "trials": len(rs),
            "inconsistent_states": sum(1 for r in rs if r.get("inconsistent")),
            "stuck_jobs": sum(1 for r in rs if r.get("stuck")),
            "unexpected_outcomes": sum(1 for r in rs if r.get("problems")),
            "failed_requests": sum(len(r.get("failed_requests", [])) for r in rs),
            "auto_rollbacks": sum(r.get("auto_rollbacks", 0) for r in rs),
            "crash_to_previous_live_ms": median_max(
                [r["crash_to_previous_live_ms"] for r in rs if "crash_to_previous_live_ms" in r]
            ),
            "crash_to_previous_live_ms_by_variant": {
                v: median_max(
                    [
                        r["crash_to_previous_live_ms"]
                        for r in rs
                        if r.get("variant") == v and "crash_to_previous_live_ms" in r
                    ]
                )
                for v in sorted({r.get("variant", "") for r in rs})
                if kind == "dies_after_golive"
            },
            "variants": {
                v: sum(1 for r in rs if r.get("variant") == v) for v in sorted({r.get("variant", "") for r in rs})
            },
            "trial_seconds": median_max([r["seconds"] for r in rs if "seconds" in r]),
            "outcomes": sorted({f"{r.get('job_status')}" for r in rs}),
        }
    problems = []
    for r in records:
        for p in r.get("inconsistent", []):
            problems.append(f"trial {r['trial']} ({r['kind']} {r.get('variant', '')}): inconsistent: {p}")
        for p in r.get("problems", []):
            problems.append(f"trial {r['trial']} ({r['kind']} {r.get('variant', '')}): {p}")
        for p in r.get("failed_requests", []):
            problems.append(p)
    crash = [r["crash_to_previous_live_ms"] for r in records if "crash_to_previous_live_ms" in r]
    listener = [r["listener_crash_to_switch_ms"] for r in records if "listener_crash_to_switch_ms" in r]
    return {
        "trials": len(records),
        "failed_requests": len(failed["outside"]),
        "inconsistent_states": sum(1 for r in records if r.get("inconsistent")),
        "stuck_jobs": sum(1 for r in records if r.get("stuck")),
        "auto_rollbacks": sum(r.get("auto_rollbacks", 0) for r in records),
        "crash_to_previous_live_ms": median_max(crash),
        "listener_crash_to_switch_ms": median_max(listener),
        "failed_in_crash_windows": len(failed["inside"]),
        "unexpected_outcomes": sum(1 for r in records if r.get("problems")),
        "requests": len(samples),
        **extra,
        "by_kind": by_kind,
        "problems": problems,
        "trials_detail": [{k: v for k, v in r.items() if not k.endswith("_mono")} for r in records],
    }


def table(result: dict[str, Any]) -> str:
    head = [
        "kind",
        "trials",
        "inconsistent",
        "stuck",
        "unexpected",
        "failed req",
        "auto rollbacks",
        "crash→prev live ms (median/max)",
        "trial s (median/max)",
    ]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def mm(d: dict[str, Any]) -> str:
        return "-" if d["median"] is None else f"{d['median']:g} / {d['max']:g}"

    for kind, k in result["by_kind"].items():
        rows.append(
            f"| {kind} | {k['trials']} | {k['inconsistent_states']} | {k['stuck_jobs']} | "
            f"{k['unexpected_outcomes']} | {k['failed_requests']} | {k['auto_rollbacks']} | "
            f"{mm(k['crash_to_previous_live_ms'])} | {mm(k['trial_seconds'])} |"
        )
    r = result
    rows.append(
        f"| **all** | {r['trials']} | {r['inconsistent_states']} | {r['stuck_jobs']} | "
        f"{r['unexpected_outcomes']} | {r['failed_requests']} | {r['auto_rollbacks']} | "
        f"{mm(r['crash_to_previous_live_ms'])} | |"
    )
    rows.append("")
    rows.append(
        f"requests: {r['requests']}, failed inside crash windows: {r['failed_in_crash_windows']}, "
        f"listener kill->rollback switch ms (median/max): {mm(r['listener_crash_to_switch_ms'])}, "
        f"run: {r['seconds']:.0f} s"
    )
    return "\n".join(rows)


def run(
    n: int, seed: int, keep: bool, snapshot: str = "", kinds: list[str] | None = None, max_minutes: float = 0
) -> tuple[dict[str, Any], bool]:
    rng = random.Random(seed)
    root = Path(tempfile.mkdtemp(prefix="bg-chaos-", dir="/tmp"))
    stack = make_stack(root)
    records: list[dict[str, Any]] = []
    load: Load | None = None
    samples: list[Any] = []
    extra: dict[str, Any] = {"seed": seed, "watch_s": WATCH, "root": str(root)}
    t0 = time.monotonic()
    aborted = ""
    try:
        if snapshot:  # run the package as committed at REF, whatever the working tree holds meanwhile
            code = root / "code"
            code.mkdir()
            archive = subprocess.run(
                ["git", "-C", str(REPO), "archive", snapshot, "supervisor_bluegreen"], check=True, capture_output=True
            ).stdout
            subprocess.run(["tar", "-x", "-C", str(code)], input=archive, check=True)
            os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(code), os.environ.get("PYTHONPATH")]))
            extra["code"] = subprocess.run(
                ["git", "-C", str(REPO), "rev-parse", snapshot], check=True, capture_output=True, text=True
            ).stdout.strip()
        else:
            extra["code"] = "working tree"
        stack.layout().start()
        first = stack.ctl("bluegreen", "switch", "abiapp", "blue")
        if first.returncode != 0:
            raise Abort(f"first switch failed: {first.stdout}")
        load = Load(
            "127.0.0.1", stack.port, keepalive=4, fresh=2, slow=1, max_seconds=n * 300 + 600, pause=0.01
        ).start()
        chaos = Chaos(stack, rng, deploy_s=0.0)
        chaos.deploy_s = calibrate(stack, chaos)
        extra["calibrated_deploy_s"] = round(chaos.deploy_s, 2)
        print(f"stack in {root}; a deploy takes {chaos.deploy_s:.1f} s; {n} trials (seed {seed})", flush=True)
        stop_at = time.monotonic() + max_minutes * 60 if max_minutes else float("inf")
        for i, kind in enumerate(schedule(n, rng, kinds), 1):
            if time.monotonic() > stop_at:
                raise Abort(f"--max-minutes {max_minutes:g} reached after {i - 1} trials")
            rec = chaos.trial(i, kind)
            records.append(rec)
            flags = [f for f in ("inconsistent", "problems") if rec.get(f)] + (["stuck"] if rec.get("stuck") else [])
            print(
                f"[{i}/{n}] {kind} {rec.get('variant', '')} {rec.get('at_kill', rec.get('failpoint', ''))} "
                f"job={rec.get('job_status')} live {rec['live_before']}->{rec['live_after']} {rec['seconds']:.1f} s"
                + (f"  !! {flags}: {rec.get('inconsistent')} {rec.get('problems')}" if flags else ""),
                flush=True,
            )
    except Abort as exc:
        aborted = str(exc)
        print(f"ABORTED: {exc}", flush=True)
    except BaseException as exc:  # noqa: BLE001 - recorded, then the stack is stopped all the same
        aborted = f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
    finally:
        if load is not None:
            samples = sorted(load.stop(), key=lambda s: s.start)
        stack.stop()
        stack.drop()
    extra["seconds"] = round(time.monotonic() - t0, 1)
    if aborted:
        extra["aborted"] = aborted
    result = summarize_run(records, samples, extra)
    bad = bool(aborted or result["problems"] or result["inconsistent_states"] or result["stuck_jobs"])
    if not keep and not bad:
        shutil.rmtree(root, ignore_errors=True)
    else:
        result["kept"] = str(root)
    return result, bad


def interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # the run's finally stops the stack by pid


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=100, help="trials (default 100)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random, printed)")
    parser.add_argument("--keep", action="store_true", help="keep the stack folder (logs, state) afterwards")
    parser.add_argument(
        "--snapshot",
        default="",
        metavar="REF",
        help="run supervisor_bluegreen as committed at REF (git archive), not the working tree",
    )
    parser.add_argument("--kinds", nargs="+", choices=list(KINDS), help="only these kinds of trial (debugging)")
    parser.add_argument("--max-minutes", type=float, default=0, help="start no trial after this (0: no bound)")
    parser.add_argument("--out", default=str(RESULTS / "chaos.json"))
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    signal.signal(signal.SIGTERM, interrupted)
    result, bad = run(args.n, seed, args.keep, args.snapshot, args.kinds, args.max_minutes)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    for p in result["problems"]:
        print(f"- {p}")
    if "kept" in result:
        print(f"stack folder kept: {result['kept']}")
    print(f"written: {out}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

"""``make bench``: switching traffic under continuous load, three procedures in one run.

- ``bluegreen``: ``supervisorctl bluegreen switch`` (health gate, reload-free socket switch, verify);
- ``reload``: the seed's procedure, ``ln -sfn`` of the site file plus ``nginx -s reload``, no gate;
- ``noswitch``: the control: the same load, and the same number of supervisorctl calls at the same pace
  (``bluegreen health`` of the idle color, a job with a probe), but no switch: the noise floor.

The load (example/load.py) never retries: keep-alive and fresh-connection clients plus a slow request
always in flight. Results: a table on stdout and ``bench/results/switch.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from example.load import Load, Sample, summarize
from example.stack import NGINX, REPO, Stack

RESULTS = REPO / "bench" / "results"
FAST_GATE = {"health_passes": "2", "health_interval": "0.1", "health_timeout": "2", "health_deadline": "30"}
COLUMNS = ("switches", "requests", "failed", "max_gap_ms", "p99_ms", "max_ms", "old_after_switch")


def measured(stack: Stack, act: Any, count: int, pause: float, switching: bool = True) -> dict[str, Any]:
    """Run the load, call ``act(color)`` ``count`` times with ``pause`` between, and summarize."""
    load = Load("127.0.0.1", stack.port, keepalive=8, fresh=2, slow=1, slow_path="/slow?seconds=2")
    done: list[tuple[float, str, float]] = []
    load.start()
    t0 = time.monotonic()
    time.sleep(1.0)
    for i in range(count):
        color = "green" if i % 2 == 0 else "blue"
        began = time.monotonic()
        act(color)
        if switching:
            done.append((time.monotonic(), color, began))
        time.sleep(pause)
    t1 = time.monotonic()
    samples: list[Sample] = load.stop()
    result = summarize([s for s in samples if s.start >= t0], done, window=(t0 + 1.0, t1))
    result["seconds"] = round(t1 - t0, 1)
    return result


def bluegreen_switch(stack: Stack):
    def switch_once(color: str) -> None:
        out = stack.ctl("bluegreen", "switch", "abiapp", color)
        if out.returncode != 0:
            raise SystemExit(f"bluegreen switch failed:\n{out.stdout}")

    return switch_once


def idle_health(stack: Stack):
    def check_once(color: str) -> None:
        out = stack.ctl("bluegreen", "health", "abiapp", "green")
        if out.returncode != 0:
            raise SystemExit(f"bluegreen health failed:\n{out.stdout}")

    return check_once


def reload_switch(stack: Stack):
    """The seed's abiapp-switch: replace the enabled site link, then nginx -s reload (exit 0 trusted)."""
    sites = stack.root / "nginx" / "sites-available"
    enabled = stack.root / "nginx" / "sites-enabled" / "abiapp.conf"
    reload_cmd = [NGINX, "-p", f"{stack.root}/nginx/", "-c", "nginx.conf", "-e", f"{stack.root}/log/nginx.error.log"]

    def switch_once(color: str) -> None:
        subprocess.run(["ln", "-sfn", str(sites / f"abiapp.{color}.conf"), str(enabled)], check=True)
        subprocess.run([*reload_cmd, "-s", "reload"], check=True)

    return switch_once


def run(switches: int, pause: float) -> dict[str, Any]:
    procedures: dict[str, Any] = {}
    roots = []
    try:
        root = Path(tempfile.mkdtemp(prefix="bg-bench-"))
        roots.append(root)
        stack = Stack(root, ini_overrides=FAST_GATE, celery=False).layout().start()
        try:
            assert stack.ctl("bluegreen", "switch", "abiapp", "blue").returncode == 0
            print(f"bluegreen: {switches} switches under load ...", flush=True)
            procedures["bluegreen"] = measured(stack, bluegreen_switch(stack), switches, pause)
            print("noswitch: the same load and supervisorctl calls, no switch ...", flush=True)
            procedures["noswitch"] = measured(stack, idle_health(stack), switches, pause, switching=False)
        finally:
            stack.stop()
        root = Path(tempfile.mkdtemp(prefix="bg-bench-"))
        roots.append(root)
        stack = Stack(root, mode="nginx", ini_overrides=FAST_GATE, celery=False).layout().start()
        try:
            # the first go-live renders both per-color site files; from then on the seed's procedure switches
            assert stack.ctl("bluegreen", "switch", "abiapp", "blue").returncode == 0
            print(f"reload: {switches} switches with ln -sfn + nginx -s reload ...", flush=True)
            procedures["reload"] = measured(stack, reload_switch(stack), switches, pause)
        finally:
            stack.stop()
    finally:
        for root in roots:
            shutil.rmtree(root, ignore_errors=True)
    return {"procedures": procedures, "load": "8 keep-alive + 2 fresh-connection clients, 1 slow (2 s) in flight"}


def table(results: dict[str, Any]) -> str:
    rows = [("procedure", *COLUMNS, "failed_by_kind")]
    for name in ("bluegreen", "reload", "noswitch"):
        r = results["procedures"][name]
        cells = [f"{r[c]:.1f}" if isinstance(r[c], float) else str(r[c]) for c in COLUMNS]
        rows.append((name, *cells, json.dumps(r["failed_by_kind"])))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--switches", type=int, default=20)
    parser.add_argument("--pause", type=float, default=0.5, help="seconds between switches")
    args = parser.parse_args()
    results = run(args.switches, args.pause)
    bg, noswitch = results["procedures"]["bluegreen"], results["procedures"]["noswitch"]
    results["verdict"] = {
        "bluegreen_failed_zero": bg["failed"] == 0,
        "gap_within_2x_or_20ms_of_noswitch": bg["max_gap_ms"]
        <= max(2 * noswitch["max_gap_ms"], noswitch["max_gap_ms"] + 20),
        "old_after_switch_zero": bg["old_after_switch"] == 0,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "switch.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(table(results))
    print(json.dumps(results["verdict"]))
    print(f"written: {RESULTS / 'switch.json'}")
    return 0 if all(results["verdict"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())

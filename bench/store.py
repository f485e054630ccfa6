"""``make bench``: what supervisord's loop pays to answer ``bluegreen status`` and ``history`` (issue 14).

A store holding 1,000 finished jobs (deploys with their step timings, as the listener records them)
and one running; then rpcinterface's ``status`` and ``history`` are called directly, as supervisord
calls them (a fresh Store per call, no fsync, the lock only tried), each ``--rounds`` times. Results:
a table of p50/p95/max in ms on stdout and ``bench/results/store.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from supervisor.states import ProcessStates

from supervisor_bluegreen.shared.store import Store
from supervisor_bluegreen.supervisord import rpcinterface

RESULTS = Path(__file__).resolve().parent / "results"
STEPS = ("fetch", "build", "collectstatic", "test", "backup", "migrate", "start", "health", "switch", "verify")


class Running:
    """A supervisord process as the RPC extension sees it: always RUNNING."""

    def get_state(self) -> int:
        return ProcessStates.RUNNING


def api_for(root: Path) -> rpcinterface.BlueGreenNamespaceRPCInterface:
    """The RPC interface object supervisord would make for one app whose state lives under ``root``."""
    (root / "run").mkdir()
    ini = root / "bluegreen.ini"
    ini.write_text(
        "[app:shop]\nprogram = shop_%(color)s\n"
        f"socket = {root}/run/shop.%(color)s.sock\nlive_socket = {root}/run/shop.live.sock\n"
        f"public_url = http://127.0.0.1/health\nstate_dir = {root}/state\n"
    )
    names = ("bluegreen", "shop_blue", "shop_green")
    groups = {n: SimpleNamespace(processes={n: Running()}) for n in names}
    supervisord = SimpleNamespace(options=SimpleNamespace(logger=SimpleNamespace(error=print)), process_groups=groups)
    return rpcinterface.make_bluegreen_rpcinterface(supervisord, config=str(ini))


def fill(state_dir: str, count: int) -> None:
    """``count`` finished deploys (every 10th failed) and one running, through the Store's own API."""
    store = Store(state_dir, "shop", sync=False)
    store.ensure()
    store.update(live="blue", previous="green", switched_at=time.time(), colors={"blue": {"version": "abc"}})
    for i in range(count):
        job = store.create_job("deploy", {"ref": "main", "allow_unsafe": False}, who="alice@vm via supervisorctl")
        steps = [{"name": s, "seconds": 1.5, "ok": True} for s in STEPS]
        store.update_job(
            job["id"],
            status="failed" if i % 10 == 9 else "succeeded",
            started=time.time(),
            finished=time.time(),
            ref="main",
            commit=f"{i:040x}",
            color="green" if i % 2 else "blue",
            steps=steps,
            message=f"shop: deploy of main ({i:07x}) live on blue\nhealth 200 in 12 ms",
        )
    store.claim(store.create_job("deploy", {"ref": "main"}, who="bob")["id"])


def timed(call: Any, rounds: int) -> dict[str, float]:
    """p50, p95 and max of ``rounds`` calls, in ms (after one warm-up call)."""
    call()
    took = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        call()
        took.append((time.perf_counter() - t0) * 1000)
    took.sort()
    return {
        "p50_ms": round(statistics.median(took), 3),
        "p95_ms": round(took[int(len(took) * 0.95) - 1], 3),
        "max_ms": round(took[-1], 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--out", default=str(RESULTS / "store.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        root = Path(tmp)
        api = api_for(root)
        t0 = time.perf_counter()
        fill(str(root / "state"), args.jobs)
        filled = time.perf_counter() - t0
        assert api.status("shop")[0]["running"]["kind"] == "deploy"
        assert len(api.history("shop", 10)) == 10
        results = {
            "jobs": args.jobs,
            "rounds": args.rounds,
            "fill_seconds": round(filled, 2),
            "status": timed(lambda: api.status("shop"), args.rounds),
            "history": timed(lambda: api.history("shop", 10), args.rounds),
        }
    print(f"{args.jobs} finished jobs kept, {args.rounds} calls each (filled in {results['fill_seconds']} s)")
    print(f"{'method':<10}{'p50_ms':>10}{'p95_ms':>10}{'max_ms':>10}")
    for name in ("status", "history"):
        row = results[name]
        print(f"{name:<10}{row['p50_ms']:>10}{row['p95_ms']:>10}{row['max_ms']:>10}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

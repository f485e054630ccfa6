"""Tests for supervisor_bluegreen.shared.store: atomic JSON files, the store (state, jobs, queue), logs, the lock.

The lock tests use real subprocesses: an flock is per open file, and the point of AppLock is
that a second process (the listener vs. a stale holder) sees it, and that kill -9 frees it.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import xmlrpc.client
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from xml.parsers.expat import ExpatError

import pytest

from supervisor_bluegreen.shared.model import ACTIVE, FINISHED
from supervisor_bluegreen.shared.store import (
    KEEP_HEALTH,
    LINE_MAX,
    LOG_MAX,
    MARKER,
    AppLock,
    Busy,
    Store,
    StoreError,
    history_entry,
    read_json,
    write_json_atomic,
)
from supervisor_bluegreen.shared.textsafe import escape_controls
from supervisor_bluegreen.supervisord.rpcinterface import xmlrpc_safe

# --------------------------------------------------------------------------------------------
# write_json_atomic / read_json


def test_write_json_atomic_creates_and_replaces_without_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    write_json_atomic(str(path), {"live": "blue"})
    assert json.loads(path.read_text()) == {"live": "blue"}
    write_json_atomic(str(path), {"live": "green", "previous": "blue"})
    assert json.loads(path.read_text()) == {"live": "green", "previous": "blue"}
    assert os.listdir(tmp_path) == ["state.json"]


def test_write_json_atomic_failure_keeps_old_content_and_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    write_json_atomic(str(path), {"live": "blue"})
    with pytest.raises(TypeError):
        write_json_atomic(str(path), {"live": object()})  # not JSON-serialisable
    assert json.loads(path.read_text()) == {"live": "blue"}
    assert os.listdir(tmp_path) == ["state.json"]


def test_readers_never_see_a_partial_file(tmp_path: Path) -> None:
    """While one thread rewrites a big file over and over, another only ever reads whole JSON."""
    path = str(tmp_path / "state.json")
    write_json_atomic(path, {"n": 0, "pad": "x" * 200_000})
    stop = threading.Event()

    def writer() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            write_json_atomic(path, {"n": n, "pad": "x" * 200_000})

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(200):
            assert len(read_json(path)["pad"]) == 200_000  # json.load would raise on a torn file
    finally:
        stop.set()
        thread.join()
    assert os.listdir(tmp_path) == ["state.json"]


def test_read_json_default_when_missing(tmp_path: Path) -> None:
    assert read_json(str(tmp_path / "nope.json"), {"x": 1}) == {"x": 1}
    assert read_json(str(tmp_path / "nope.json")) is None


# --------------------------------------------------------------------------------------------
# Store: app state, jobs, logs


def test_store_update_merges_state(tmp_path: Path) -> None:
    store = Store(str(tmp_path), "shop").ensure()
    assert store.read() == {}
    store.update(live="blue")
    assert store.update(previous="green") == {"live": "blue", "previous": "green"}
    assert Store(str(tmp_path), "shop", sync=False, lock_wait=0.05).read() == {"live": "blue", "previous": "green"}
    assert sorted(os.listdir(tmp_path / "shop")) == ["jobs", "store.db", "store.db-shm", "store.db-wal"]


def test_job_ids_increase_and_continue_across_store_instances(tmp_path: Path) -> None:
    store = Store(str(tmp_path), "shop")
    ids = [store.create_job("switch", {"wanted": ""}, who="alice")["id"] for _ in range(3)]
    assert ids == [1, 2, 3]
    again = Store(str(tmp_path), "shop").create_job("rollback", {})
    assert again["id"] == 4
    assert Store(str(tmp_path), "shop").job_ids() == [1, 2, 3, 4]
    job = store.read_job(1)
    assert (job["kind"], job["args"], job["who"], job["status"]) == ("switch", {"wanted": ""}, "alice", "queued")
    assert [j["id"] for j in store.jobs(("queued",))] == [1, 2, 3, 4]


def test_concurrent_job_creation_gives_unique_ids(tmp_path: Path) -> None:
    """Many creators at once (the RPC extension runs in every supervisord HTTP server) never share an id."""
    results: list[int] = []
    lock = threading.Lock()

    def create() -> None:
        job = Store(str(tmp_path), "shop").create_job("health", {})
        with lock:
            results.append(job["id"])

    threads = [threading.Thread(target=create) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == list(range(1, 21))
    store = Store(str(tmp_path), "shop")
    assert store.job_ids() == list(range(1, 21))
    assert {store.read_job(i)["id"] for i in range(1, 21)} == set(range(1, 21))


def test_update_job_and_status_filter(tmp_path: Path) -> None:
    store = Store(str(tmp_path), "shop")
    store.create_job("switch", {})
    store.create_job("health", {})
    store.update_job(1, status="succeeded", message="shop: green live")
    assert [j["id"] for j in store.jobs(("queued", "running"))] == [2]
    assert store.read_job(1)["message"] == "shop: green live"
    assert store.read_job(99) is None


def test_a_job_is_seen_whole_or_not_at_all(tmp_path: Path) -> None:
    """A worker must never pick up (and run) a job before its kind and arguments are written: readers
    (supervisord's status, another thread) see a queue change only once its transaction is over."""
    store = Store(str(tmp_path), "shop").ensure()
    reader = Store(str(tmp_path), "shop", sync=False, lock_wait=0.05)
    seen: list[Any] = []
    with store.queue_lock():
        job = store.create_job("deploy", {"ref": "main"})
        thread = threading.Thread(target=lambda: seen.append((reader.jobs(("queued",)), reader.read_job(job["id"]))))
        thread.start()
        thread.join(timeout=10)
        assert store.read_job(job["id"])["args"] == {"ref": "main"}  # the writer sees its own change
    assert seen == [([], None)]
    assert [j["args"] for j in reader.jobs(("queued",))] == [{"ref": "main"}]
    assert store.claim(7) is None and store.read_job(7) is None


def test_whoever_sees_a_job_ended_sees_it_as_the_last_job(tmp_path: Path) -> None:
    """A status read between a job's end and its ``last_job`` named the job before (a test waiting for the
    rollback's end read the deploy's verdict): the end and ``last_job`` are one change."""
    seen: list[tuple[list[int], dict]] = []

    class Watched(Store):
        def update(self, **changes: Any) -> dict[str, Any]:  # another process reads just before last_job is set
            reader = Store(str(tmp_path), "shop", sync=False, lock_wait=0.05)
            look = threading.Thread(target=lambda: seen.append(([j["id"] for j in reader.jobs(("queued", "running"))],
                                                                reader.read().get("last_job") or {})))  # fmt: skip
            look.start()
            look.join(timeout=10)
            return super().update(**changes)

    store = Watched(str(tmp_path), "shop").ensure()
    job = store.create_job("rollback", {})
    store.claim(job["id"])
    store.finish(job["id"], "succeeded", "shop: blue live")
    assert seen == [([job["id"]], {})], seen  # still running, or ended and last: never ended with another last
    assert store.read()["last_job"] == {"id": job["id"], "kind": "rollback", "status": "succeeded",
                                        "message": "shop: blue live"}  # fmt: skip
    assert store.read_job(job["id"])["finished"]


KILLED_MID_CHANGE = """
import os, sys
from supervisor_bluegreen.shared.store import Store
store = Store(sys.argv[1], "shop")
with store.queue_lock():
    store.create_job("deploy", {"ref": "half"})
    store.update(live="green")
    print("changed", flush=True)
    sys.stdin.read()
"""


@pytest.mark.integration  # a second process
def test_a_change_killed_half_way_leaves_nothing_and_no_lock(tmp_path: Path) -> None:
    """kill -9 in the middle of a queue change (the listener, say): none of it was made, and the lock is free."""
    store = Store(str(tmp_path), "shop").ensure()
    store.update(live="blue")
    proc = subprocess.Popen([sys.executable, "-c", KILLED_MID_CHANGE, str(tmp_path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "changed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()
    supervisord_side = Store(str(tmp_path), "shop", sync=False, lock_wait=0.05)
    assert supervisord_side.read() == {"live": "blue"} and supervisord_side.jobs() == []
    assert supervisord_side.enqueue("deploy", {"ref": "main"})["id"] == 1  # not waiting for a dead holder


def test_active_jobs_are_found_by_index_not_by_reading_the_finished_ones(tmp_path: Path) -> None:
    """supervisord's status, deploy and cancel read the active jobs: their cost must not grow with history."""
    store = Store(str(tmp_path), "shop", sync=False).ensure()
    for _ in range(50):
        store.update_job(store.create_job("deploy", {})["id"], status="succeeded")
    store.create_job("deploy", {})
    assert [j["id"] for j in store.jobs(ACTIVE)] == [51]
    conn = sqlite3.connect(store.db_path)
    try:
        plan = conn.execute("EXPLAIN QUERY PLAN SELECT data FROM jobs WHERE status IN (?, ?) ORDER BY id", ACTIVE)
        assert "USING INDEX jobs_status" in " ".join(row[-1] for row in plan)
    finally:
        conn.close()


def test_read_log_whole_lines_and_offsets(tmp_path: Path) -> None:
    store = Store(str(tmp_path), "shop")
    job = store.create_job("switch", {})["id"]
    assert store.read_log(job) == ("", 0)
    store.append_log(job, "reconcile ...")
    store.append_log(job, "reconcile done\n")  # a trailing newline is not doubled
    text, offset = store.read_log(job)
    assert text == "reconcile ...\nreconcile done\n"
    assert offset == len(text.encode())
    # a writer is half-way through a line: only whole lines are handed out
    with open(store.log_path(job), "a", encoding="utf-8") as f:
        f.write("health gate: pro")
    assert store.read_log(job, offset) == ("", offset)
    with open(store.log_path(job), "a", encoding="utf-8") as f:
        f.write("be ok ✓\nswitch ...\nswi")
    text, offset2 = store.read_log(job, offset)
    assert text == "health gate: probe ok ✓\nswitch ...\n"
    assert offset2 == offset + len(text.encode("utf-8"))
    assert store.read_log(job, offset2) == ("", offset2)
    full, _ = store.read_log(job)
    assert full == "reconcile ...\nreconcile done\nhealth gate: probe ok ✓\nswitch ...\n"


# --------------------------------------------------------------------------------------------
# AppLock across processes

HOLD = """
import sys, time
from supervisor_bluegreen.shared.store import AppLock
lock = AppLock(sys.argv[1])
print("held" if lock.acquire() else "busy", flush=True)
time.sleep(60)
"""

TRY = """
import sys
from supervisor_bluegreen.shared.store import AppLock
lock = AppLock(sys.argv[1])
print(lock.held_elsewhere(), lock.acquire())
"""


def try_in_subprocess(path: Path) -> str:
    """What a second process sees: 'held_elsewhere acquired'."""
    proc = subprocess.run(
        [sys.executable, "-c", TRY, str(path)], capture_output=True, text=True, timeout=20, check=True
    )
    return proc.stdout.strip()


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """A subprocess that holds the lock at tmp_path/lock until killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_lock_acquire_release(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    lock = AppLock(str(path))
    assert lock.held_elsewhere() is False  # no lock file yet
    assert lock.acquire() is True
    assert path.read_text() == str(os.getpid())
    assert lock.held_elsewhere() is True
    lock.release()
    assert path.read_text() == ""
    assert lock.held_elsewhere() is False
    assert lock.acquire() is True
    lock.release()
    lock.release()  # releasing twice is harmless


@pytest.mark.integration
def test_second_process_cannot_acquire_while_held(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    lock = AppLock(str(path))
    assert lock.acquire()
    try:
        assert try_in_subprocess(path) == "True False"
    finally:
        lock.release()
    assert try_in_subprocess(path) == "False True"


@pytest.mark.integration
def test_lock_held_by_another_process(tmp_path: Path, holder: subprocess.Popen[str]) -> None:
    lock = AppLock(str(tmp_path / "lock"))
    assert lock.held_elsewhere() is True
    assert lock.acquire() is False
    assert (tmp_path / "lock").read_text() == str(holder.pid)  # a failed acquire does not overwrite


@pytest.mark.integration
def test_no_stale_lock_after_holder_is_killed(tmp_path: Path, holder: subprocess.Popen[str]) -> None:
    """kill -9 of the holder frees the lock at once, though its pid is still written in the file."""
    lock = AppLock(str(tmp_path / "lock"))
    assert lock.acquire() is False
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=10)
    assert (tmp_path / "lock").read_text() == str(holder.pid)
    assert lock.held_elsewhere() is False
    assert lock.acquire() is True
    lock.release()


def test_queued_deploys_coalesce_to_the_newest_and_a_claim_wins_once(tmp_path: Path) -> None:
    store = Store(str(tmp_path), "shop").ensure()
    running = store.enqueue("deploy", {"ref": "a"}, coalesce=True)
    assert store.claim(running["id"]) and not store.claim(running["id"])
    queued = [store.enqueue("deploy", {"ref": ref}, coalesce=True) for ref in ("b", "c", "d")]
    health = store.enqueue("health", {})
    statuses = {j["id"]: (j["status"], j["message"]) for j in store.jobs()}
    assert statuses[running["id"]][0] == "running"  # a running deploy is never superseded
    assert statuses[queued[0]["id"]] == ("cancelled", f"shop: deploy superseded by job {queued[1]['id']}")
    assert statuses[queued[1]["id"]] == ("cancelled", f"shop: deploy superseded by job {queued[2]['id']}")
    assert statuses[queued[2]["id"]][0] == "queued"
    assert statuses[health["id"]][0] == "queued"  # other kinds are left alone
    assert not store.claim(queued[0]["id"])  # a superseded job is never run


def test_history_entry_shows_who_what_and_the_first_line_of_the_outcome(tmp_path: Path) -> None:
    job = {"id": 7, "kind": "deploy", "status": "failed", "ref": "main", "commit": "3f2c1a9e", "color": "green",
           "who": "abi@vm via supervisorctl", "created": 1.0, "finished": 2.0, "backup": "/b/x.sql.gz",
           "message": "abiapp: deploy failed: test failed\nblue live, unchanged",
           "steps": [{"name": "test", "seconds": 1.5, "ok": False}]}  # fmt: skip
    entry = history_entry(job)
    assert entry["message"] == "abiapp: deploy failed: test failed"
    assert entry["steps"] == job["steps"] and entry["backup"] == "/b/x.sql.gz" and entry["commit"] == "3f2c1a9e"


def test_a_job_records_when_it_was_queued_started_and_ended_and_history_shows_all_three(tmp_path: Path) -> None:
    store = Store(str(tmp_path), "shop").ensure()
    job = store.enqueue("deploy", {"ref": "main"}, "Alice <alice@example.org> (abiapp@vm via git push)")
    assert job["created"] > 0 and job["started"] is None and job["finished"] is None
    claimed = store.claim(job["id"]) or {}
    assert claimed["started"] >= job["created"]
    store.update_job(job["id"], status="succeeded", finished=claimed["started"] + 5.0)
    entry = history_entry(store.read_job(job["id"]) or {})
    assert (entry["created"], entry["started"], entry["finished"]) == (
        job["created"], claimed["started"], claimed["started"] + 5.0,
    )  # fmt: skip
    assert entry["who"] == "Alice <alice@example.org> (abiapp@vm via git push)"
    never = store.enqueue("deploy", {}, "someone")
    store.update_job(never["id"], status="cancelled", finished=time.time())
    assert history_entry(store.read_job(never["id"]) or {})["started"] == ""  # XML-RPC has no None


def test_prune_keeps_the_newest_finished_jobs_and_every_active_one(tmp_path: Path) -> None:
    store = Store(str(tmp_path), "shop").ensure()
    ids = [store.create_job("health", {})["id"] for _ in range(6)]
    for job_id in ids[:5]:
        store.update_job(job_id, status="succeeded")
        store.append_log(job_id, "done")
    store.prune(keep=2)
    assert store.job_ids() == [ids[3], ids[4], ids[5]]  # two newest finished + the queued one
    assert not os.path.exists(store.log_path(ids[0]))


def test_read_log_hands_out_at_most_limit_bytes_per_call(tmp_path: Path) -> None:
    store = Store(str(tmp_path), "shop").ensure()
    job = store.create_job("deploy", {})["id"]
    for i in range(100):
        store.append_log(job, f"line {i:03d}")
    text, offset = store.read_log(job, 0, limit=100)
    assert text == "".join(f"line {i:03d}\n" for i in range(11)) and offset == 99
    rest, end = store.read_log(job, offset)
    assert (text + rest).count("\n") == 100 and end == os.path.getsize(store.log_path(job))


def test_prune_keeps_health_probes_apart_so_they_never_push_deploys_out(tmp_path: Path) -> None:
    store = Store(str(tmp_path), "shop").ensure()
    deploys = [store.create_job("deploy", {})["id"] for _ in range(3)]
    probes = [store.create_job("health", {})["id"] for _ in range(30)]
    for job_id in deploys + probes:
        store.update_job(job_id, status="succeeded")
    store.prune(keep=200)
    assert store.job_ids() == deploys + probes[-KEEP_HEALTH:]


# --------------------------------------------------------------------------------------------
# output is bounded and harmless (issue 13), no update is lost (issue 14)

CONTROLS = "\x1b[31mred\x1b[0m bell\x07 del\x7f csi\x9b31m nul\x00 cr\r tab\tend"


def test_control_characters_are_spelled_out_and_tab_stays() -> None:
    shown = escape_controls(CONTROLS)
    assert shown == r"\x1b[31mred\x1b[0m bell\x07 del\x7f csi\u009b31m nul\x00 cr\x0d" + " tab\tend"
    assert escape_controls(shown) == shown  # idempotent: escaping twice changes nothing
    assert escape_controls("line\nnext ✓ \U0001f600") == "line\nnext ✓ \U0001f600"
    assert escape_controls("\ud800 \ufffe \uffff \u0085") == r"\ud800 \ufffe \uffff \u0085"


def test_a_log_and_a_job_read_back_through_an_xmlrpc_round_trip(tmp_path: Path) -> None:
    """What supervisorctl parses: dumps (supervisord's side) then loads (supervisorctl's) raise no error."""
    store = Store(str(tmp_path), "shop").ensure()
    job = store.create_job("deploy", {}, who="abi\x1b]0;owned\x07")["id"]
    store.append_log(job, "    | " + CONTROLS)
    with open(store.log_path(job), "ab") as f:  # a log written before append_log escaped: raw bytes
        f.write(b"old \x1b[1mbold\x1b[0m \x07 \x7f \xc2\x9b \xff\xfe\n")
    store.update_job(job, status="failed", message="test failed: exit status 1 (\x1b[31mFAILED\x1b[0m)\x00")
    store.update(last_job={"id": job, "message": "\x1b[31mFAILED\x1b[0m"})
    text, offset = store.read_log(job)
    answer = xmlrpc_safe({"job": store.read_job(job), "log": text, "offset": offset, "state": store.read()})
    back = xmlrpc.client.loads(xmlrpc.client.dumps((answer,), methodresponse=True))[0][0]
    assert back == answer
    assert r"\x1b[31mred\x1b[0m bell\x07 del\x7f csi\u009b31m" in back["log"]
    assert r"old \x1b[1mbold\x1b[0m \x07 \x7f \u009b" in back["log"]
    assert back["job"]["message"] == r"test failed: exit status 1 (\x1b[31mFAILED\x1b[0m)\x00"
    assert back["job"]["who"] == r"abi\x1b]0;owned\x07"
    assert back["state"]["last_job"]["message"] == r"\x1b[31mFAILED\x1b[0m"
    raw = xmlrpc.client.dumps(({"log": "\x1b[31m"},), methodresponse=True)  # what happened before
    with pytest.raises(ExpatError, match="not well-formed"):
        xmlrpc.client.loads(raw)


def test_append_log_keeps_the_head_the_newest_lines_and_says_what_it_left_out(tmp_path: Path) -> None:
    store = Store(str(tmp_path), "shop").ensure()
    job = store.create_job("deploy", {})["id"]
    line = "x" * 10_000
    count = 5_000  # 50 MB of output
    for i in range(count):
        store.append_log(job, f"{i:05d} {line}")
    size = os.path.getsize(store.log_path(job))
    assert LOG_MAX // 2 < size <= LOG_MAX
    with open(store.log_path(job), "rb") as f:
        lines = f.read().decode().splitlines()
    markers = [n for n, text in enumerate(lines) if text.startswith(MARKER)]
    assert len(markers) == 1, markers
    head, tail = lines[: markers[0]], lines[markers[0] + 1 :]
    assert [text[:5] for text in head] == [f"{i:05d}" for i in range(len(head))]  # the first lines, whole
    assert [text[:5] for text in tail] == [f"{i:05d}" for i in range(count - len(tail), count)]  # the newest
    left_out = int(lines[markers[0]][len(MARKER) :].split()[0])
    assert left_out == (count - len(head) - len(tail)) * len(f"00000 {line}\n")  # every byte accounted for
    text, offset = store.read_log(job, 0, limit=size)
    assert offset == size and text.count("\n") == len(lines)


def test_a_log_line_without_end_is_cut_and_still_read(tmp_path: Path) -> None:
    store = Store(str(tmp_path), "shop").ensure()
    job = store.create_job("deploy", {})["id"]
    store.append_log(job, "y" * (LINE_MAX + 500))
    first, offset = store.read_log(job)  # 64 KB without a newline: handed out as is, a reader never stalls
    rest, end = store.read_log(job, offset)
    assert first + rest == "y" * LINE_MAX + " [500 more characters left out]\n"
    assert end == os.path.getsize(store.log_path(job))


def test_a_follower_of_a_log_cut_below_its_offset_goes_on_from_the_end(tmp_path: Path) -> None:
    store = Store(str(tmp_path), "shop").ensure()
    job = store.create_job("deploy", {})["id"]
    store.append_log(job, "short")
    size = os.path.getsize(store.log_path(job))
    text, offset = store.read_log(job, size + 1000)
    assert text.startswith(MARKER) and offset == size


def test_the_state_folder_keeps_within_its_budget_oldest_finished_logs_first(tmp_path: Path) -> None:
    store = Store(str(tmp_path), "shop").ensure()
    ids = [store.create_job("deploy", {})["id"] for _ in range(5)]
    for job_id in ids:
        store.append_log(job_id, "z" * 100_000)
        with open(store.output_path(job_id), "wb") as f:
            f.write(b"o" * 50_000)
    for job_id in ids[:4]:
        store.update_job(job_id, status="failed")
    store.update_job(ids[0], watch={"state": "running"})  # its window still runs: its log is still written
    store.prune(budget=350_000)  # the running job and the two newest finished fit; the rest do not
    kept = [job_id for job_id in ids if os.path.exists(store.log_path(job_id))]
    assert kept == [ids[0], ids[2], ids[3], ids[4]]
    assert not os.path.exists(store.output_path(ids[1]))
    assert store.job_ids() == ids  # the records stay: history still lists them
    store.prune(budget=0)  # even with no budget at all, a running job's files and a watched one's stay
    assert [job_id for job_id in ids if os.path.exists(store.log_path(job_id))] == [ids[0], ids[4]]


def test_concurrent_updates_of_one_job_are_never_lost(tmp_path: Path) -> None:
    """The job's thread and the watch thread (each with its own Store, as in the listener) update one job."""
    Store(str(tmp_path), "shop").create_job("deploy", {})
    barrier = threading.Barrier(2)

    def updates(name: str) -> None:
        store = Store(str(tmp_path), "shop", sync=False)
        barrier.wait()
        for i in range(150):
            store.update_job(1, **{f"{name}{i}": i})

    threads = [threading.Thread(target=updates, args=(name,)) for name in ("step", "watch")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    job = Store(str(tmp_path), "shop").read_job(1)
    lost = [f"{n}{i}" for n in ("step", "watch") for i in range(150) if f"{n}{i}" not in job]
    assert not lost, f"{len(lost)} of 300 updates lost"


@pytest.mark.integration  # a second process
def test_supervisord_never_waits_long_for_a_job_the_listener_updates(tmp_path: Path) -> None:
    store = Store(str(tmp_path), "shop").ensure()
    store.create_job("deploy", {})
    store.update_job(1, status="running")
    hold = "import sqlite3, sys, time; db = sqlite3.connect(sys.argv[1], isolation_level=None); "
    hold += "db.execute('BEGIN IMMEDIATE'); print('held', flush=True); time.sleep(60)"  # the listener, mid-change
    proc = subprocess.Popen([sys.executable, "-c", hold, store.db_path], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        started = time.monotonic()
        with pytest.raises(Busy, match="shop: job 1 is busy"):
            Store(str(tmp_path), "shop", sync=False, lock_wait=0.05).update_job(1, status="cancelled")
        assert time.monotonic() - started < 1.0
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


# --------------------------------------------------------------------------------------------
# the JSON files of an older version are taken over on first start (issue 14)


def older_version_state(tmp_path: Path) -> Path:
    """The layout versions before the database wrote: state.json, jobs/<id>.json beside their logs."""
    shop = tmp_path / "shop"
    (shop / "jobs").mkdir(parents=True)
    (shop / "state.json").write_text(json.dumps({"live": "green", "previous": "blue", "colors": {"green": {}}}))
    jobs = [
        (1, "deploy", "succeeded"),
        (2, "health", "succeeded"),
        (3, "deploy", "running"),
        (5, "deploy", "queued"),  # 4 was pruned; 5 and 6 wait, in id order
        (6, "health", "queued"),
    ]
    for job_id, kind, status in jobs:
        job = {"id": job_id, "app": "shop", "kind": kind, "status": status, "args": {}, "message": f"job {job_id}"}
        (shop / "jobs" / f"{job_id}.json").write_text(json.dumps(job))
        (shop / "jobs" / f"{job_id}.log").write_text(f"log of {job_id}\n")
    (shop / "jobs" / "8.json").touch()  # an id taken (O_EXCL) by a creator killed before it wrote the job
    return shop


def test_the_json_state_of_an_older_version_is_taken_over_on_first_start(tmp_path: Path) -> None:
    shop = older_version_state(tmp_path)
    store = Store(str(tmp_path), "shop").ensure()  # the listener's first start
    assert store.read() == {"live": "green", "previous": "blue", "colors": {"green": {}}}
    assert store.job_ids() == [1, 2, 3, 5, 6]
    assert [(j["id"], j["kind"]) for j in store.jobs(("queued",))] == [(5, "deploy"), (6, "health")]
    assert [j["id"] for j in store.jobs(ACTIVE)] == [3, 5, 6] and store.read_job(3)["message"] == "job 3"
    assert store.read_log(1) == ("log of 1\n", 9)  # logs stay files
    # the JSON files are removed once in the database, the unwritten placeholder is left; logs stay
    assert sorted(os.listdir(shop / "jobs")) == ["1.log", "2.log", "3.log", "5.log", "6.log", "8.json"]
    assert not (shop / "state.json").exists()
    assert store.enqueue("deploy", {"ref": "main"}, coalesce=True)["id"] == 9  # after the highest id ever taken
    assert store.read_job(5)["status"] == "cancelled"  # coalescing sees the queue taken over
    again = Store(str(tmp_path), "shop", sync=False, lock_wait=0.05)
    assert again.job_ids() == [1, 2, 3, 5, 6, 9] and again.read()["live"] == "green"


def test_supervisord_reading_first_takes_over_the_older_state_too(tmp_path: Path) -> None:
    """After an upgrade supervisord may answer status before the listener has started: it sees the same state."""
    older_version_state(tmp_path)
    supervisord_side = Store(str(tmp_path), "shop", sync=False, lock_wait=0.05)
    assert supervisord_side.read()["live"] == "green"
    assert [j["id"] for j in supervisord_side.jobs(ACTIVE)] == [3, 5, 6]
    assert Store(str(tmp_path), "shop").ensure().job_ids() == [1, 2, 3, 5, 6]  # taken over once, not twice


def test_a_fresh_app_is_read_without_making_anything(tmp_path: Path) -> None:
    """supervisord's status of an app that never ran a job creates no folder and no database."""
    store = Store(str(tmp_path / "state"), "shop", sync=False, lock_wait=0.05)
    assert (store.read(), store.jobs(), store.job_ids(), store.read_job(1)) == ({}, [], [], None)
    assert not (tmp_path / "state").exists()


CONTROL_KINDS = ["\x00", "\x08", "\x0b", "\x0c", "\r", "\x1b", "\x7f", "\x9b", "\ud800", "\ufffe", "\uffff"]


@pytest.mark.parametrize("char", CONTROL_KINDS)  # C0 (short JSON escapes too), DEL, C1, surrogate, non-characters
def test_every_control_character_is_spelled_out_when_read_back(tmp_path: Path, char: str) -> None:
    """Reads skip the cleaning pass for records without any such character: each kind must still be seen."""
    store = Store(str(tmp_path), "shop").ensure()
    job = store.create_job("deploy", {"ref": f"main{char}"})["id"]
    store.update_job(job, **{f"key{char}": [{"nested": f"value{char}"}]}, message="✓ \U0001f600 plain")
    store.update(last_job={"message": f"x{char}"})
    shown = escape_controls(char)
    assert shown != char
    for read in (store.read_job(job), store.jobs()[0], store.jobs(("queued",), newest=1)[0]):
        assert read["args"]["ref"] == f"main{shown}" and read[f"key{shown}"] == [{"nested": f"value{shown}"}]
        assert read["message"] == "✓ \U0001f600 plain"
    assert store.read()["last_job"]["message"] == f"x{shown}"


def test_jobs_newest_and_but_kinds_read_only_what_history_shows(tmp_path: Path) -> None:
    store = Store(str(tmp_path), "shop").ensure()
    for kind in ("deploy", "health", "switch", "health", "deploy", "health"):
        store.update_job(store.create_job(kind, {})["id"], status="succeeded")
    store.create_job("deploy", {})
    assert [j["id"] for j in store.jobs(FINISHED, newest=2, but_kinds=("health",))] == [3, 5]
    assert [j["id"] for j in store.jobs(FINISHED, newest=2)] == [5, 6]
    assert [j["id"] for j in store.jobs(newest=3)] == [5, 6, 7]
    assert [j["id"] for j in store.jobs(but_kinds=("deploy", "switch"))] == [2, 4, 6]


def test_a_full_disk_and_a_damaged_database_are_said_as_such(tmp_path: Path) -> None:
    """What the RPC layer answers with (an OSError): never an sqlite3 traceback inside supervisord."""
    store = Store(str(tmp_path), "shop").ensure()
    store._db(create=True).execute("PRAGMA max_page_count = 2")  # a disk with no room left for the database
    with pytest.raises(StoreError, match=r"store\.db: No space left on device \(database or disk is full\)"):
        store.enqueue("deploy", {"ref": "x" * 100_000})
    assert store.jobs() == []  # nothing half-written
    other = tmp_path / "other" / "shop"
    other.mkdir(parents=True)
    (other / "store.db").write_bytes(b"not a database, " * 100)
    with pytest.raises(StoreError, match=r"store\.db: file is not a database"):
        Store(str(tmp_path / "other"), "shop", sync=False, lock_wait=0.05).read()


LISTENER_THEN_GONE = """
import sys
from supervisor_bluegreen.shared.store import Store
store = Store(sys.argv[1], "shop").ensure()
store.update(live="blue")
store.claim(store.enqueue("deploy", {"ref": "main"})["id"])
"""  # then it exits: the last connection closes, and -wal and -shm go with it


@pytest.mark.integration  # mounts a tmpfs (root)
@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small disk needs root")
def test_status_still_reads_the_store_when_the_disk_is_full(tmp_path: Path) -> None:
    """supervisord's status answers on a full disk; what would write is refused with ENOSPC, nothing half-done."""
    disk = tmp_path / "state"
    disk.mkdir(mode=0o750)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0750", "tmpfs", str(disk)], check=True)
    try:
        subprocess.run([sys.executable, "-c", LISTENER_THEN_GONE, str(disk)], check=True, timeout=60)
        assert sorted(os.listdir(disk / "shop")) == ["jobs", "store.db"]
        fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)  # a backup, a log gone wild: not a page left
        try:
            for size in (65536, 4096, 1):
                with contextlib.suppress(OSError):
                    while True:
                        os.write(fd, b"x" * size)
        finally:
            os.close(fd)
        supervisord_side = Store(str(disk), "shop", sync=False, lock_wait=0.05)
        assert supervisord_side.read() == {"live": "blue"}
        assert [(j["id"], j["status"]) for j in supervisord_side.jobs(ACTIVE)] == [(1, "running")]
        with pytest.raises(StoreError, match="No space left on device"):
            supervisord_side.enqueue("health", {})
        assert supervisord_side.job_ids() == [1]
        fresh = Store(str(disk), "blog", sync=False, lock_wait=0.05)  # its database cannot even be made
        with pytest.raises(StoreError, match="No space left on device"):
            fresh.enqueue("health", {})
        assert (fresh.read(), fresh.jobs()) == ({}, [])
        del supervisord_side, fresh
    finally:
        gc.collect()  # no connection keeps the disk busy
        subprocess.run(["umount", str(disk)], check=True)


TRY_WRITE = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], timeout=0, isolation_level=None)
try:
    db.execute("BEGIN IMMEDIATE")
    print("got the write lock")
except sqlite3.OperationalError as exc:
    print(exc)
"""


@pytest.mark.integration  # a second process
def test_a_new_store_in_the_process_never_drops_the_locks_of_its_other_connections(tmp_path: Path) -> None:
    """POSIX locks belong to the process: closing any descriptor of the database or its -shm drops those of
    every connection of ours. The listener's threads each open stores; none may take another's lock away."""
    store = Store(str(tmp_path), "shop").ensure()
    with store.queue_lock():  # this thread is mid-change: it holds the write lock
        reader = threading.Thread(target=lambda: Store(str(tmp_path), "shop", sync=False, lock_wait=0.05).read())
        reader.start()
        reader.join(timeout=10)
        other = subprocess.run([sys.executable, "-c", TRY_WRITE, store.db_path], capture_output=True, text=True,
                               timeout=30, check=True)  # fmt: skip
        assert other.stdout.strip() == "database is locked"


def descriptors_on(path: str) -> list[str]:
    """What this process has open of ``path`` and its -wal/-shm files."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except FileNotFoundError:
            continue
        if target.startswith(path):
            found.append(target)
    return found


def test_supervisords_side_keeps_no_descriptor_between_calls(tmp_path: Path) -> None:
    """supervisord closes the descriptors it does not know of when it reloads (cleanup_fds): a connection kept
    from one RPC call to the next would then read and write whatever file took those numbers."""
    side = Store(str(tmp_path), "shop", sync=False, lock_wait=0.05)
    job = side.enqueue("deploy", {"ref": "main"})
    with side.queue_lock():
        side.update_job(job["id"], status="cancelled")
        assert descriptors_on(side.db_path)  # open while a call runs
    assert (side.read(), [j["id"] for j in side.jobs()], side.job_ids()) == ({}, [1], [1])
    assert descriptors_on(side.db_path) == []
    listener = Store(str(tmp_path), "shop").ensure()
    listener.read()
    assert descriptors_on(side.db_path)  # the listener keeps its thread's connection


def test_supervisords_calls_never_checkpoint_while_the_listener_runs(tmp_path: Path) -> None:
    """The listener's process keeps the database open, so supervisord's connection, closed after each call, is
    never the last one: it never moves the WAL into the database (an fsync) nor makes -wal and -shm again."""
    Store(str(tmp_path), "shop").ensure()  # the listener's store, gone again: its process keeps an anchor
    gc.collect()
    side = Store(str(tmp_path), "shop", sync=False, lock_wait=0.05)
    side.enqueue("health", {})
    wal = os.stat(f"{side.db_path}-wal")
    assert wal.st_size > 0  # the job is in the WAL still, not yet in the database file
    side.enqueue("health", {})
    assert os.stat(f"{side.db_path}-wal").st_ino == wal.st_ino and os.path.exists(f"{side.db_path}-shm")


def test_threads_opening_a_new_store_at_once_never_get_busy(tmp_path: Path) -> None:
    """The listener's threads open a new app's database together (the loop, the worker, the guard):
    SQLite answers its WAL switch with BUSY at once, no busy handler, so the listener must try again."""
    busy = []

    def open_it(state_dir: str) -> None:
        try:
            Store(state_dir, "shop").ensure().read()
        except Busy as exc:
            busy.append(str(exc))

    for trial in range(150):
        threads = [threading.Thread(target=open_it, args=(str(tmp_path / str(trial)),)) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert busy == []

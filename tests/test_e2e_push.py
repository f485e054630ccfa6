"""End to end: `git push` through the shipped pre-receive hook on a real stack (supervisord, gunicorn, nginx,
MariaDB, git). A push whose deploy fails is rejected and the branch does not move; a good push goes live;
the pusher's narrow path (`bluegreen push`) asks for a deploy of its app and nothing else.
The stack is shared by the module; tests run in file order."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import QUICK, REPO, blue_live, job_id_of, served, status

from example.stack import Stack

FAILING_TEST = """\
from django.test import SimpleTestCase


class Broken(SimpleTestCase):
    def test_fails(self):
        self.fail("release is broken")
"""


@pytest.fixture(scope="module")
def stack(make_stack) -> Stack:
    s = blue_live(make_stack, celery=False, ini_overrides={**QUICK, "drain_timeout": "5", "health_deadline": "20"})
    bare = s.root / "app.git"
    hook = bare / "hooks" / "pre-receive"
    shutil.copy(REPO / "conf" / "hooks" / "pre-receive", hook)
    hook.chmod(0o755)
    # as root, without sudo: the same command a sudo rule allows the pusher (see the hook's header)
    for key, value in (("push", f"{s.venv}/bin/bluegreen push -c {s.conf}"), ("app", "abiapp")):
        subprocess.run(["git", "--git-dir", str(bare), "config", f"bluegreen.{key}", value], check=True)
    subprocess.run(["git", "clone", "-q", str(bare), str(s.root / "work")], check=True)
    return s


def git(stack: Stack, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "-C", str(stack.root / "work"), "-c", "user.name=Abi", "-c", "user.email=a@b", *args],
        capture_output=True, text=True, check=check, timeout=600,
    )  # fmt: skip


def bare_ref(stack: Stack, ref: str = "refs/heads/main") -> str:
    out = subprocess.run(["git", "--git-dir", str(stack.root / "app.git"), "rev-parse", ref], capture_output=True,
                         text=True, check=True)  # fmt: skip
    return out.stdout.strip()


def commit(stack: Stack, files: dict[str, str], message: str) -> str:
    git(stack, "fetch", "-q", "origin")
    git(stack, "checkout", "-q", "-B", "main", "origin/main")
    work = stack.root / "work"
    for name, text in files.items():
        (work / name).write_text(text)
    git(stack, "add", "-A")
    git(stack, "commit", "-qm", message)
    return git(stack, "rev-parse", "HEAD").stdout.strip()


def test_a_push_whose_deploy_fails_is_rejected_and_the_branch_does_not_move(stack: Stack) -> None:
    before, live_before = bare_ref(stack), served(stack)
    pushed = commit(stack, {"exampleapp/tests_broken.py": FAILING_TEST, "VERSION": "v-broken\n"}, "broken release")
    out = git(stack, "push", "origin", "main", check=False)
    assert out.returncode != 0, out.stderr
    assert "! [remote rejected] main -> main (pre-receive hook declined)" in out.stderr
    assert "remote: [" in out.stderr
    for step in ("resolve", "release", "checkout", "collectstatic"):  # every step, as it happened
        assert f"{step} done in" in out.stderr, step
    assert "release is broken" in out.stderr  # the test's own output
    assert "ERROR: abiapp: deploy failed: test failed: exit status 1 (FAILED (failures=1))" in out.stderr
    assert "blue live, unchanged" in out.stderr
    assert f"push rejected, main stays at {before}" in out.stderr
    assert bare_ref(stack) == before
    assert served(stack) == live_before
    assert not subprocess.run(["git", "--git-dir", str(stack.root / "app.git"), "for-each-ref", "refs/bluegreen"],
                              capture_output=True, text=True, check=True).stdout  # fmt: skip
    green = status(stack)["colors"]["green"]  # a refused build changes no color: it built in its own release
    assert green["version"] != pushed[:7]
    log = stack.ctl("bluegreen", "log", "abiapp", str(job_id_of(out.stderr))).stdout.strip().splitlines()
    assert any(line.endswith("    | AssertionError: release is broken") for line in log)  # the whole output
    assert log[-2].startswith("abiapp: deploy failed: test failed: exit status 1 (FAILED (failures=1))"), log[-3:]


def test_a_good_push_goes_live_and_moves_the_branch(stack: Stack) -> None:
    pushed = commit(stack, {"VERSION": "v-pushed\n"}, "good release")
    out = git(stack, "push", "origin", "main", check=False)
    assert out.returncode == 0, out.stderr
    assert "remote: bluegreen: deploying " in out.stderr and "health gate done in" in out.stderr
    assert f"abiapp: green live at {pushed[:7]} in " in out.stderr
    assert "main -> main" in out.stderr and "rejected" not in out.stderr
    assert bare_ref(stack) == pushed
    assert served(stack) == ("green", "v-pushed")
    row = stack.ctl("bluegreen", "history", "-n", "1").stdout
    assert f"commit={pushed[:7]} color=green by Abi <a@b> (root@" in row and "via git push)" in row  # person, account
    now = stack.ctl("bluegreen", "status", "abiapp").stdout
    assert "NOT the branch head" not in now, now  # the push moved the branch to what went live
    assert status(stack)["branch_head"]["commit"] == pushed


def test_other_refs_are_accepted_without_a_deploy_and_the_deploy_branch_is_not_deleted(stack: Stack) -> None:
    jobs = len(os.listdir(stack.root / "state" / "abiapp" / "jobs"))
    out = git(stack, "push", "origin", "main:feature", check=False)
    assert out.returncode == 0 and "deploying" not in out.stderr, out.stderr
    assert bare_ref(stack, "refs/heads/feature") == bare_ref(stack)
    out = git(stack, "push", "origin", ":main", check=False)
    assert out.returncode != 0 and "refusing to delete main" in out.stderr, out.stderr
    assert len(os.listdir(stack.root / "state" / "abiapp" / "jobs")) == jobs


def test_the_narrow_path_asks_for_a_deploy_of_its_app_and_nothing_else(stack: Stack) -> None:
    """A sudo rule fixes `bluegreen push [-c CONF] abiapp` and lets the pusher add words: none gets more."""
    head = bare_ref(stack)
    fixed = [f"{stack.venv}/bin/bluegreen", "push", "-c", str(stack.conf), "abiapp"]
    jobs = sorted(os.listdir(stack.root / "state" / "abiapp" / "jobs"))
    evil = stack.root / "evil.conf"
    evil.write_text(stack.conf.read_text())
    evil.chmod(0o666)
    for words in (
        ["stop", "all"],
        [head, "stop", "all"],
        ["otherapp", head],
        [head, "otherapp"],
        [head, "-c", str(evil)],
        ["main"],  # a branch name: only a full commit id
        ["$(touch /tmp/bluegreen-pwned)"],
        [head + ";reboot"],
        ["--upload-pack=touch /tmp/x"],
        [head, "--wait", "--allow-unsafe-migrations"],
        [],
    ):
        out = subprocess.run([*fixed, *words], capture_output=True, text=True, timeout=60)
        assert out.returncode == 2, (words, out.stdout, out.stderr)
        assert out.stdout.startswith("ERROR: bluegreen push: ") and len(out.stdout.splitlines()) == 1, out.stdout
    out = subprocess.run([fixed[0], "push", "-c", str(evil), "abiapp", head], capture_output=True, text=True)
    assert out.returncode == 2 and "is writable by others" in out.stdout, out.stdout
    assert sorted(os.listdir(stack.root / "state" / "abiapp" / "jobs")) == jobs  # nothing was asked
    assert not os.path.exists("/tmp/bluegreen-pwned")
    states = {p["name"]: p["statename"] for p in stack.rpc().supervisor.getAllProcessInfo()}
    assert states["abiapp_green"] == "RUNNING" and states["nginx"] == "RUNNING", states
    # another app's name in the app's place is asked for and refused by supervisord: nothing runs
    out = subprocess.run([fixed[0], "push", "-c", str(stack.conf), "otherapp", head], capture_output=True, text=True)
    assert out.returncode == 1 and "otherapp" in out.stdout and len(out.stdout.splitlines()) == 1, out.stdout


def test_history_shows_rollbacks_with_commit_and_color_and_leaves_health_probes_out(stack: Stack) -> None:
    blue = status(stack)["colors"]["blue"]["version"]
    assert stack.ctl("bluegreen", "health").returncode == 0
    out = stack.ctl("bluegreen", "rollback")
    assert out.returncode == 0, out.stdout
    history = stack.ctl("bluegreen", "history", "-n", "2").stdout
    first = history.split("\n", 1)[0]
    assert " rollback " in first and f"commit={blue} color=blue " in first, history
    kinds = [line.split()[3] for line in history.splitlines() if line.startswith("#")]
    assert "health" not in kinds and len(kinds) == 2, history
    everything = stack.ctl("bluegreen", "history", "-n", "3", "--all").stdout
    assert "health" in [line.split()[3] for line in everything.splitlines() if line.startswith("#")], everything


def test_unreachable_supervisord_is_one_line_with_the_fix(stack: Stack, tmp_path: Path) -> None:
    conf = tmp_path / "supervisord.conf"
    conf.write_text(stack.conf.read_text().replace(f"{stack.root}/run/supervisor.sock", f"{tmp_path}/none.sock"))
    out = subprocess.run([f"{stack.venv}/bin/supervisorctl", "-c", str(conf), "bluegreen", "status"],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 7, out.stdout
    assert out.stdout.splitlines() == [
        f"ERROR: cannot reach supervisord at unix://{tmp_path}/none.sock: no such socket: supervisord is not "
        "running (start it: systemctl start supervisor), or -c names another config than the one it runs with"
    ]

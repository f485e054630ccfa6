"""The Ansible collection (ansible/) drives a fleet of three real stacks on this machine: the collection is
installed with ansible-galaxy, ansible-playbook runs its rolling_release playbook over a real inventory (each
host a supervisord of its own, reached through its own config), under load on every host. `make fleet-test`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import QUICK, REPO, blue_live, served, settled

from example.load import Load, summarize
from example.stack import Stack, git

pytestmark = pytest.mark.fleet
BIN = Path(sys.executable).parent
HOSTS = ("app1", "app2", "app3")


class Fleet:
    """Three stacks as an inventory's hosts, and the collection installed where ansible-playbook finds it."""

    def __init__(self, stacks: dict[str, Stack], root: Path) -> None:
        self.stacks, self.root = stacks, root
        self.collections = root / "collections"
        self.inventory = root / "inventory.ini"
        lines = ["[bluegreen]"]
        for name, stack in stacks.items():
            # the host's own Python (standard library only), its own supervisord config
            lines.append(f"{name} ansible_connection=local ansible_python_interpreter=/usr/bin/python3 "
                         f"bluegreen_supervisord_conf={stack.conf}")  # fmt: skip
        lines += ["", "[bluegreen:vars]", "bluegreen_app=abiapp", ""]
        self.inventory.write_text("\n".join(lines))

    def env(self) -> dict[str, str]:
        return {**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(self.collections), "ANSIBLE_NOCOLOR": "1",
                "ANSIBLE_HOST_KEY_CHECKING": "0", "ANSIBLE_LOCAL_TEMP": str(self.root / "tmp"),
                "ANSIBLE_DEPRECATION_WARNINGS": "0", "PYTHONWARNINGS": "ignore"}  # fmt: skip

    def install(self) -> None:
        out = subprocess.run(
            [BIN / "ansible-galaxy", "collection", "install", "--force", str(REPO / "ansible"), "-p", self.collections],
            capture_output=True, text=True, env=self.env(), timeout=120,
        )  # fmt: skip
        assert out.returncode == 0, out.stdout + out.stderr

    def play(self, commit: str, *extra: str, **variables: str) -> subprocess.CompletedProcess[str]:
        """ansible-playbook bluegreen.supervisor.rolling_release over the inventory."""
        args = ["-e", f"bluegreen_commit={commit}", *[f"-e{k}={v}" for k, v in variables.items()]]
        return subprocess.run(
            [BIN / "ansible-playbook", "-i", self.inventory, "bluegreen.supervisor.rolling_release", *args, *extra],
            capture_output=True, text=True, env=self.env(), timeout=900,
        )  # fmt: skip

    def release(self, version: str, on: tuple[str, ...] = HOSTS) -> str:
        """One commit, pushed to the repositories of the hosts ``on`` (the same id everywhere)."""
        first = self.stacks[HOSTS[0]]
        commit = first.push({"VERSION": f"{version}\n"}, f"release {version}", branch=version)
        for name in on:
            git(
                "push",
                "-q",
                "-f",
                str(self.stacks[name].root / "app.git"),
                f"{version}:{version}",
                cwd=first.root / "work",
            )
        return commit

    def versions(self) -> dict[str, str]:
        return {name: served(stack)[1] for name, stack in self.stacks.items()}


def recap(out: subprocess.CompletedProcess[str]) -> dict[str, dict[str, int]]:
    """PLAY RECAP per host: ok, changed, failed, skipped ... as numbers."""
    found = {}
    for line in out.stdout.splitlines():
        match = re.match(r"^(\S+)\s+:\s+(.*)$", line)
        if match and match.group(1) in HOSTS:
            found[match.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(2))}
    return found


@pytest.fixture(scope="module")
def fleet(make_stack, tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    stacks = {name: blue_live(make_stack, ini_overrides=QUICK) for name in HOSTS}
    fleet = Fleet(stacks, tmp_path_factory.mktemp("fleet"))
    fleet.install()
    return fleet


@pytest.fixture
def load(fleet: Fleet) -> Iterator[dict[str, Load]]:
    loads = {name: Load("127.0.0.1", stack.port, keepalive=2, fresh=1, slow=1) for name, stack in fleet.stacks.items()}
    for each in loads.values():
        each.start()
    yield loads
    for each in loads.values():
        each.stop()


def failed_requests(loads: dict[str, Load]) -> dict[str, int]:
    """Failed requests per host, once every host answered some."""
    counts = {name: summarize(each.stop()) for name, each in loads.items()}
    assert all(c["requests"] > 50 for c in counts.values()), counts
    return {name: c["failed"] for name, c in counts.items()}


def test_check_mode_reports_what_it_would_do_and_changes_nothing(fleet: Fleet) -> None:
    before = fleet.versions()
    commit = fleet.release("v-check")
    out = fleet.play(commit, "--check", "-v")
    assert out.returncode == 0, out.stdout + out.stderr
    assert {h: r["changed"] for h, r in recap(out).items()} == dict.fromkeys(HOSTS, 1), out.stdout
    assert out.stdout.count(f"abiapp: would deploy {commit} (live: blue at ") == 3, out.stdout
    assert fleet.versions() == before
    assert all(settled(s)["last_job"].get("kind") != "deploy" for s in fleet.stacks.values())


def test_a_rolling_release_moves_every_host_with_no_failed_request_and_a_rerun_changes_nothing(
    fleet: Fleet, load: dict[str, Load]
) -> None:
    commit = fleet.release("v-rolling")
    out = fleet.play(commit)
    assert out.returncode == 0, out.stdout + out.stderr
    assert {h: r["failed"] for h, r in recap(out).items()} == dict.fromkeys(HOSTS, 0)
    assert fleet.versions() == dict.fromkeys(HOSTS, "v-rolling")
    assert failed_requests(load) == dict.fromkeys(HOSTS, 0)
    again = fleet.play(commit)
    assert again.returncode == 0, again.stdout + again.stderr
    assert {h: r["changed"] for h, r in recap(again).items()} == dict.fromkeys(HOSTS, 0), again.stdout


def test_a_release_that_fails_on_the_second_host_rolls_the_first_back_and_never_touches_the_third(
    fleet: Fleet, load: dict[str, Load]
) -> None:
    before = fleet.versions()
    last = {name: settled(stack)["last_job"].get("id") for name, stack in fleet.stacks.items()}
    commit = fleet.release("v-broken-on-app2", on=("app1", "app3"))  # never pushed to app2's repository
    out = fleet.play(commit, "-v")
    assert out.returncode == 2, out.stdout + out.stderr
    result = recap(out)
    assert result["app2"]["failed"] == 1 and "app3" not in result, out.stdout  # the play stopped at app2
    assert "app2: abiapp:" in out.stdout and commit[:7] in out.stdout  # the deploy's own reason
    assert fleet.versions() == before  # app1 back, app2 never moved, app3 never touched
    assert settled(fleet.stacks["app1"])["last_job"]["kind"] == "rollback"
    assert settled(fleet.stacks["app3"])["last_job"].get("id") == last["app3"]  # not a job since
    assert failed_requests(load) == dict.fromkeys(HOSTS, 0)


def test_the_modules_lock_and_read_a_host(fleet: Fleet) -> None:
    def task(module: str, **args: str) -> dict:
        """One module run ad hoc on app3 (``-o``: the host's result as one line of JSON after "=>")."""
        out = subprocess.run(
            [BIN / "ansible", "app3", "-o", "-i", fleet.inventory, "-m", f"bluegreen.supervisor.{module}",
             "-a", json.dumps({"app": "abiapp", "supervisord_conf": str(fleet.stacks["app3"].conf), **args})],
            capture_output=True, text=True, env=fleet.env(), timeout=120,
        )  # fmt: skip
        line = next(line for line in out.stdout.splitlines() if line.startswith("app3 | "))
        state, result = line[len("app3 | ") :].split(" => ", 1)
        return {**json.loads(result), "failed": state.startswith("FAILED")}

    first = task("lock", reason="exam week")
    assert first["changed"] and first["lock"]["reason"] == "exam week", first
    assert not task("lock", reason="exam week")["changed"]
    status = task("status")
    assert status["locked"]["reason"] == "exam week", status
    assert status["commit"].startswith(status["status"]["colors"][status["live"]]["version"]), status
    refused = task("deploy", commit=status["commit"][:7] + "0")
    assert refused["failed"] and refused["msg"].startswith("abiapp: deploy refused: locked by ansible"), refused
    assert task("lock", state="unlocked")["changed"]
    assert not task("lock", state="unlocked")["changed"]

"""The Ansible collection (ansible/) drives a fleet of three real stacks on this machine, on one MariaDB database
(``contract = manual``): the collection is installed with ansible-galaxy, ansible-playbook runs its rolling_release
playbook over a real inventory (each host a supervisord of its own, reached through its own config), under load on
every host and through conf/nginx/balancer.conf's nginx in front of them. `make fleet-test`."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import QUICK, REPO, blue_live, history, served, settled, status
from test_e2e_schema import CHAR, add, app_tests, applied, columns, migration, models, views_reading
from test_nginx import start_nginx, stop_nginx

from example.load import Load, summarize
from example.stack import Stack, free_port, git

pytestmark = pytest.mark.fleet
BIN = Path(sys.executable).parent
HOSTS = ("app1", "app2", "app3")
NO_FAILURE = dict.fromkeys((*HOSTS, "balancer"), 0)  # on each host's nginx and through the balancer


class Fleet:
    """Three stacks as an inventory's hosts, and the collection installed where ansible-playbook finds it."""

    def __init__(self, stacks: dict[str, Stack], root: Path) -> None:
        self.stacks, self.root = stacks, root
        self.files: dict[str, str] = {}  # what the releases so far changed in the app
        self.results: dict[str, dict] = {}  # bench/results/fleet.json's cases
        self.seconds = 0.0  # the last play's
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
        began = time.monotonic()
        out = subprocess.run(
            [BIN / "ansible-playbook", "-i", self.inventory, "bluegreen.supervisor.rolling_release", *args, *extra],
            capture_output=True, text=True, env=self.env(), timeout=900,
        )  # fmt: skip
        self.seconds = round(time.monotonic() - began, 1)
        return out

    def measure(self, case: str, loads: dict[str, Load], migrations: int, **hosts: list[str]) -> dict[str, int]:
        """Failed requests per host over the case (each host answered some); the case's line of fleet.json."""
        counts = {name: summarize(each.stop()) for name, each in loads.items()}
        assert all(c["requests"] > 50 for c in counts.values()), counts
        self.results[case] = {
            "hosts": len(self.stacks),
            "requests": sum(c["requests"] for c in counts.values()),
            "failed": sum(c["failed"] for c in counts.values()),
            "rolled_back_hosts": hosts.get("rolled_back", []),
            "untouched_hosts": hosts.get("untouched", []),
            "migrations_applied": migrations,
            "seconds": self.seconds,
        }
        return {name: c["failed"] for name, c in counts.items()}

    def release(self, version: str, on: tuple[str, ...] = HOSTS, files: dict[str, str] | None = None) -> str:
        """One commit on top of the last release, pushed to the repositories of the hosts ``on`` (the same id
        everywhere); its ``files`` stay in the releases after it."""
        first = self.stacks[HOSTS[0]]
        self.files.update(files or {})
        commit = first.push({**self.files, "VERSION": f"{version}\n"}, f"release {version}", branch=version)
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


# the expand release: body beside text (safe for the code before it); then the contract: text dropped (held back
# until no host runs code that reads it)
COPY = (
    "\ndef copy(apps, schema_editor):\n"
    "    apps.get_model('exampleapp', 'Note').objects.update(body=models.F('text'))\n\n"
)
EXPAND = {
    "exampleapp/models.py": models("text = models.CharField(max_length=200, null=True)", f"body = {CHAR}"),
    "exampleapp/migrations/0002_expand.py": migration(
        "0001_initial",
        f"migrations.AlterField(model_name='note', name='text', field={CHAR})",
        add("body", CHAR),
        "migrations.RunPython(copy, migrations.RunPython.noop, hints={'bluegreen': 'safe'})",
        extra=COPY,
    ),
}
CONTRACT = {
    "exampleapp/models.py": models(f"body = {CHAR}"),
    "exampleapp/migrations/0003_contract.py": migration(
        "0002_expand", "migrations.RemoveField(model_name='note', name='text')", marker="contract"
    ),
    "exampleapp/views.py": views_reading("body"),
    "exampleapp/tests.py": app_tests("body"),
}


def deploy_log(stack: Stack) -> str:
    """The log of the stack's newest deploy job."""
    job = next(h for h in history(stack) if h["kind"] == "deploy")
    return stack.rpc().bluegreen.log("abiapp", job["id"], 0)["log"]


def recap(out: subprocess.CompletedProcess[str]) -> dict[str, dict[str, int]]:
    """PLAY RECAP per host: ok, changed, failed, skipped ... as numbers."""
    found = {}
    for line in out.stdout.splitlines():
        match = re.match(r"^(\S+)\s+:\s+(.*)$", line)
        if match and match.group(1) in HOSTS:
            found[match.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(2))}
    return found


WATCH = 2.0
RESULTS = REPO / "bench" / "results" / "fleet.json"


@pytest.fixture(scope="module")
def fleet(make_stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    database = f"bg_fleet_{secrets.token_hex(4)}"  # one database for the fleet, a queue per host
    ini = {**QUICK, "contract": "manual", "build": "test gate backup migrate", "watch_interval": "0.3"}
    stacks = {
        name: blue_live(make_stack, shared_database=database, watch=str(WATCH), ini_overrides=ini) for name in HOSTS
    }
    fleet = Fleet(stacks, tmp_path_factory.mktemp("fleet"))
    fleet.install()
    yield fleet
    if fleet.results:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps({"cases": fleet.results}, indent=2) + "\n")


def balancer_site(text: str, ports: list[int], port: int) -> str:
    """conf/nginx/balancer.conf with this machine's hosts: the stacks' nginx, the balancer on 127.0.0.1:``port``."""
    text = re.sub(r"(?m)^(\s+server )10\.0\.0\.1(\d):80", lambda m: f"{m[1]}127.0.0.1:{ports[int(m[2]) - 1]}", text)
    return text.replace("listen 80;", f"listen 127.0.0.1:{port};")


@pytest.fixture(scope="module")
def balancer(fleet: Fleet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The README's balancer (a real nginx, its own prefix) in front of the three hosts: its port."""
    port = free_port()
    site = balancer_site((REPO / "conf/nginx/balancer.conf").read_text(), [s.port for s in fleet.stacks.values()], port)
    assert site.count("server 127.0.0.1:") == len(HOSTS), site
    proc = start_nginx(tmp_path_factory.mktemp("balancer"), site, port)
    try:
        yield port
    finally:
        stop_nginx(proc)


@pytest.fixture
def load(fleet: Fleet, balancer: int) -> Iterator[dict[str, Load]]:
    loads = {  # /notes reads every note: a column the serving code needs and the schema lacks is a 500
        name: Load("127.0.0.1", stack.port, keepalive=2, fresh=1, slow=0, path="/notes")
        for name, stack in fleet.stacks.items()
    }
    loads["balancer"] = Load("127.0.0.1", balancer, keepalive=4, fresh=2, slow=0, path="/notes")
    for each in loads.values():
        each.start()
    yield loads
    for each in loads.values():
        each.stop()


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
    one = fleet.stacks["app1"]
    before = len(applied(one))
    commit = fleet.release("v-rolling", files=EXPAND)
    out = fleet.play(commit)
    assert out.returncode == 0, out.stdout + out.stderr
    assert {h: r["failed"] for h, r in recap(out).items()} == dict.fromkeys(HOSTS, 0)
    assert fleet.versions() == dict.fromkeys(HOSTS, "v-rolling")
    assert fleet.measure("rolling", load, len(applied(one)) - before) == NO_FAILURE
    assert applied(one).count("0002_expand") == 1 and "body" in columns(one)
    logs = {name: deploy_log(stack) for name, stack in fleet.stacks.items()}
    assert "migration gate: 1 unapplied migration(s)" in logs["app1"]  # the first host migrates the fleet's database
    for name in ("app2", "app3"):
        assert "migration gate: no unapplied migrations" in logs[name], logs[name]
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
    failed = fleet.measure("failure", load, 0, rolled_back=["app1"], untouched=["app3"])
    assert failed == NO_FAILURE


def test_contract_migrations_run_once_after_the_last_hosts_window_passed(fleet: Fleet, load: dict[str, Load]) -> None:
    one = fleet.stacks["app1"]
    before = len(applied(one))
    commit = fleet.release("v-contract", files=CONTRACT)
    out = fleet.play(commit)
    assert out.returncode == 0, out.stdout + out.stderr
    assert fleet.versions() == dict.fromkeys(HOSTS, "v-contract")
    assert "text" not in columns(one) and applied(one).count("0003_contract") == 1
    ran = {name: next(h for h in history(stack) if h["kind"] == "contract") for name, stack in fleet.stacks.items()}
    assert all(job["status"] == "succeeded" and job["who"] == "ansible" for job in ran.values()), ran
    last_switch = status(fleet.stacks["app3"])["switched_at"]
    assert ran["app1"]["created"] >= last_switch + WATCH - 0.5  # only once the third host's window passed
    assert all(not status(stack)["previous"] for stack in fleet.stacks.values())  # no way back past the drop
    assert fleet.measure("contract", load, len(applied(one)) - before) == NO_FAILURE


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

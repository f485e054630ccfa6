"""The collection's decisions (ansible/plugins/module_utils/bluegreen.py), pure: how a host is reached, when a
task changes nothing, which rollback it asks for, when a followed job is over and why it failed the task.
tests/test_e2e_fleet.py runs the modules for real."""

from __future__ import annotations

import ast
import importlib.util
import xmlrpc.client
from pathlib import Path

import pytest
import yaml
from conftest import REPO

spec = importlib.util.spec_from_file_location("bluegreen_utils", REPO / "ansible/plugins/module_utils/bluegreen.py")
bg = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bg)

OLD, NEW = "a" * 40, "b" * 40


def status(
    live: str = "blue", commit: str = OLD, previous: str = "", previous_commit: str = "", **more: object
) -> dict:
    colors = {live: {"commit": commit, "version": commit[:7]}}
    if previous:
        colors[previous] = {"commit": previous_commit, "version": previous_commit[:7]}
    return {"live": live, "previous": previous, "colors": colors, "running": {}, "watch": {}}


def test_the_host_is_reached_as_supervisorctl_reads_its_config(tmp_path: Path) -> None:
    conf = tmp_path / "supervisord.conf"
    conf.write_text("[supervisorctl]\nserverurl = unix://%(here)s/run/supervisor.sock\nusername = u\npassword = p\n")
    assert bg.ctl_settings(str(conf)) == (f"unix://{tmp_path}/run/supervisor.sock", "u", "p")
    assert bg.ctl_settings(str(conf), "http://127.0.0.1:9001", "v", "q") == ("http://127.0.0.1:9001", "v", "q")
    conf.write_text("[supervisord]\n")
    assert bg.ctl_settings(str(conf)) == ("http://localhost:9001", None, None)  # supervisorctl's default


def test_a_missing_config_or_a_strange_url_is_said_plainly(tmp_path: Path) -> None:
    with pytest.raises(bg.BluegreenError, match="no such file"):
        bg.ctl_settings(str(tmp_path / "nope.conf"))
    with pytest.raises(bg.BluegreenError, match="expected unix:///path or http://host:port"):
        bg.server("ftp://host", None, None)


def test_a_fault_reads_as_the_apps_own_words_and_an_unreachable_host_says_so() -> None:
    def refuse() -> None:
        raise xmlrpc.client.Fault(2, "FAILED: abiapp: deploy refused: locked; nothing changed")

    with pytest.raises(bg.BluegreenError, match=r"^abiapp: deploy refused: locked; nothing changed$"):
        bg.call("deploy", refuse)

    def down() -> None:
        raise ConnectionRefusedError(111, "Connection refused")

    with pytest.raises(bg.BluegreenError, match="deploy: cannot reach supervisord"):
        bg.call("deploy", down)


def test_a_commit_id_names_the_live_commit_and_a_branch_never_does() -> None:
    assert bg.same_commit(OLD, OLD) and bg.same_commit(OLD, OLD[:7]) and bg.same_commit(OLD, OLD[:12].upper())
    assert not bg.same_commit(OLD, NEW) and not bg.same_commit(OLD, "aaaaaa")  # six digits name nothing
    assert not bg.same_commit(OLD, "main") and not bg.same_commit("", OLD)


def test_the_warm_previous_color_is_asked_for_when_it_holds_the_commit() -> None:
    warm = status("green", NEW, previous="blue", previous_commit=OLD)
    assert bg.rollback_args(warm, OLD) == ""  # plain rollback: the previous color, still running
    assert bg.rollback_args(warm, "c" * 40) == "c" * 40  # a kept release started again (rollback --to)
    assert bg.rollback_args(status(), "") == ""


def test_facts_say_what_serves_and_whether_the_window_rolled_back() -> None:
    job = {"id": 7, "status": "succeeded", "watch": {"state": "rolled back", "reason": "abiapp_green went EXITED"}}
    got = bg.facts(status("blue", OLD, previous="green", previous_commit=NEW), job)
    assert got == {"live": "blue", "commit": OLD, "previous": "green", "previous_commit": NEW, "job": 7,
                   "job_status": "succeeded", "rolled_back": True, "window": "rolled back"}  # fmt: skip
    assert bg.outcome(job).endswith("rolled back automatically: abiapp_green went EXITED")


def test_a_job_is_over_when_finished_and_through_its_window_when_asked() -> None:
    running = {"status": "running"}
    watched = {"status": "succeeded", "watch": {"state": "running"}}
    assert not bg.done(running, False) and bg.done(watched, False) and not bg.done(watched, True)
    assert bg.done({"status": "succeeded", "watch": {"state": "passed"}}, True)
    assert bg.outcome({"status": "succeeded", "watch": {"state": "passed"}}) is None
    assert bg.outcome({"status": "failed", "message": "abiapp: deploy failed: test failed"}) == (
        "abiapp: deploy failed: test failed"
    )
    superseded = {"status": "cancelled", "message": "abiapp: deploy superseded by job 9"}
    assert bg.done(superseded, True) and bg.outcome(superseded) == "abiapp: deploy superseded by job 9"


def test_following_a_job_past_its_timeout_fails_and_leaves_it_running() -> None:
    class Jobs:
        def job(self, app: str, job_id: int, offset: int) -> dict:
            return {"job": {"id": job_id, "status": "running"}}

    class Proxy:
        bluegreen = Jobs()

    now = [0.0]
    with pytest.raises(bg.BluegreenError, match="abiapp: job 3 still running after 5 s"):
        bg.follow(Proxy(), "abiapp", 3, 5, True, sleep=lambda s: now.__setitem__(0, now[0] + s), clock=lambda: now[0])


def test_every_module_documents_exactly_the_options_it_takes() -> None:
    """ansible-doc reads DOCUMENTATION; an option the module takes but does not document (or the reverse) is a lie."""
    fragment = yaml.safe_load(doc_string(REPO / "ansible/plugins/doc_fragments/connection.py", "DOCUMENTATION"))
    for path in sorted((REPO / "ansible/plugins/modules").glob("*.py")):
        doc = yaml.safe_load(doc_string(path, "DOCUMENTATION"))
        assert doc["module"] == path.stem, path.name
        assert doc["extends_documentation_fragment"] == ["bluegreen.supervisor.connection"], path.name
        for name in ("EXAMPLES", "RETURN"):
            assert yaml.safe_load(doc_string(path, name)), (path.name, name)
        documented = set(doc["options"]) | set(fragment["options"])
        assert documented == set(argument_spec(path)) | set(bg.CONNECTION_ARGS), path.name


def doc_string(path: Path, name: str) -> str:
    """A module's (or a doc fragment class's) documentation string, as ansible-doc reads it: without importing."""
    nodes = ast.walk(ast.parse(path.read_text()))
    return next(n.value.value for n in nodes if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == name)


def argument_spec(path: Path) -> list[str]:
    """The literal keys of the module's ``argument_spec={...}`` (the ``**CONNECTION_ARGS`` spread aside)."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.keyword) and node.arg == "argument_spec":
            return [k.value for k in node.value.keys if k is not None]
    raise AssertionError(f"{path.name}: no argument_spec")

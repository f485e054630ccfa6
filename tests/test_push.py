"""`bluegreen push`: the pusher's narrow path takes exactly `[-c CONF] APP COMMIT [--wait]` (pure checks), and
its exit status follows the deploy's outcome even when the log cannot be read (against a real XML-RPC server)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from xmlrpc.server import SimpleXMLRPCServer

import pytest
from conftest import REPO

from supervisor_bluegreen.ctl import push
from supervisor_bluegreen.ctl.push import NO_LOG, Refused, conf_problem, main, parse

SHA = "0123456789abcdef0123456789abcdef01234567"


def test_parse_takes_exactly_app_and_a_full_commit_id() -> None:
    assert parse(["abiapp", SHA]) == ("", "abiapp", SHA, False, "")
    assert parse(["-c", "/etc/supervisor/supervisord.conf", "abiapp", SHA, "--wait"]) == (
        "/etc/supervisor/supervisord.conf", "abiapp", SHA, True, "",
    )  # fmt: skip
    assert parse(["abiapp", "a" * 64])[2] == "a" * 64  # sha256 repositories
    assert parse(["abiapp", SHA, "--by", "Alice <alice@example.org>", "--wait"]) == (
        "", "abiapp", SHA, True, "Alice <alice@example.org>",
    )  # fmt: skip
    assert parse(["abiapp", SHA, "--by", "-c /etc/evil"]).by == "-c /etc/evil"  # one word, whatever it holds
    assert parse(["abiapp", SHA, "--by", ""]).by == ""


@pytest.mark.parametrize(
    "words",
    [
        [],
        ["abiapp"],
        ["abiapp", "main"],
        ["abiapp", SHA.upper()],
        ["abiapp", SHA[:12]],
        ["abiapp", SHA, "otherapp"],
        ["abiapp", SHA, "-c", "/tmp/evil.conf"],
        ["abiapp", SHA, "--wait", "--wait"],
        ["abiapp", SHA, "--allow-unsafe-migrations"],
        ["abiapp", f"{SHA};reboot"],
        ["abiapp", "$(reboot)"],
        ["-x", SHA],
        ["stop", "all"],
        ["-c"],
        ["abiapp", "-c", "/tmp/evil.conf", SHA],
        ["abiapp", SHA, "--by"],
        ["abiapp", SHA, "--by", "Alice", "stop"],
        ["abiapp", SHA, "--wait", "--by", "Alice"],
        ["abiapp", "--by", "Alice", SHA],
        ["abiapp", SHA, "--by", "Alice", "--allow-unsafe-migrations"],
    ],
)
def test_parse_refuses_every_other_word(words: list[str]) -> None:
    with pytest.raises(Refused):
        parse(words)


def test_conf_must_be_absolute_regular_and_changeable_by_root_only(tmp_path: Path) -> None:
    conf = tmp_path / "supervisord.conf"
    conf.write_text("[supervisorctl]\n")
    conf.chmod(0o644)
    tmp_path.chmod(0o755)
    assert conf_problem(str(conf)) is None
    assert conf_problem("etc/supervisord.conf") == "not an absolute path"
    conf.chmod(0o664)
    assert conf_problem(str(conf)) == f"{conf} is writable by others"
    conf.chmod(0o644)
    tmp_path.chmod(0o777)
    assert conf_problem(str(conf)) == f"{tmp_path} is writable by others"
    tmp_path.chmod(0o755)
    link = tmp_path / "link.conf"
    link.symlink_to(conf)
    assert conf_problem(str(link)) == "not a regular file"
    if os.geteuid() == 0:
        os.chown(conf, 65534, 65534)
        assert conf_problem(str(conf)) == f"{conf} is owned by uid 65534, not root"


def test_conf_follows_the_stores_private_rule_a_sticky_folder_above_roots_file_is_fine(tmp_path: Path) -> None:
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)  # like /tmp: others cannot rename root's file in it
    tmp_path.chmod(0o755)
    conf = sticky / "supervisord.conf"
    conf.write_text("[supervisorctl]\n")
    conf.chmod(0o644)
    assert conf_problem(str(conf)) is None
    linked = tmp_path / "linked"
    linked.symlink_to(sticky)  # a folder on the way that is a link: where it leads is checked too
    assert conf_problem(str(linked / "supervisord.conf")) is None
    sticky.chmod(0o777)
    assert conf_problem(str(linked / "supervisord.conf")) == f"{linked} is writable by others"  # as written


# --------------------------------------------------------------------------------------------
# the exit status follows the deploy's outcome, never a failure to read its log (issue 13)


class Supervisord:
    """A real XML-RPC server on 127.0.0.1 with the ``bluegreen.deploy`` and ``bluegreen.job`` a push calls.

    Its log chunks carry a raw ESC, as supervisord's did before logs were escaped: the answer is XML
    no client can parse ("not well-formed (invalid token)"). ``outcome`` is how job 7 ends after two polls;
    ``broken_status`` makes even the job without its log unreadable.
    """

    def __init__(self, outcome: str, broken_status: bool = False):
        self.outcome, self.broken_status, self.polls = outcome, broken_status, 0
        self.who: list[str] = []
        self.server = SimpleXMLRPCServer(("127.0.0.1", 0), logRequests=False, allow_none=False)
        self.server.register_function(self.deploy, "bluegreen.deploy")
        self.server.register_function(self.job, "bluegreen.job")
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def deploy(self, app: str, ref: str, who: str, allow_unsafe: bool) -> dict[str, object]:
        self.who.append(who)
        return {"id": 7, "app": app, "kind": "deploy", "status": "queued"}

    def job(self, app: str, job_id: int, offset: int) -> dict[str, object]:
        self.polls += 1
        status = self.outcome if self.polls > 3 else "running"
        message = {"succeeded": f"{app}: green live at {SHA[:7]}", "failed": f"{app}: deploy failed: test failed"}
        job = {"id": job_id, "app": app, "kind": "deploy", "status": status, "message": message.get(status, "")}
        if offset == NO_LOG and self.broken_status:
            job["message"] = "\x1b[31mFAILED\x1b[0m"
        log = "" if offset == NO_LOG else "    | \x1b[32mok\x1b[0m\n"
        return {"job": job, "log": log, "offset": offset + len(log)}

    def __enter__(self) -> str:
        self.thread.start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


def push_to(server: Supervisord, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *more: str) -> int:
    """``bluegreen push -c CONF abiapp SHA [MORE]`` against ``server``; its exit status."""
    monkeypatch.chdir(tmp_path)  # main() moves to /: back here after the test
    with server as url:
        conf = tmp_path / "supervisord.conf"
        conf.write_text(f"[supervisorctl]\nserverurl = {url}\n")
        conf.chmod(0o644)
        return main(["-c", str(conf), "abiapp", SHA, *more])


@pytest.mark.parametrize(("outcome", "status"), [("succeeded", 0), ("failed", 1)])
def test_an_unreadable_log_falls_back_to_the_jobs_status(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], outcome: str, status: int
) -> None:
    assert push_to(Supervisord(outcome), tmp_path, monkeypatch) == status
    out = capsys.readouterr().out
    assert "cannot read the log of job 7 (ExpatError: not well-formed (invalid token)" in out
    assert "following its status only (whole log: supervisorctl bluegreen log abiapp 7)" in out
    if outcome == "succeeded":
        assert out.rstrip().endswith(f"abiapp: green live at {SHA[:7]}")
    else:
        assert "ERROR: abiapp: deploy failed: test failed" in out


def test_a_push_that_cannot_tell_says_so_and_names_the_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(push, "PATIENCE", 0.5)
    assert push_to(Supervisord("succeeded", broken_status=True), tmp_path, monkeypatch) == 1
    out = capsys.readouterr().out
    assert "ERROR: bluegreen push: cannot tell how deploy job 7 of abiapp ended (ExpatError: " in out
    assert "it may still go live: supervisorctl bluegreen status abiapp; supervisorctl bluegreen log abiapp 7" in out


def test_the_push_records_the_person_beside_the_account_sudo_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SUDO_USER", "abiapp")  # sudo's: the hook's Unix account, not root
    by, older = Supervisord("succeeded"), Supervisord("succeeded")
    assert push_to(by, tmp_path, monkeypatch, "--by", "Alice <alice@example.org>") == 0
    assert push_to(older, tmp_path, monkeypatch) == 0  # an older hook: the account alone
    host = socket.gethostname()
    assert by.who == [f"Alice <alice@example.org> (abiapp@{host} via git push)"]
    assert older.who == [f"abiapp@{host} via git push"]


# --------------------------------------------------------------------------------------------
# the shipped pre-receive hook names the person: real git and sh, a stand-in for `bluegreen push`

HOSTED = ("GL_USERNAME", "GITHUB_USER", "REMOTE_USER", "SUDO_USER")


def hooked_repo(tmp_path: Path, exit_status: int) -> tuple[Path, Path, Path]:
    """A bare repository with the shipped pre-receive hook whose push command records its words; a clone."""
    bare, work, words = tmp_path / "app.git", tmp_path / "work", tmp_path / "words"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
    shutil.copy(REPO / "conf" / "hooks" / "pre-receive", bare / "hooks" / "pre-receive")
    fake = tmp_path / "fake-push"
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {words}\necho "fake deploy of $2"\nexit {exit_status}\n')
    fake.chmod(0o755)
    for key, value in (("app", "abiapp"), ("push", str(fake))):
        subprocess.run(["git", "--git-dir", str(bare), "config", f"bluegreen.{key}", value], check=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
    return bare, work, words


def commit_and_push(
    work: Path, env: dict[str, str], author: str = "Alice", email: str = "alice@example.org"
) -> tuple[str, subprocess.CompletedProcess[str]]:
    (work / "VERSION").write_text(f"{time.time()}\n")
    ident = ["-c", f"user.name={author}", "-c", f"user.email={email}"]
    subprocess.run(["git", "-C", str(work), "add", "VERSION"], check=True)
    subprocess.run(["git", "-C", str(work), *ident, "commit", "-qm", "change"], check=True, env=env)
    sha = subprocess.run(["git", "-C", str(work), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    out = subprocess.run(["git", "-C", str(work), "push", "-q", "../app.git", "main"], capture_output=True,
                         text=True, env=env, timeout=60)  # fmt: skip
    return sha, out


@pytest.mark.integration
def test_the_hook_passes_the_pushed_commits_committer_or_the_hosting_layers_user(tmp_path: Path) -> None:
    _, work, words = hooked_repo(tmp_path, 0)
    env = {k: v for k, v in os.environ.items() if k not in HOSTED}
    sha, out = commit_and_push(work, env)
    assert out.returncode == 0, out.stderr
    assert words.read_text().splitlines() == ["abiapp", sha, "--by", "Alice <alice@example.org>"]
    sha, out = commit_and_push(work, {**env, "GL_USERNAME": "alice"})  # GitLab's shell names the pusher
    assert out.returncode == 0, out.stderr
    assert words.read_text().splitlines() == ["abiapp", sha, "--by", "alice"]


@pytest.mark.integration
def test_a_push_whose_deploy_fails_is_rejected_by_the_hook_and_the_branch_stays(tmp_path: Path) -> None:
    bare, work, words = hooked_repo(tmp_path, 1)
    env = {k: v for k, v in os.environ.items() if k not in HOSTED}
    sha, out = commit_and_push(work, env)
    assert out.returncode != 0 and "pre-receive hook declined" in out.stderr, out.stderr
    assert words.read_text().splitlines()[:2] == ["abiapp", sha]
    head = subprocess.run(["git", "--git-dir", str(bare), "rev-parse", "--verify", "-q", "refs/heads/main"],
                          capture_output=True, text=True)  # fmt: skip
    assert head.returncode != 0  # main never moved (here: never made)

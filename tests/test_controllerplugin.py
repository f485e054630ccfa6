"""What supervisorctl prints: the human status and history lines (pure formatting)."""

from __future__ import annotations

import re
import socket
from datetime import datetime

import pytest

from supervisor_bluegreen.ctl.controllerplugin import (
    COMMANDS,
    USAGE,
    BlueGreenControllerPlugin,
    format_header,
    format_history,
    format_status,
    format_times,
    who_text,
)


def test_status_shows_both_colors_health_and_jobs() -> None:
    text = format_status({
        "app": "abiapp", "switch_mode": "socket", "live": "green", "switched_at": 0,
        "colors": {
            "blue": {"program": "abiapp_blue", "state": "RUNNING", "role": "idle", "version": "cb6e93f"},
            "green": {"program": "abiapp_green", "state": "RUNNING", "role": "live", "version": "3f2c1a9"},
        },
        "last_health": {"color": "green", "ok": True, "detail": "status 200", "at": 0},
        "running": {"id": 9, "kind": "deploy", "status": "running", "step": "test", "elapsed": 12.34},
        "last_job": {"id": 8, "kind": "deploy", "status": "succeeded", "message": "abiapp: green live at 3f2c1a9\nx"},
    })  # fmt: skip
    lines = text.splitlines()
    assert lines[0] == "abiapp (socket switch): live green since never"
    assert lines[1].split() == ["blue", "idle", "abiapp_blue", "RUNNING", "cb6e93f"]
    assert lines[2].split() == ["green", "live", "abiapp_green", "RUNNING", "3f2c1a9"]
    assert "last health: green ok status 200" in lines[3]
    assert lines[4] == "  in progress: deploy job 9 running step test (12.3 s)"
    assert lines[5] == "  last job: deploy job 8 succeeded: abiapp: green live at 3f2c1a9"


def test_status_lists_every_worker_with_its_state_pid_and_the_release_it_runs() -> None:
    rel = "20261207T101500-3f2c1a9e0d11"
    text = format_status({
        "app": "abiapp", "switch_mode": "socket", "live": "green", "switched_at": 0,
        "colors": {"green": {"program": "abiapp_green", "state": "RUNNING", "role": "live", "release": rel}},
        "workers": [
            {"program": "abiapp_celery", "state": "RUNNING", "pid": 4242, "since": 0,
             "directory": f"/srv/abiapp/releases/{rel}/src"},
            {"program": "abiapp_beat", "state": "RUNNING", "pid": 77, "since": 0, "directory": "/srv/elsewhere"},
            {"program": "abiapp_mail", "state": "FATAL", "pid": 0, "since": 0, "directory": ""},
        ],
    })  # fmt: skip
    lines = text.splitlines()[2:]
    assert lines[0].split()[:3] == ["worker", "abiapp_celery", "RUNNING"]
    assert lines[0].endswith("pid 4242, up since never, runs green's release")
    assert lines[1].endswith("pid 77, up since never, in /srv/elsewhere")
    assert lines[2].split() == ["worker", "abiapp_mail", "FATAL"]


def test_status_says_a_queued_deploy_waits_for_a_watch_window() -> None:
    text = format_status({
        "app": "abiapp", "switch_mode": "socket", "live": "green", "switched_at": 0, "colors": {},
        "running": {"id": 9, "kind": "deploy", "status": "queued", "step": "", "elapsed": 3.0, "waiting": 8},
    })  # fmt: skip
    assert text.splitlines()[1] == (
        "  in progress: deploy job 9 queued step - (3.0 s), waiting for the watch window of job 8"
    )


def test_status_shows_the_watch_window_contract_migrations_lock_and_a_cleared_rollback() -> None:
    base = {"app": "abiapp", "switch_mode": "socket", "live": "green", "switched_at": 0, "colors": {}}
    text = format_status({
        **base, "locked": True, "previous": "",
        "watch": {"color": "green", "previous": "blue", "remaining": 41.6},
        "contract": {"migrations": ["shop.0007_drop_old", "shop.0008_drop_more"]},
        "rollback_cleared": {"job": 12, "contract": 13},
    })  # fmt: skip
    assert text.splitlines()[1:] == [
        "  watch: green watched for 42 s more; a crash or failed probes roll back to blue by themselves",
        "  contract migrations waiting for the window to pass: shop.0007_drop_old, shop.0008_drop_more",
        "  rollback: none; contract migrations of deploy job 12 ran (job 13), and rolling back past them is not safe",
        "  lock: held by the listener (a job or a watch window)",
    ]
    # a rollback target set again (a later deploy) hides the cleared note; unset fields print nothing
    again = format_status({**base, "previous": "blue", "rollback_cleared": {"job": 12, "contract": 13}, "watch": {}})
    assert again.splitlines()[1:] == []
    # contract = manual: once the window passed they wait for a person's (or a fleet's) `bluegreen contract`
    manual = format_status({**base, "contract_mode": "manual", "contract": {"migrations": ["shop.0007_drop_old"]}})
    assert manual.splitlines()[1:] == [
        "  contract migrations waiting for `bluegreen contract abiapp`: shop.0007_drop_old"
    ]


def test_status_shows_a_persons_lock_and_the_maintenance_page() -> None:
    base = {"app": "abiapp", "switch_mode": "socket", "live": "green", "switched_at": 0, "colors": {}}
    text = format_status({
        **base, "lock": {"who": "abi@vm via supervisorctl", "since": 0, "reason": "db upgrade"},
        "maintenance": {"page": "/var/www/bluegreen/abiapp.html", "who": "abi@vm", "since": 0, "message": "soon"},
    })  # fmt: skip
    assert text.splitlines()[1:] == [
        "  LOCKED by abi@vm via supervisorctl since never: db upgrade (deploys, pushes, switches and rollbacks"
        " refused; bluegreen unlock)",
        "  MAINTENANCE since never by abi@vm: nginx answers 503 with 'soon'",
    ]
    assert format_status({**base, "lock": {}, "maintenance": {}}).splitlines()[1:] == []


def test_history_line_has_ref_commit_color_who_steps_and_backup() -> None:
    text = format_history({
        "id": 12, "created": 0, "kind": "deploy", "status": "succeeded", "ref": "main", "commit": "3f2c1a9e0d",
        "color": "green", "who": "abi@vm via supervisorctl", "message": "abiapp: green live at 3f2c1a9 in 41.8 s",
        "steps": [{"name": "migrate", "seconds": 1.25}, {"name": "test", "seconds": 3.5}], "backup": "/b/a.sql.gz",
    })  # fmt: skip
    head, times, message, timings, backup = text.splitlines()
    assert times.strip() == "queued never, not started yet"
    assert head.split()[0] == "#12" and "ref=main commit=3f2c1a9 color=green by abi@vm via supervisorctl" in head
    assert message.strip() == "abiapp: green live at 3f2c1a9 in 41.8 s"
    assert timings.strip() == "steps: migrate=1.2s test=3.5s"
    assert backup.strip() == "backup: /b/a.sql.gz"


QUEUED = datetime(2026, 12, 7, 2, 44, 1).timestamp()  # local time, as supervisorctl prints it


def test_history_says_when_a_job_was_queued_started_and_ended() -> None:
    done = {"created": QUEUED, "started": QUEUED + 4, "finished": QUEUED + 69}
    assert format_times(done) == (
        "queued 2026-12-07 02:44:01, started 02:44:05 (after 4.0 s), ended 02:45:10 (ran 65.0 s)"
    )
    assert format_times({"created": QUEUED, "started": "", "finished": QUEUED + 3}) == (
        "queued 2026-12-07 02:44:01, never started, ended 02:44:04"  # cancelled or superseded in the queue
    )
    assert format_times({"created": QUEUED}) == "queued 2026-12-07 02:44:01, not started yet"
    assert format_times({"created": QUEUED, "started": QUEUED + 1}).endswith("(after 1.0 s), not ended yet")
    next_day = format_times({"created": QUEUED, "started": QUEUED + 1, "finished": QUEUED + 86400})
    assert next_day.endswith("ended 2026-12-08 02:44:01 (ran 86399.0 s)")  # a date when the day changed
    text = format_history({
        "id": 3, "kind": "deploy", "status": "succeeded", "ref": "main", "commit": "3f2c1a9e0d", "color": "green",
        "who": "Alice <alice@example.org> (abiapp@vm via git push)", "message": "abiapp: green live", **done,
    })  # fmt: skip
    head, times, message = text.splitlines()
    assert head.endswith("by Alice <alice@example.org> (abiapp@vm via git push)")
    assert times.strip() == format_times(done) and message.strip() == "abiapp: green live"


def test_the_log_header_names_the_job_who_what_and_when() -> None:
    job = {"id": 12, "kind": "deploy", "status": "succeeded",
           "who": "Alice <alice@example.org> (abiapp@vm via git push)", "args": {"ref": "main"}, "ref": "main",
           "commit": "3f2c1a9e0d4b5a6f", "created": QUEUED, "started": QUEUED + 4, "finished": QUEUED + 69}  # fmt: skip
    assert format_header(job) == (
        "job 12 deploy (succeeded) by Alice <alice@example.org> (abiapp@vm via git push), ref main, commit "
        "3f2c1a9e0d4b: queued 2026-12-07 02:44:01, started 02:44:05 (after 4.0 s), ended 02:45:10 (ran 65.0 s)"
    )
    queued = {"id": 13, "kind": "deploy", "status": "queued", "who": "abi@vm via supervisorctl",
              "args": {"ref": "v2"}, "created": QUEUED, "started": None, "finished": None}  # fmt: skip
    assert format_header(queued) == (
        "job 13 deploy (queued) by abi@vm via supervisorctl, ref v2: queued 2026-12-07 02:44:01, not started yet"
    )


def test_who_is_the_person_beside_the_unix_account() -> None:
    host = socket.gethostname()
    assert who_text("Alice <alice@example.org>", "abiapp", "git push") == (
        f"Alice <alice@example.org> (abiapp@{host} via git push)"
    )
    assert who_text("", "abi", "supervisorctl") == f"abi@{host} via supervisorctl"
    assert who_text("abi", "abi", "supervisorctl") == f"abi@{host} via supervisorctl"  # said once
    assert who_text("alice", "root", "supervisorctl") == f"alice (root@{host} via supervisorctl)"  # through sudo
    odd = who_text("Eve\x1b[2J\n  <e@x>" + "x" * 500, "git", "git push")
    assert "\x1b" not in odd and "\n" not in odd and odd.startswith("Eve\\x1b[2J <e@x>")
    assert len(odd) < 300  # cut to PERSON_MAX


def test_a_supervisorctl_user_through_sudo_is_the_person_sudo_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUDO_USER", "alice")
    monkeypatch.setenv("USER", "root")
    monkeypatch.setenv("LOGNAME", "root")
    ctl, _ = controller(tmp_path, "unix:///run/supervisor.sock")
    (plugin,) = [p for p in ctl.options.plugins if isinstance(p, BlueGreenControllerPlugin)]
    assert plugin.who == f"alice (root@{socket.gethostname()} via supervisorctl)"
    monkeypatch.delenv("SUDO_USER")
    ctl, _ = controller(tmp_path, "unix:///run/supervisor.sock")
    (plugin,) = [p for p in ctl.options.plugins if isinstance(p, BlueGreenControllerPlugin)]
    assert plugin.who == f"root@{socket.gethostname()} via supervisorctl"


def test_help_names_every_command_the_plugin_dispatches() -> None:
    handlers = sorted(name[len("cmd_") :] for name in dir(BlueGreenControllerPlugin) if name.startswith("cmd_"))
    assert sorted(COMMANDS) == handlers  # a command without a handler, or a handler nobody can call
    assert re.findall(r"^bluegreen (\S+) ", USAGE, re.MULTILINE) == list(COMMANDS)  # every one, once, in order
    for name, command in COMMANDS.items():
        assert f"bluegreen {name} {command.usage}" in USAGE


# --------------------------------------------------------------------------------------------
# supervisord unreachable, plugin not loaded, `help bluegreen`: a real supervisorctl Controller

import errno  # noqa: E402
import io  # noqa: E402
import xmlrpc.client  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from supervisor.options import ClientOptions  # noqa: E402
from supervisor.supervisorctl import Controller, LSBInitExitStatuses  # noqa: E402

from supervisor_bluegreen.shared.store import Store  # noqa: E402


def controller(tmp_path: Path, serverurl: str) -> tuple[Controller, io.StringIO]:
    """supervisorctl as a user runs it: its config with our [ctlplugin:bluegreen], output captured."""
    conf = tmp_path / "supervisord.conf"
    conf.write_text(
        f"[supervisorctl]\nserverurl = {serverurl}\n\n"
        "[ctlplugin:bluegreen]\nsupervisor.ctl_factory = "
        "supervisor_bluegreen.controllerplugin:make_bluegreen_controllerplugin\n"
    )
    options = ClientOptions()
    options.realize(["-c", str(conf), "bluegreen"], doc="")
    out = io.StringIO()
    return Controller(options, stdout=out), out


def test_supervisord_down_is_one_line_with_the_fix_and_supervisorctls_exit_status(tmp_path: Path) -> None:
    url = f"unix://{tmp_path}/missing.sock"
    ctl, out = controller(tmp_path, url)
    ctl.onecmd("bluegreen status")
    lines = out.getvalue().splitlines()
    assert lines == [
        f"ERROR: cannot reach supervisord at {url}: no such socket: supervisord is not running (start it: "
        "systemctl start supervisor), or -c names another config than the one it runs with"
    ]
    assert ctl.exitstatus == LSBInitExitStatuses.NOT_RUNNING


def test_a_socket_nobody_listens_on_is_connection_refused(tmp_path: Path) -> None:
    path = tmp_path / "dead.sock"
    with socket.socket(socket.AF_UNIX) as s:  # bound, never listening: what a crashed supervisord leaves
        s.bind(str(path))
    for command in ("bluegreen deploy abiapp main", "bluegreen history", "bluegreen log -f"):
        ctl, out = controller(tmp_path, f"unix://{path}")
        ctl.onecmd(command)
        text = out.getvalue()
        assert len(text.splitlines()) == 1 and "connection refused: supervisord is not running" in text, text
        assert "<class" not in text and "Error" not in text.replace("ERROR:", "")
        assert ctl.exitstatus == LSBInitExitStatuses.INSUFFICIENT_PRIVILEGES


class Proxy:
    """A bluegreen namespace whose every call raises ``error`` (what the transport raised)."""

    def __init__(self, error: Exception):
        self.error = error

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any) -> Any:
            raise self.error

        return call


def run_with(tmp_path: Path, error: Exception, command: str = "bluegreen status") -> tuple[Controller, str]:
    ctl, out = controller(tmp_path, "unix:///run/supervisor.sock")
    ctl.get_server_proxy = lambda namespace=None: Proxy(error)  # type: ignore[method-assign]
    ctl.onecmd(command)
    return ctl, out.getvalue()


def test_permission_denied_says_run_as_root_or_push_through_the_hook(tmp_path: Path) -> None:
    ctl, text = run_with(tmp_path, PermissionError(errno.EACCES, "Permission denied"))
    assert text.splitlines() == [
        "ERROR: cannot reach supervisord at unix:///run/supervisor.sock: permission denied: run it as root "
        "(sudo supervisorctl ...); a git pusher deploys through the pre-receive hook and `bluegreen push` instead"
    ]
    assert ctl.exitstatus == LSBInitExitStatuses.INSUFFICIENT_PRIVILEGES


def test_plugin_not_loaded_in_supervisord_says_which_include_and_that_a_restart_is_needed(tmp_path: Path) -> None:
    fault = xmlrpc.client.Fault(1, "UNKNOWN_METHOD")  # supervisord's answer to bluegreen.* without the plugin
    ctl, text = run_with(tmp_path, fault, "bluegreen deploy")
    assert len(text.splitlines()) == 1
    assert text.startswith("ERROR: supervisord at unix:///run/supervisor.sock has no bluegreen API: ")
    assert "[rpcinterface:bluegreen]" in text and "restart supervisord" in text
    assert ctl.exitstatus == LSBInitExitStatuses.UNIMPLEMENTED_FEATURE


def test_a_locked_apps_refusal_is_said_and_fails_the_command(tmp_path: Path) -> None:
    refusal = "FAILED: abiapp: deploy refused: locked by abi@vm since 2026-12-07 02:50:00: db upgrade; nothing changed"
    ctl, text = run_with(tmp_path, xmlrpc.client.Fault(30, refusal), "bluegreen deploy abiapp main")
    assert text.splitlines() == [f"ERROR: {refusal}"]
    assert ctl.exitstatus == LSBInitExitStatuses.GENERIC


def test_other_faults_keep_their_message(tmp_path: Path) -> None:
    ctl, text = run_with(tmp_path, xmlrpc.client.Fault(10, "BAD_NAME: no app 'shop'"))
    assert text.splitlines() == ["ERROR: BAD_NAME: no app 'shop'"]
    assert ctl.exitstatus == LSBInitExitStatuses.GENERIC


def test_help_bluegreen_prints_the_usage_once_and_no_no_help_line(tmp_path: Path) -> None:
    ctl, out = controller(tmp_path, "unix:///nowhere.sock")
    ctl.onecmd("help bluegreen")
    text = out.getvalue()
    assert "No help" not in text
    assert text.startswith("bluegreen status [APP]") and text.count("bluegreen status [APP]") == 1
    out.truncate(0)
    out.seek(0)
    ctl.onecmd("help status")  # supervisorctl's own topics: answered by it, not refused by us
    assert "No help" not in out.getvalue() and out.getvalue().strip()
    out.truncate(0)
    out.seek(0)
    ctl.onecmd("help")
    assert "bluegreen" in out.getvalue()


def test_a_failed_job_ends_with_its_verdict_and_where_the_whole_log_is() -> None:
    class Ctl:
        exitstatus = 0
        lines: list[str] = []

        def output(self, text: str) -> None:
            self.lines.append(text)

    class Api:
        def job(self, app: str, job_id: int, offset: int) -> dict[str, Any]:
            log = "[  1.00s] migrate ...\n    | Traceback (most recent call last):\n    | RuntimeError: boom\n"
            message = (
                "abiapp: deploy failed: migrate failed: exit status 1 (RuntimeError: boom); no migration was applied"
                "\nblue live, unchanged"
            )
            return {"job": {"status": "failed", "message": message}, "log": log if not offset else "", "offset": 1}

    ctl = Ctl()
    plugin = BlueGreenControllerPlugin(ctl)
    plugin.ctl.get_server_proxy = lambda namespace=None: Api()  # type: ignore[attr-defined]
    plugin.follow("abiapp", {"id": 4, "app": "abiapp", "kind": "deploy"})
    text = "\n".join(ctl.lines).splitlines()
    verdict = text.index(
        "ERROR: abiapp: deploy failed: migrate failed: exit status 1 (RuntimeError: boom); no migration was applied"
    )
    assert text.index("    | RuntimeError: boom") < verdict
    assert text[verdict + 1 :] == ["blue live, unchanged", "whole log: supervisorctl bluegreen log abiapp 4"]
    assert ctl.exitstatus == LSBInitExitStatuses.GENERIC


def test_log_prints_the_whole_log_of_a_job_not_only_its_first_answer(tmp_path: Path) -> None:
    """Each answer holds 64 KB of the log: a failed build's traceback at its end must be printed too."""
    store = Store(str(tmp_path), "abiapp", sync=False).ensure()
    job = store.create_job("deploy", {})
    store.update_job(job["id"], status="failed", message="abiapp: deploy failed: test failed\nblue live, unchanged")
    for n in range(3000):
        store.append_log(job["id"], f"[  1.00s]     | test output line {n:04d} " + "x" * 60)
    store.append_log(job["id"], "[  9.00s]     | RuntimeError: the last line")

    class Api:
        def log(self, app: str, job_id: int, offset: int) -> dict[str, Any]:
            text, end = store.read_log(job["id"], offset)
            return {"job": {**(store.read_job(job["id"]) or {}), "app": app}, "log": text, "offset": end}

    ctl, out = controller(tmp_path, "unix:///run/supervisor.sock")
    ctl.get_server_proxy = lambda namespace=None: Api()  # type: ignore[method-assign]
    ctl.onecmd("bluegreen log abiapp 1")
    lines = out.getvalue().splitlines()
    assert len(out.getvalue()) > 3 * 65536
    assert lines[0] == format_header(store.read_job(job["id"]) or {})  # the header first: who, what, when
    assert lines[0].startswith("job 1 deploy (failed) by ?: queued ")
    assert lines[1] == "[  1.00s]     | test output line 0000 " + "x" * 60
    assert [line for line in lines if "test output line" in line][-1].endswith("line 2999 " + "x" * 60)
    assert lines[-3:] == [
        "[  9.00s]     | RuntimeError: the last line",
        "abiapp: deploy failed: test failed",
        "blue live, unchanged",
    ]


# --------------------------------------------------------------------------------------------
# each command's arguments in any order (argparse), through supervisorctl's own Controller


class Recorder:
    """The bluegreen namespace as the commands call it, for one app 'abiapp': every call recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def __getattr__(self, method: str) -> Any:
        def call(*args: Any) -> Any:
            self.calls.append((method, *args))
            if method == "status":
                return [{"app": "abiapp"}]
            if method == "deploy":
                return {"app": "abiapp", "id": 7, "kind": "deploy"}
            if method == "log":
                return {"job": {"id": 3, "app": "abiapp", "status": "succeeded", "message": "done"}, "log": ""}
            return []

        return call


def run_line(tmp_path: Path, line: str) -> tuple[Controller, Recorder, str]:
    ctl, out = controller(tmp_path, "unix:///run/supervisor.sock")
    api = Recorder()
    ctl.get_server_proxy = lambda namespace=None: api  # type: ignore[method-assign]
    ctl.onecmd(line)
    return ctl, api, out.getvalue()


@pytest.mark.parametrize(
    ("line", "call"),
    [
        ("history abiapp -n 5", ("history", "abiapp", 5, False)),
        ("history -n 5 abiapp", ("history", "abiapp", 5, False)),
        ("history -n5 --all abiapp", ("history", "abiapp", 5, True)),
        ("history", ("history", "", 10, False)),
        ("deploy --detach abiapp main --allow-unsafe-migrations", ("deploy", "abiapp", "main", "WHO", True)),
        ("deploy --allow-unsafe-migrations main --detach", ("deploy", "", "main", "WHO", True)),
        ("deploy abiapp --detach", ("deploy", "abiapp", "", "WHO", False)),
        ("status --json abiapp", ("status", "abiapp")),
        ("log abiapp 3", ("log", "abiapp", 3, 0)),
        ("log 3", ("log", "", 3, 0)),
        ("cancel --force abiapp", ("cancel", "abiapp", True)),
        ("backups abiapp", ("backups", "abiapp")),
        ("maintenance on abiapp --message 'back at 10:00'", ("maintenance", "abiapp", True, "back at 10:00", "WHO")),
        ("maintenance --message=soon on", ("maintenance", "", True, "soon", "WHO")),
        ("maintenance off abiapp", ("maintenance", "abiapp", False, "", "WHO")),
        ("lock abiapp --reason 'db upgrade'", ("lock", "abiapp", "db upgrade", "WHO")),
        ("lock abiapp --reason db upgrade, back Monday", ("lock", "abiapp", "db upgrade, back Monday", "WHO")),
        ("lock --reason db upgrade", ("lock", "", "db upgrade", "WHO")),
        ("maintenance on abiapp --message back at 10:00", ("maintenance", "abiapp", True, "back at 10:00", "WHO")),
        ("lock abiapp --reason=x", ("lock", "abiapp", "x", "WHO")),
        ("unlock", ("unlock", "", "WHO")),
    ],
)
def test_arguments_parse_in_any_order(tmp_path: Path, line: str, call: tuple[Any, ...]) -> None:
    ctl, api, text = run_line(tmp_path, f"bluegreen {line}")
    (plugin,) = [p for p in ctl.options.plugins if isinstance(p, BlueGreenControllerPlugin)]
    want = tuple(plugin.who if part == "WHO" else part for part in call)
    assert api.calls[-1] == want, text
    assert ctl.exitstatus == LSBInitExitStatuses.SUCCESS, text


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("history -n 0", "argument -n: invalid count value: '0'"),
        ("history -n x abiapp", "argument -n: invalid count value: 'x'"),
        ("history abiapp other", "unrecognized arguments: other"),
        ("status --jso", "unrecognized arguments: --jso"),
        ("deploy --detach --wait", "argument --wait: not allowed with argument --detach"),
        ("deploy abiap", "unknown app 'abiap' (did you mean abiapp?); a REF comes after the app's name"),
        ("deploy abiapp main extra", "unrecognized arguments: extra"),
        ("switch a b c", "unrecognized arguments: c"),
        ("log abiapp x", "job id must be a number, got 'x'"),
        ("log 3 abiapp", "job id must be a number, got 'abiapp'"),
        ("maintenance abiapp", "argument state: invalid choice: 'abiapp' (choose from 'on', 'off')"),
        ("maintenance", "the following arguments are required: state"),
        ("maintenance on abiapp extra", "unrecognized arguments: extra"),
        ("lock abiapp", "the following arguments are required: --reason"),
        ("unlock abiapp --reason x", "unrecognized arguments: --reason x"),
        ("lock abiapp --reason", "argument --reason: expected at least one argument"),
    ],
)
def test_arguments_a_command_does_not_take_are_refused_with_its_usage(tmp_path: Path, line: str, error: str) -> None:
    ctl, api, text = run_line(tmp_path, f"bluegreen {line}")
    name = line.split()[0]
    assert text.splitlines() == [f"ERROR: {error}", f"usage: bluegreen {name} {COMMANDS[name].usage}"]
    assert ctl.exitstatus == LSBInitExitStatuses.INVALID_ARGS
    assert [c[0] for c in api.calls if c[0] != "status"] == []  # nothing was asked of supervisord but the app list

"""What supervisorctl prints: the human status and history lines (pure formatting)."""

from __future__ import annotations

from supervisor_bluegreen.controllerplugin import USAGE, format_history, format_status


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


def test_history_line_has_ref_commit_color_who_steps_and_backup() -> None:
    text = format_history({
        "id": 12, "created": 0, "kind": "deploy", "status": "succeeded", "ref": "main", "commit": "3f2c1a9e0d",
        "color": "green", "who": "abi@vm via supervisorctl", "message": "abiapp: green live at 3f2c1a9 in 41.8 s",
        "steps": [{"name": "migrate", "seconds": 1.25}, {"name": "test", "seconds": 3.5}], "backup": "/b/a.sql.gz",
    })  # fmt: skip
    head, message, timings, backup = text.splitlines()
    assert head.split()[0] == "#12" and "ref=main commit=3f2c1a9 color=green by abi@vm via supervisorctl" in head
    assert message.strip() == "abiapp: green live at 3f2c1a9 in 41.8 s"
    assert timings.strip() == "steps: migrate=1.2s test=3.5s"
    assert backup.strip() == "backup: /b/a.sql.gz"


def test_help_names_every_command() -> None:
    for command in ("status", "switch", "rollback", "health", "deploy", "cancel", "log", "history"):
        assert f"bluegreen {command} " in USAGE

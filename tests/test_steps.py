"""Build steps: argv templates per color, and running one as the app's user with a timeout."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import pytest

from supervisor_bluegreen.host import runner
from supervisor_bluegreen.shared import config
from supervisor_bluegreen.shared.store import LINE_MAX, MARKER


def color(tmp_path: Path) -> config.Color:
    return config.Color(
        name="green", program="shop_green", socket="/run/g.sock", checkout=str(tmp_path),
        static_root="/srv/shop/green/static", python="/srv/shop/green/venv/bin/python",
        environment=(("BLUEGREEN_COLOR", "green"), ("DJANGO_SETTINGS_MODULE", "shop.settings")),
    )  # fmt: skip


def test_preset_steps_expand_per_color_to_argv(tmp_path: Path) -> None:
    preset = runner.builtin_steps()
    # nothing touches the live database before the release's tests pass; the gate, then the backup, then migrate
    assert list(runner.PRESETS["django"]) == ["deps", "collectstatic", "compress", "test", "gate", "backup", "migrate"]
    assert preset["deps"].when_changed == "requirements.txt"
    assert preset["backup"].argv == () and preset["gate"].argv == ()  # built into the deploy
    assert preset["migrate"].uncut and not preset["test"].uncut  # migrate is never cut in half
    assert runner.expand(preset["migrate"].argv, color(tmp_path)) == (
        "/srv/shop/green/venv/bin/python", "manage.py", "migrate", "--noinput",
    )  # fmt: skip
    assert runner.expand(("cp", "-r", "%(checkout)s/x", "%(static_root)s/%(color)s"), color(tmp_path)) == (
        "cp", "-r", f"{tmp_path}/x", "/srv/shop/green/static/green",
    )  # fmt: skip


def test_environment_is_the_colors_without_supervisors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPERVISOR_SERVER_URL", "unix:///x")
    env = runner.environment(color(tmp_path), "nobody")
    assert "SUPERVISOR_SERVER_URL" not in env
    assert env["BLUEGREEN_COLOR"] == "green" and env["DJANGO_SETTINGS_MODULE"] == "shop.settings"
    assert env["USER"] == "nobody" and env["HOME"] == os.path.expanduser("~nobody")


def run(argv: tuple[str, ...], tmp_path: Path, **kwargs: object) -> list[str]:
    lines: list[str] = []
    runner.run(argv, cwd=str(tmp_path), env=dict(os.environ), user="", timeout=10, log=lines.append, **kwargs)
    return lines


@pytest.mark.integration
def test_output_goes_line_by_line_into_the_log(tmp_path: Path) -> None:
    lines = run(("sh", "-c", "echo one; echo two >&2; echo three"), tmp_path)
    assert lines == ["    | one", "    | two", "    | three"]


@pytest.mark.integration
def test_a_failing_step_says_its_exit_status(tmp_path: Path) -> None:
    with pytest.raises(runner.StepError, match="exit status 3"):
        run(("sh", "-c", "exit 3"), tmp_path)


def test_a_missing_program_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(runner.StepError, match="cannot run /no/such/tool"):
        run(("/no/such/tool",), tmp_path)


@pytest.mark.integration
def test_timeout_kills_the_step_and_its_children(tmp_path: Path) -> None:
    marker = tmp_path / "child-survived"
    t0 = time.monotonic()
    with pytest.raises(runner.StepError, match=r"timed out after 0\.5 s"):
        runner.run(("sh", "-c", f"(sleep 2; touch {marker}) & sleep 30"), cwd=str(tmp_path), env=dict(os.environ),
                  user="", timeout=0.5, log=lambda s: None)  # fmt: skip
    assert time.monotonic() - t0 < 3
    time.sleep(2.5)
    assert not marker.exists()  # the whole process group went


@pytest.mark.integration
def test_cancel_stops_a_running_step(tmp_path: Path) -> None:
    asked = time.monotonic() + 0.3
    with pytest.raises(runner.StepError, match="cancelled"):
        run(("sleep", "30"), tmp_path, cancelled=lambda: time.monotonic() > asked)


@pytest.mark.integration
@pytest.mark.skipif(os.geteuid() != 0, reason="dropping to another user needs root")
def test_steps_run_as_the_apps_user(tmp_path: Path) -> None:
    lines: list[str] = []
    runner.run(("id", "-un"), cwd="/tmp", env=runner.environment(color(tmp_path), "nobody"), user="nobody",
              timeout=10, log=lines.append)  # fmt: skip
    assert lines == ["    | nobody"]


@pytest.mark.integration
@pytest.mark.skipif(os.geteuid() != 0, reason="dropping to another user needs root")
def test_a_folder_the_app_user_made_a_link_is_entered_as_that_user_never_as_root(tmp_path: Path) -> None:
    """Popen's ``cwd`` is entered before its user switch, as root: a checkout the app user turned into a link
    to a folder below one it cannot enter led the step there (the step then read what the user cannot)."""
    hidden = tmp_path / "root-only" / "sub"  # tmp_path is root's, 0700: nobody cannot pass it
    hidden.mkdir(parents=True)
    (hidden / "secret").write_text("root's secret\n")
    hidden.chmod(0o755)
    planted = Path(tempfile.mkdtemp(dir="/tmp"))
    try:
        planted.chmod(0o755)
        tree = planted / "app"
        tree.mkdir()
        os.chown(tree, pwd.getpwnam("nobody").pw_uid, pwd.getpwnam("nobody").pw_gid)
        made = runner.capture(["sh", "-c", f"ln -s {hidden} {tree}/src && mkdir {tree}/own"], user="nobody", cwd="/")
        assert made.returncode == 0, made.stderr  # the app user plants the link, and has a folder of its own
        out = runner.capture(["cat", "secret"], cwd=f"{tree}/src", user="nobody")
        assert "root's secret" not in out.stdout and out.returncode != 0
        assert "Permission denied" in out.stderr
        own = runner.capture(["pwd"], cwd=f"{tree}/own", user="nobody")
        assert (own.returncode, own.stdout.strip()) == (0, f"{tree}/own")  # its own folder: as before
    finally:
        shutil.rmtree(planted)


@pytest.mark.integration
def test_probe_tells_whether_an_optional_tool_is_there(tmp_path: Path) -> None:
    assert runner.probe(("true",), cwd=str(tmp_path), env=dict(os.environ), user="")
    assert not runner.probe(("false",), cwd=str(tmp_path), env=dict(os.environ), user="")
    assert not runner.probe(("/no/such/tool",), cwd=str(tmp_path), env=dict(os.environ), user="")


@pytest.mark.integration
def test_an_uncut_step_is_not_killed_by_cancel_or_its_timeout_but_by_force(tmp_path: Path) -> None:
    """cancel and step_timeout wait for a migrate (it only says so); a forced cancel kills it."""
    out = tmp_path / "out"
    pids: list[int] = []
    lines = run(
        ("sh", "-c", "sleep 1.5; echo applied"),
        tmp_path,
        cancelled=lambda: True,
        uncut=runner.Uncut(output=str(out), started=pids.append, forced=lambda: False),
    )
    assert lines[0].startswith("cancel asked: sh -c sleep 1.5; echo applied is never cut in half")
    assert lines[-1] == "    | applied" and len(pids) == 1
    forced = runner.Uncut(output=str(out), started=pids.append, forced=lambda: True)
    with pytest.raises(runner.StepError, match="killed by cancel --force"):
        run(("sleep", "30"), tmp_path, uncut=forced)


@pytest.mark.integration
def test_a_failing_step_says_its_verdict_line_and_logs_the_whole_output(tmp_path: Path) -> None:
    script = "echo 'Traceback (most recent call last):'; echo 'RuntimeError: boom'; echo 'Destroying test db'; exit 1"
    lines: list[str] = []
    with pytest.raises(runner.StepError) as failed:
        runner.run(("sh", "-c", script), cwd=str(tmp_path), env=dict(os.environ), user="", timeout=10, log=lines.append)
    assert str(failed.value) == "exit status 1 (RuntimeError: boom)"
    assert lines == ["    | Traceback (most recent call last):", "    | RuntimeError: boom", "    | Destroying test db"]
    with pytest.raises(runner.StepError, match=r"^exit status 2 \(the last line\)$"):
        run(("sh", "-c", "echo first; echo 'the last line'; exit 2"), tmp_path)
    with pytest.raises(runner.StepError, match=r"^exit status 3$"):
        run(("sh", "-c", "exit 3"), tmp_path)


# a command printing 50 MB: its first line, 50 MB of numbered lines, its last line; a few bytes on stderr
FLOOD = r"""
import sys
out = sys.stdout.buffer
out.write(b"first line\n")
block = b"".join(b"%07d " % i + b"x" * 1015 + b"\n" for i in range(1024))
for _ in range(50):
    out.write(block)
out.write(b"last line\n")
sys.stderr.write("done\n")
"""


@pytest.mark.integration
def test_capture_keeps_a_bounded_head_and_tail_of_a_flood(tmp_path: Path) -> None:
    tracemalloc.start()
    try:
        done = runner.capture((sys.executable, "-c", FLOOD), cwd=str(tmp_path), timeout=60)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert done.returncode == 0 and done.stderr == "done\n"
    assert peak < 3 * (runner.CAPTURE_HEAD + 2 * runner.CAPTURE_TAIL), f"peak {peak >> 20} MB"  # not 50 MB twice over
    head, note = done.stdout.split("\n" + MARKER)
    count, tail = note.split(" bytes of output left out here]\n")
    assert head.startswith("first line\n0000000 x") and tail.endswith("0001023 " + "x" * 1015 + "\nlast line\n")
    assert len(head) == runner.CAPTURE_HEAD and runner.CAPTURE_TAIL <= len(tail) <= 2 * runner.CAPTURE_TAIL
    assert len(head) + int(count) + len(tail) == len("first line\n") + 50 * 1024 * 1024 + len("last line\n")


@pytest.mark.integration
def test_capture_reads_like_text_mode_and_replaces_bytes_that_are_not_utf8(tmp_path: Path) -> None:
    done = runner.capture(("printf", r"a\r\nb\rc \377 ✓\n"), cwd=str(tmp_path))
    assert done.stdout == "a\nb\nc \ufffd ✓\n" and done.stderr == ""


@pytest.mark.integration
def test_capture_still_times_out_and_kills_the_group(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        runner.capture(("sh", "-c", "echo started; sleep 30"), cwd=str(tmp_path), timeout=0.5)
    assert time.monotonic() - started < 5


@pytest.mark.integration
def test_control_characters_of_output_never_reach_the_log_raw(tmp_path: Path) -> None:
    script = r"printf '\033[32mok\033[0m \007 \177 \302\233 \r\n'; printf '\033[31mFAILED (failures=1)\033[0m\n'"
    script += "; exit 1"
    lines: list[str] = []
    with pytest.raises(runner.StepError) as failed:
        runner.run(("sh", "-c", script), cwd=str(tmp_path), env=dict(os.environ), user="", timeout=10, log=lines.append)
    assert lines == [r"    | \x1b[32mok\x1b[0m \x07 \x7f \u009b", r"    | \x1b[31mFAILED (failures=1)\x1b[0m"]
    assert str(failed.value) == r"exit status 1 (\x1b[31mFAILED (failures=1)\x1b[0m)"


@pytest.mark.integration
def test_output_without_newlines_is_logged_in_bounded_pieces(tmp_path: Path) -> None:
    lines = run((sys.executable, "-c", f"print('z' * {3 * LINE_MAX + 10}, end='')"), tmp_path)
    assert [len(line) for line in lines] == [len(runner.OUTPUT) + LINE_MAX] * 3 + [len(runner.OUTPUT) + 10]

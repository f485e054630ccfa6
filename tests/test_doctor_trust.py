"""Issue 13: ``bluegreen doctor`` runs as root over the app user's files; the app user cannot make it run or hang.

A real system user (made here, removed at teardown) owns the app's tree as ``bluegreen init`` lays it
out: its home, the bare repository, the colors' virtualenvs. Acting as that user (every plant runs
through the project's runner as them), the test replaces the venv's gunicorn and python by scripts that
write ``id -u``, and puts a FIFO at hooks/post-receive; then root runs ``doctor.run_checks`` as the
admin would. Nothing of the app's may run as uid 0, and doctor returns within seconds. The data checks
show what any other local user (``nobody``) could read, and that doctor names each with its fix.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import stop_process

from supervisor_bluegreen.ctl import doctor
from supervisor_bluegreen.host import runner

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="making a user and acting as it needs root")

RAN = """#!/bin/sh
id -u > "{out}/{name}"
echo "gunicorn (version 0.0)"
"""


def as_user(user: str, *argv: str) -> None:
    """Run ``argv`` as ``user`` through the project's runner; fail when it fails."""
    done = runner.capture(list(argv), cwd="/", env={"PATH": "/usr/bin:/bin"}, user=user, timeout=20)
    assert done.returncode == 0, f"{argv}: {done.stderr}"


def write_as(user: str, path: Path, text: str, mode: str = "644") -> None:
    """``path`` written (replaced) by ``user`` itself: the app user's own file."""
    as_user(
        user, "sh", "-c", 'rm -f -- "$2" && printf %s "$1" > "$2" && chmod "$3" -- "$2"', "sh", text, str(path), mode
    )


def can_read(user: str, path: Path) -> bool:
    """Whether ``user`` (another local user) can read ``path``."""
    argv = ["head", "-c", "1", "--", str(path)]
    return runner.capture(argv, cwd="/", env={"PATH": "/usr/bin:/bin"}, user=user, timeout=20).returncode == 0


def bounded_checks(config: str, seconds: float = 30.0, **kwargs: Any) -> list[doctor.Finding]:
    """``doctor.run_checks`` in a thread; the test fails when it has not returned after ``seconds``."""
    box: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: box.update(found=doctor.run_checks(config, "shop", **kwargs)), daemon=True)
    started = time.monotonic()
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"bluegreen doctor hung for more than {seconds:g} s")
    assert "found" in box, "run_checks raised (see the thread's traceback above)"
    box["seconds"] = time.monotonic() - started
    return box["found"]


@pytest.fixture
def app() -> Iterator[SimpleNamespace]:
    """A system user owning the app's home, bare repository and both venvs; the app config root reads."""
    root = Path(tempfile.mkdtemp(prefix="bgdoc-", dir="/tmp"))
    root.chmod(0o755)
    name = f"bgdoc{secrets.token_hex(3)}"
    home = root / "home"
    useradd = ["useradd", "--system", "--user-group", "--create-home", "--home-dir", str(home)]
    subprocess.run([*useradd, "--shell", "/usr/sbin/nologin", name], check=True, capture_output=True, timeout=30)
    fifos: list[Path] = []
    try:
        entry = pwd.getpwnam(name)
        for folder in ("blue", "green", "out", "app.git"):
            (root / folder).mkdir()
            os.chown(root / folder, entry.pw_uid, entry.pw_gid)
        as_user(name, "git", "init", "-q", "--bare", str(root / "app.git"))
        for color in ("blue", "green"):
            as_user(name, "mkdir", "-p", str(root / color / "venv" / "bin"), str(root / color / "src"))
        env_file = root / "shop.env"
        env_file.write_text(f"DB_PATH={home}/db.sqlite3\n")
        env_file.chmod(0o640)
        config = root / "bluegreen.ini"
        config.write_text(
            "[app:shop]\n"
            "program = shop_%(color)s\n"
            f"socket = {root}/run/shop.%(color)s.sock\n"
            f"live_socket = {root}/run/shop.live.sock\n"
            f"checkout = {root}/%(color)s/src\n"
            f"python = {root}/%(color)s/venv/bin/python\n"
            f"repo = {root}/app.git\n"
            f"user = {name}\n"
            f"environment_file = {env_file}\n"
            f"state_dir = {root}/state\n"
            f"backup_dir = {root}/backups\n"
            "public_url = http://127.0.0.1:9/health\n"
            "server_name = shop.example.org\n"
        )
        yield SimpleNamespace(root=root, name=name, uid=entry.pw_uid, home=home, config=str(config), fifos=fifos)
    finally:
        for fifo in fifos:  # a doctor stuck opening a FIFO (the code before the fix) gets its end of file
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass
        subprocess.run(["userdel", name], capture_output=True, timeout=30, check=False)
        shutil.rmtree(root, ignore_errors=True)


def text_of(found: list[doctor.Finding]) -> str:
    return "\n".join(f"{'ok' if f.ok else 'PROBLEM'} {f.what} | {f.fix}" for f in found)


@pytest.mark.integration
def test_doctor_runs_the_apps_gunicorn_as_the_app_user_never_as_root(app: SimpleNamespace) -> None:
    for color in ("blue", "green"):
        for program in ("gunicorn", "python"):  # the venv is the app user's: it replaces both
            script = RAN.format(out=app.root / "out", name=f"{color}-{program}")
            write_as(app.name, app.root / color / "venv" / "bin" / program, script, "755")

    found = bounded_checks(app.config, supervisord_conf=str(app.root / "none.conf"))

    ran = {p.name: p.read_text().strip() for p in (app.root / "out").iterdir()}
    assert ran, f"doctor checked no gunicorn:\n{text_of(found)}"
    assert set(ran.values()) == {str(app.uid)}, f"run as uid {ran} (the app user is {app.uid})"
    assert "blue runs gunicorn (version 0.0)" in text_of(found)


@pytest.mark.integration
def test_a_fifo_at_post_receive_does_not_hang_doctor(app: SimpleNamespace) -> None:
    fifo = app.root / "app.git" / "hooks" / "post-receive"
    app.fifos.append(fifo)
    as_user(app.name, "mkfifo", "-m", "644", str(fifo))

    found = bounded_checks(app.config, supervisord_conf=str(app.root / "none.conf"))

    [line] = [f for f in found if "post-receive" in f.what]
    assert not line.ok and "not a regular file" in line.what and line.fix == f"rm {fifo}"


@pytest.mark.integration
def test_a_home_and_a_sqlite_database_every_user_can_read_are_problems(app: SimpleNamespace) -> None:
    db = app.home / "db.sqlite3"
    app.home.chmod(0o755)  # what useradd --create-home makes with Debian's UMASK 022
    write_as(app.name, db, "SQLite format 3, the app's data", "644")
    assert can_read("nobody", db)  # the attack: any local user reads the whole database

    found = text_of(bounded_checks(app.config, supervisord_conf=str(app.root / "none.conf")))
    assert f"home {app.home} is open to every user (mode 0755)" in found and f"chmod 750 {app.home}" in found
    assert f"SQLite database file {db} is open to every user (mode 0644)" in found and f"chmod 600 {db}" in found

    app.home.chmod(0o750)
    db.chmod(0o600)
    assert not can_read("nobody", db)
    found = text_of(bounded_checks(app.config, supervisord_conf=str(app.root / "none.conf")))
    assert "is open to every user" not in found


SUPERVISORD_CONF = """\
[unix_http_server]
file = {root}/supervisor.sock

[supervisord]
logfile = {root}/supervisord.log
pidfile = {root}/supervisord.pid
childlogdir = {root}
umask = 027
; (supervisord -n never applies the line above: doctor reads the umask of the running process)

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[program:bluegreen]
command = /bin/sh -c "echo deploy output; exec sleep 300"
stdout_logfile = {root}/bluegreen.log
"""


@pytest.fixture
def looked_in() -> Iterator[Path]:
    """A folder every user may enter (as /var/log/supervisor is): only the files' own modes keep them out."""
    root = Path(tempfile.mkdtemp(prefix="bgdoc-", dir="/tmp"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.integration
@pytest.mark.parametrize("umask", ["022", "027"])
def test_supervisords_umask_and_the_listeners_log_are_checked_on_the_running_supervisord(
    looked_in: Path, umask: str
) -> None:
    conf = looked_in / "supervisord.conf"
    conf.write_text(SUPERVISORD_CONF.format(root=looked_in))
    proc = subprocess.Popen(  # in the foreground as Debian's unit runs it: the unit's UMask= is its umask
        [sys.executable, "-m", "supervisor.supervisord", "-n", "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        umask=int(umask, 8),
    )
    try:
        log = looked_in / "bluegreen.log"
        deadline = time.monotonic() + 20
        while not (log.exists() and log.read_text()):
            assert time.monotonic() < deadline and proc.poll() is None, "supervisord did not start its program"
            time.sleep(0.05)
        found = text_of(doctor.check_supervisord(str(conf), []))
        if umask == "022":
            assert can_read("nobody", log)  # the attack: every local user reads the deploy output
            assert "supervisord's umask is 0022" in found
            assert "printf '[Service]\\nUMask=0027\\n' > /etc/systemd/system/supervisor.service.d/" in found
            assert f"the listener's log {log} is open to every user (mode 0644)" in found
            assert f"chmod 640 {log}" in found
        else:
            assert not can_read("nobody", log)
            assert "ok supervisord's umask is 0027" in found and "open to every user" not in found
    finally:
        stop_process(proc, timeout=20)


def test_a_supervisord_that_accepts_and_never_answers_does_not_hang_doctor(tmp_path: Path) -> None:
    path = str(tmp_path / "hung.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    conf = tmp_path / "supervisord.conf"
    conf.write_text(f"[unix_http_server]\nfile = {path}\n")
    try:
        proxy, _ = doctor.supervisord_proxy(str(conf), timeout=1.0)
        assert proxy is not None
        started = time.monotonic()
        with pytest.raises(OSError):
            proxy.system.listMethods()
        assert time.monotonic() - started < 5
    finally:
        server.close()

"""Issue 13: ``bluegreen init`` run again by root after the app user planted things in its own tree.

A real system user is made for each test (init's own ``useradd`` action) and removed afterwards; what it
plants it plants as itself (through runner.capture, as that user), then root runs init's ``apply`` or
``discover``. Nothing outside the app's tree may change owner or content, no program from the app's tree
may run as root, and what init leaves is private to the app user. Root only.
"""

from __future__ import annotations

import configparser
import dataclasses
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest

from supervisor_bluegreen.ctl import init
from supervisor_bluegreen.ctl.init import Action, Facts, InitError, Options
from supervisor_bluegreen.host import runner

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="making users and acting as them needs root")
VENV_BIN = Path(sys.executable).parent


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> Iterator[SimpleNamespace]:
    """A fresh app user with its tree ``/var/tmp/bgit-*/app`` (root's, 0755) and ``outside``: root's files."""
    base = Path(tempfile.mkdtemp(prefix="bgit-", dir="/var/tmp"))
    name = f"bgit{uuid.uuid4().hex[:8]}"
    try:
        base.chmod(0o755)
        state_dir = base / "state"  # init's STATE_DIR for this test: root's, 0750
        state_dir.mkdir(mode=0o750)
        monkeypatch.setattr(init, "STATE_DIR", str(state_dir))
        outside = base / "outside"
        for folder in ("conf.d", "dist-packages", "etc"):
            (outside / folder).mkdir(parents=True)
        (outside / "etc" / "secret").write_text("root's\n")
        o = Options(app=name, repo="unused", root=str(base / "app"), nginx_dir=str(base / "nginx"))
        facts = dataclasses.replace(FACTS, include_dir=str(base / "conf.d"))
        acts = init.plan(o, facts)
        for a in acts[:2]:  # the app's folder (root's), then its user
            init.apply(a, o)
        assert acts[1].kind == "user"
        for a in acts:  # root's folders for what init notes (stamps)
            if a.kind == "dir" and a.path.startswith(f"{state_dir}/"):
                init.apply(a, o)
        pw = pwd.getpwnam(name)
        yield SimpleNamespace(o=o, facts=facts, acts=acts, base=base, outside=outside, uid=pw.pw_uid, gid=pw.pw_gid)
    finally:
        shutil.rmtree(base, ignore_errors=True)
        removed = subprocess.run(["/usr/sbin/userdel", name], capture_output=True, check=False)
        subprocess.run(["/usr/sbin/groupdel", name], capture_output=True, check=False)  # when userdel kept it
        assert removed.returncode in (0, 6), removed.stderr  # 6: no such user (useradd failed)


FACTS = Facts(
    user_exists=False,
    bluegreen="/opt/supervisor-bluegreen/bin/bluegreen",
    package_dir="/opt/supervisor-bluegreen/lib/python3.11/site-packages/supervisor_bluegreen",
    wsgi="mysite.wsgi:application",
    built=True,
)


def as_user(app: SimpleNamespace, script: str, *args: str) -> None:
    """``sh -c script`` as the app user (its own rights: it can only touch its own tree)."""
    done = runner.capture(["/bin/sh", "-ec", script, "plant", *args], user=app.o.user_name, cwd="/", timeout=20)
    assert done.returncode == 0, done.stderr


def snapshot(folder: Path) -> dict[str, tuple[int, int, int, bytes | None]]:
    """Owner, group, mode and content of everything in ``folder`` (links not followed)."""
    out = {}
    for p in [folder, *folder.rglob("*")]:
        st = p.lstat()
        data = p.read_bytes() if stat.S_ISREG(st.st_mode) else None
        out[str(p)] = (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode), data)
    return out


def action(acts: list[Action], path: str, kind: str = "") -> Action:
    found = [a for a in acts if a.path == path and (not kind or a.kind == kind)]
    assert found, f"no action for {path}"
    return found[-1]


def apply_all(app: SimpleNamespace, acts: list[Action], *paths: str) -> None:
    for path in paths:
        init.apply(action(acts, path), app.o)


def probe_info(**changes: object) -> dict:
    """What DJANGO_PROBE prints for a startproject app, changed by ``changes``."""
    info = {"static_root": "", "static_url": "/static/", "media_root": "", "media_url": "/media/",
            "wsgi": "mysite.wsgi.application", "answers": {"/": 200, "/admin/login/": 200},
            "db_engine": "django.db.backends.mysql", "db_name": "mysite"}  # fmt: skip
    return {**info, **changes}


# the bare repository: root clones it once, into nothing --------------------------------------------


@pytest.mark.integration
def test_a_repository_the_app_user_emptied_is_never_cloned_into_by_root(app: SimpleNamespace) -> None:
    """After the first init, app.git is the app user's: an emptied one (with links to root's folders planted
    where git writes) made init's second run clone into it as root, writing through the links."""
    repo = Path(app.o.app_root) / "app.git"
    repo.mkdir()
    os.chown(repo, app.uid, app.gid)  # as the first init left it
    as_user(app, 'for d in hooks info objects refs; do ln -s "$2/$d" "$1/$d"; done', str(repo), str(app.outside))
    before = snapshot(app.outside)
    clone = [a for a in app.acts if a.kind == "run" and a.argv[:2] == ("git", "clone") and "--bare" in a.argv]
    assert len(clone) == 1 and clone[0].run_as == ""  # root's: the app user has no folder to clone into yet
    assert init.apply(clone[0], app.o) == "done before"
    assert snapshot(app.outside) == before and sorted(p.name for p in repo.iterdir()) == sorted(
        ["hooks", "info", "objects", "refs"]
    )


# (a) MEDIA_ROOT from the app's settings ------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("setting", ["MEDIA_ROOT", "STATIC_ROOT"])
def test_a_media_or_static_root_outside_the_app_tree_is_refused_with_what_to_do(app: SimpleNamespace,
                                                                                setting: str) -> None:  # fmt: skip
    """A settings line ``MEDIA_ROOT = "/etc/supervisor/conf.d"``: init must not make that folder the app's."""
    before = snapshot(app.outside)
    target = str(app.outside / "conf.d")
    info = probe_info(**{setting.lower(): target})
    root = app.o.app_root
    src = f"{root}/blue/src"
    with pytest.raises(InitError) as refused:
        facts = Facts(**{**dataclasses.asdict(app.facts), **init.facts_from_probe(app.o, src, info)})
        for a in init.plan(app.o, facts):
            if a.path == target:
                init.apply(a, app.o)
    message = str(refused.value)
    assert f"set {setting} under {root}/, e.g. {root}/" in message.replace("Set", "set")
    assert init.env_file_path(app.o) in message
    assert snapshot(app.outside) == before


@pytest.mark.integration
def test_a_media_root_reached_through_a_link_the_app_user_planted_is_refused(app: SimpleNamespace) -> None:
    """``MEDIA_ROOT = /srv/APP/blue/media`` with ``blue/media`` a link to /etc/supervisor/conf.d."""
    root = app.o.app_root
    apply_all(app, app.acts, f"{root}/blue")
    as_user(app, 'ln -s "$1" "$2"', str(app.outside / "conf.d"), f"{root}/blue/media")
    before = snapshot(app.outside)
    facts = init.facts_from_probe(app.o, f"{root}/blue/src", probe_info(media_root=f"{root}/blue/media"))
    acts = init.plan(app.o, dataclasses.replace(app.facts, **facts))
    with pytest.raises(InitError, match="it is a symbolic link, not a folder"):
        init.apply(action(acts, f"{root}/blue/media", "dir"), app.o)
    assert snapshot(app.outside) == before
    # a real folder there is fine, and made the app user's
    as_user(app, 'rm "$1"', f"{root}/blue/media")
    assert init.apply(action(acts, f"{root}/blue/media", "dir"), app.o) == "created"
    st = os.lstat(f"{root}/blue/media")
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (app.uid, 0o755)


# (b) stamps, markers and files root writes ----------------------------------------------------------


@pytest.mark.integration
def test_b_a_link_planted_during_collectstatic_does_not_make_root_write_outside(app: SimpleNamespace) -> None:
    """The build step plants ``venv/.bluegreen-init-static -> .../dist-packages/x.pth``; root's stamp must not
    follow it (a .pth the app user owns in root's site-packages would run in every root python)."""
    root = app.o.app_root
    apply_all(app, app.acts, f"{root}/blue")
    as_user(app, 'mkdir -p "$1/src" "$1/venv"', f"{root}/blue")
    pth = app.outside / "dist-packages" / "bluegreen-x.pth"
    collectstatic = next(a for a in app.acts if a.kind == "run" and "collectstatic" in a.argv and "/blue/" in a.cwd)
    assert collectstatic.run_as == app.o.user_name
    plant = ("/bin/sh", "-c", f'ln -s "{pth}" "{root}/blue/venv/.bluegreen-init-static"; ln -s "{pth}" stamp')
    before = snapshot(app.outside)
    assert init.apply(dataclasses.replace(collectstatic, argv=plant), app.o) == "ran"
    assert not os.path.lexists(pth)
    assert snapshot(app.outside) == before
    # the stamp is root's, in root's state folder, outside the app's tree
    st = os.lstat(collectstatic.creates)
    assert collectstatic.creates.startswith(init.STATE_DIR + "/")
    assert stat.S_ISREG(st.st_mode) and st.st_uid == 0
    assert init.apply(collectstatic, app.o) == "done before"


@pytest.mark.integration
def test_b_root_files_and_ownership_in_the_app_tree_follow_no_link(app: SimpleNamespace) -> None:
    """The hook (root's file in app.git/hooks, a folder the app user owns) and ``chown -R`` of app.git."""
    root = app.o.app_root
    git_dir = Path(root) / "app.git"
    (git_dir / "objects").mkdir(parents=True)  # as root's clone left it: root's until the `own` action
    os.symlink(app.outside / "etc" / "secret", git_dir / "objects" / "planted")
    before = snapshot(app.outside)
    assert init.apply(action(app.acts, str(git_dir), "own"), app.o) == "fixed"
    assert os.lstat(git_dir / "objects" / "planted").st_uid == app.uid  # the link itself, not its target
    assert snapshot(app.outside) == before
    # the app user (owner of app.git now) swaps hooks/ for a link to a folder of root's
    as_user(app, 'rm -rf "$1/hooks"; ln -s "$2" "$1/hooks"', str(git_dir), str(app.outside / "etc"))
    with pytest.raises(InitError, match="hooks: it is a symbolic link"):
        init.apply(action(app.acts, f"{git_dir}/hooks/pre-receive"), app.o)
    assert snapshot(app.outside) == before
    # ... or plants a link at the hook itself
    as_user(app, 'rm "$1/hooks"; mkdir "$1/hooks"; ln -s "$2" "$1/hooks/pre-receive"', str(git_dir),
            str(app.outside / "etc" / "secret"))  # fmt: skip
    with pytest.raises(InitError, match="pre-receive: it is a symbolic link"):
        init.apply(action(app.acts, f"{git_dir}/hooks/pre-receive"), app.o)
    assert snapshot(app.outside) == before
    # ... or a FIFO there: refused at once, not waited on (a thread, so a hang fails the test instead of hanging it)
    as_user(app, 'rm "$1/hooks/pre-receive"; mkfifo "$1/hooks/pre-receive"', str(git_dir))
    with ThreadPoolExecutor(1) as pool:
        refused = pool.submit(init.apply, action(app.acts, f"{git_dir}/hooks/pre-receive"), app.o)
        try:
            with pytest.raises(InitError, match="pre-receive: it is a FIFO"):
                refused.result(timeout=10)
        finally:
            if not refused.done():  # unblock the hung open so the pool can end
                os.close(os.open(f"{git_dir}/hooks/pre-receive", os.O_WRONLY | os.O_NONBLOCK))


# (c) no program from the app's tree runs as root -------------------------------------------------------


@pytest.mark.integration
def test_c_discover_imports_nothing_from_roots_current_folder(app: SimpleNamespace, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """A ``supervisor_bluegreen/__init__.py`` planted in the folder root runs init from (/tmp, the app's
    source folder) must not run as root when init asks supervisord's python whether it imports the plugin."""
    planted = Path(app.o.app_root) / "blue"
    apply_all(app, app.acts, str(planted))
    witness = planted / "ran-as"
    code = f"import os\nopen({str(witness)!r}, 'w').write(str(os.getuid()))\n"
    as_user(app, 'mkdir "$1/supervisor_bluegreen"; printf "%s" "$2" > "$1/supervisor_bluegreen/__init__.py"; '
            'cp "$1/supervisor_bluegreen/__init__.py" "$1/supervisor_bluegreen/rpcinterface.py"; '
            'cp "$1/supervisor_bluegreen/__init__.py" "$1/sitecustomize.py"', str(planted), code)  # fmt: skip
    # a supervisord run by the system's python3, which does not import the plugin by itself
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "supervisord").write_text("#!/usr/bin/python3\n")
    (bin_dir / "supervisord").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/local/bin:/usr/bin:/bin")
    monkeypatch.setenv("PYTHONPATH", str(planted))  # root's environment reaches no python it starts either
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    (repo / "requirements.txt").write_text("Django\n")
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "start"], check=True)
    monkeypatch.chdir(planted)
    facts = init.discover(dataclasses.replace(app.o, repo=str(repo)))
    assert not witness.exists(), f"the app user's module ran as uid {witness.read_text()}"
    assert facts.plugin_site_dir  # it asked, and the answer was no


# (d) what init leaves is private ---------------------------------------------------------------------------


@pytest.mark.integration
def test_d_home_and_the_suggested_sqlite_file_are_the_app_users_alone(app: SimpleNamespace) -> None:
    root = app.o.app_root
    db = f"{root}/home/db.sqlite3"
    assert stat.S_IMODE(os.stat(f"{root}/home").st_mode) == 0o755  # useradd --create-home, umask 022
    assert init.apply(action(app.acts, f"{root}/home"), app.o) == "fixed"
    st = os.stat(f"{root}/home")
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (app.uid, 0o750)
    as_user(app, 'umask 022; : > "$1"', db)  # the first migrate made it 0644
    note = init.facts_from_probe(app.o, f"{root}/blue/src", probe_info(db_engine="django.db.backends.sqlite3",
                                                                       db_name=db))  # fmt: skip
    acts = init.plan(app.o, dataclasses.replace(app.facts, **note))
    private = action(acts, db, "private")
    assert init.apply(private, app.o) == "fixed"
    st = os.stat(db)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (app.uid, app.gid, 0o600)
    assert init.apply(private, app.o) == "exists"
    # swapped for a link to a file of root's: refused, that file unchanged
    before = snapshot(app.outside)
    as_user(app, 'rm "$1"; ln -s "$2" "$1"', db, str(app.outside / "etc" / "secret"))
    with pytest.raises(InitError, match="symbolic link"):
        init.apply(private, app.o)
    assert snapshot(app.outside) == before


def test_d_init_sets_supervisords_umask_for_systemd() -> None:
    facts = dataclasses.replace(FACTS, supervisor_unit="/lib/systemd/system/supervisor.service")
    o = Options(app="mysite", repo="x")
    dropin = action(init.plan(o, facts), "/etc/systemd/system/supervisor.service.d/bluegreen-umask.conf")
    parser = configparser.RawConfigParser()
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(dropin.content)
    assert parser["Service"]["UMask"] == "0027"
    assert any("systemctl restart supervisor.service" in line for line in init.go_live(o, facts))
    assert not [a for a in init.plan(o, FACTS) if "systemd" in a.path]


def proc_umask(pid: int) -> str:
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        return next(line.split()[1] for line in fh if line.startswith("Umask:"))


@pytest.mark.integration
def test_d_a_real_supervisord_with_inits_include_makes_private_logs(tmp_path: Path) -> None:
    """supervisord merges the include's [supervisord] umask; its logs (the listener's too) are 0640, while
    the listener's children keep 022 (collectstatic makes folders nginx reads)."""
    tmp_path.chmod(0o755)
    include = configparser.RawConfigParser()
    include.read_string(init.include_conf(Options(app="mysite", repo="x"), FACTS))
    for section in ("rpcinterface:bluegreen", "ctlplugin:bluegreen"):
        include.remove_section(section)
    listener = include["eventlistener:bluegreen"]
    listener["command"] = "/bin/sleep 60"  # any process: what matters is who makes its log, and its umask
    listener["stderr_logfile"] = f"{tmp_path}/bluegreen.log"
    (tmp_path / "conf.d").mkdir()
    with open(tmp_path / "conf.d" / "bluegreen.conf", "w", encoding="utf-8") as fh:
        include.write(fh)
    (tmp_path / "supervisord.conf").write_text(
        f"[supervisord]\nlogfile = {tmp_path}/supervisord.log\npidfile = {tmp_path}/supervisord.pid\n"
        f"childlogdir = {tmp_path}\n\n[unix_http_server]\nfile = {tmp_path}/s.sock\n\n"
        f"[include]\nfiles = {tmp_path}/conf.d/*.conf\n"
    )
    started = subprocess.run([str(VENV_BIN / "supervisord"), "-c", str(tmp_path / "supervisord.conf")],
                             capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
    assert started.returncode == 0, started.stderr
    pid = 0
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not pid:
            try:
                pid = int((tmp_path / "supervisord.pid").read_text())
            except (OSError, ValueError):
                time.sleep(0.1)
        child = ""
        while time.monotonic() < deadline and not child:
            kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            child = kids[0] if kids else ""
            time.sleep(0.1)
        assert proc_umask(pid) == "0027"
        assert child and proc_umask(int(child)) == "0022"
        # (supervisord.log itself is opened before supervisord daemonizes and sets its umask: 0644 at first)
        assert stat.S_IMODE(os.stat(tmp_path / "bluegreen.log").st_mode) == 0o640
    finally:
        if pid:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 20
            while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
                time.sleep(0.1)

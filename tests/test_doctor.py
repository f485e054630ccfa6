"""Tests for ``bluegreen doctor``: each problem found comes with the command that fixes it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from supervisor_bluegreen.ctl import doctor
from supervisor_bluegreen.host import links, nginx
from supervisor_bluegreen.shared import config


def make_app(tmp_path: Path, **extra: str) -> config.App:
    options = {
        "program": "shop_%(color)s",
        "socket": f"{tmp_path}/run/shop.%(color)s.sock",
        "live_socket": f"{tmp_path}/run/shop.live.sock",
        "checkout": f"{tmp_path}/%(color)s/src",
        "public_url": "http://127.0.0.1:9/",
        "repo": f"{tmp_path}/app.git",
        "user": "root",
        "state_dir": f"{tmp_path}/state",
        "backup_dir": f"{tmp_path}/backups",
        "server_name": "shop.example.org",
    }
    options.update(extra)
    text = "[app:shop]\n" + "".join(f"{k} = {v}\n" for k, v in options.items() if v)
    return config.parse(text).app()


@pytest.mark.integration
def test_repository_without_hook_and_with_an_old_post_receive(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    [missing] = doctor.check_repo(app)
    assert not missing.ok and "git clone --bare" in missing.fix
    subprocess.run(["git", "init", "-q", "--bare", str(tmp_path / "app.git")], check=True)
    (tmp_path / "app.git" / "hooks" / "post-receive").write_text("#!/bin/sh\nsupervisorctl bluegreen deploy\n")
    problems = {f.what.split(": ", 1)[1]: f.fix for f in doctor.check_repo(app) if not f.ok}
    assert any("no executable" in what and "bluegreen example hook >" in fix for what, fix in problems.items())
    assert any("post-receive" in what and fix.startswith("rm ") for what, fix in problems.items())
    assert any("bluegreen.app" in what and "config bluegreen.app shop" in fix for what, fix in problems.items())
    hook = tmp_path / "app.git" / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\n")
    hook.chmod(0o755)
    (tmp_path / "app.git" / "hooks" / "post-receive").unlink()
    subprocess.run(["git", f"--git-dir={tmp_path}/app.git", "config", "bluegreen.app", "shop"], check=True)
    assert all(f.ok for f in doctor.check_repo(app))


def test_world_readable_environment_file_and_missing_folders(tmp_path: Path) -> None:
    env = tmp_path / "shop.env"
    env.write_text("SECRET_KEY=x\n")
    env.chmod(0o644)
    app = make_app(tmp_path, environment_file=str(env))
    found = [f for f in doctor.check_app(app) if not f.ok]
    text = "\n".join(f"{f.what} | {f.fix}" for f in found)
    assert "no color is live yet" in text and "supervisorctl bluegreen deploy shop" in text
    assert f"backup_dir {tmp_path}/backups is missing | install -d -m 750" in text
    assert f"chmod 640 {env}" in text
    assert f"checkout {tmp_path}/blue/src is missing" in text


def test_an_environment_file_sh_would_read_otherwise_is_a_problem_with_the_fix(tmp_path: Path) -> None:
    env = tmp_path / "shop.env"
    env.write_text("SECRET_KEY='fine'\nDB_PASSWORD=abc#def\n")
    env.chmod(0o640)
    app = make_app(tmp_path, environment_file=str(env))
    [found] = [f for f in doctor.check_app(app) if "environment file:" in f.what]
    assert not found.ok
    assert found.what.startswith(f"shop: environment file: {env} line 2: DB_PASSWORD: a #")
    assert "abc" not in found.what
    assert found.fix == f"{env} line 2: write it as DB_PASSWORD='value' (single quotes; a ' inside as '\\'')"
    env.write_text("SECRET_KEY='fine'\nDB_PASSWORD='abc#def'\n")
    assert not [f for f in doctor.check_app(app) if "environment file:" in f.what]


def test_unreachable_supervisord_is_one_problem_with_a_fix(tmp_path: Path) -> None:
    conf = tmp_path / "supervisord.conf"
    [f] = doctor.check_supervisord(str(tmp_path / "nope.conf"), [])
    assert not f.ok and "no supervisord config" in f.what
    conf.write_text(f"[unix_http_server]\nfile = {tmp_path}/gone.sock\n")
    [f] = doctor.check_supervisord(str(conf), [])
    assert not f.ok and "does not answer" in f.what and f.fix == "systemctl start supervisor"
    assert "<class" not in f.what


def test_main_exits_non_zero_on_problems(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    ini = tmp_path / "bg.ini"
    ini.write_text("[app:shop]\nprogram = shop_%(color)s\n")
    assert doctor.main(str(ini)) == 1
    out = capsys.readouterr().out
    assert "PROBLEM" in out and f"fix: bluegreen check {ini}" in out
    assert os.path.basename(str(ini)) in out


def test_an_enabled_site_from_before_disable_symlinks_is_a_problem_with_its_fix(tmp_path: Path) -> None:
    app = make_app(tmp_path, static_root=f"{tmp_path}/%(color)s/static", live_static=f"{tmp_path}/run/shop.live-static")
    old = (  # what the site looked like before issue 13
        "upstream bluegreen_shop {\n    server unix:/x.sock;\n}\nserver {\n"
        "    location ~ ^/static/(?<bluegreen_path>.*)$ {\n        root /;\n"
        "        try_files /srv/blue/static/$bluegreen_path =404;\n    }\n}\n"
    )
    [f] = doctor.check_site_links(app, {"/etc/nginx/sites-enabled/shop.conf": old}, "/etc/bg.ini")
    assert not f.ok and "follows symlinks the app user makes" in f.what
    assert f.fix.startswith("bluegreen nginx-site /etc/bg.ini shop > ") and f.fix.endswith("nginx -s reload")
    assert doctor.check_site_links(app, {"/etc/nginx/sites-enabled/shop.conf": nginx.render_site(app)}, "x") == []
    other = old.replace("bluegreen_shop", "bluegreen_blog")  # another app's site is that app's business
    assert doctor.check_site_links(app, {"/etc/nginx/sites-enabled/blog.conf": other}, "x") == []


def test_a_site_that_predates_the_maintenance_page_is_a_problem_with_its_fix(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    current = nginx.render_site(app)
    old = current.replace(f"if (-f {app.maintenance_page})", "if (-f /nowhere)")
    [f] = doctor.check_site_maintenance(app, {"/etc/nginx/sites-enabled/shop.conf": old}, "/etc/bg.ini")
    assert not f.ok and f"does not look for {app.maintenance_page}" in f.what
    assert f.fix.startswith("bluegreen nginx-site /etc/bg.ini shop > ") and f.fix.endswith("nginx -s reload")
    assert doctor.check_site_maintenance(app, {"/etc/nginx/sites-enabled/shop.conf": current}, "x") == []
    other = old.replace("bluegreen_shop", "bluegreen_blog")  # another app's site is that app's business
    assert doctor.check_site_maintenance(app, {"/etc/nginx/sites-enabled/blog.conf": other}, "x") == []


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a folder to another user needs root")
def test_a_live_static_link_nginx_will_not_follow_is_a_problem(tmp_path: Path) -> None:
    app = make_app(tmp_path, static_root=f"{tmp_path}/%(color)s/static", live_static=f"{tmp_path}/run/shop.live-static")
    for color in app.colors:
        Path(color.static_root).mkdir(parents=True)
        os.chown(color.static_root, 65534, 65534)
    (tmp_path / "run").mkdir()
    os.symlink(app.color("blue").static_root, app.live_static)  # made by root, as before issue 13
    [f] = doctor.check_live_static(app)
    assert not f.ok and f.fix == f"chown -h 65534:65534 {app.live_static}"
    links.point(app, app.color("blue"))
    assert doctor.check_live_static(app) == []
    blue = app.color("blue").static_root
    os.rename(blue, blue + ".old")  # the app user's attack: its static root made a link to /
    os.symlink("/", blue)
    os.lchown(blue, 65534, 65534)
    assert doctor.check_live_static(app) == []  # never the advice to give the link to root (nginx would follow it)


class Programs:
    """supervisord's ``supervisor`` namespace answering getAllProcessInfo with each of ``answers`` in turn."""

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.calls = 0

    def getAllProcessInfo(self) -> list[dict[str, str]]:
        state = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        return [{"group": "shop_blue", "name": "shop_blue", "statename": state}]


def test_a_color_supervisord_is_still_starting_is_waited_for_before_it_is_judged() -> None:
    """Right after the first deploy the live color answers its gate while supervisord still says STARTING
    (its startsecs): doctor waits for that to settle instead of calling the live color down."""
    proxy = type("Proxy", (), {"supervisor": Programs("STARTING", "STARTING", "RUNNING")})()
    infos = doctor.settled_programs(proxy, patience=5, pause=0)
    assert infos["shop_blue"]["statename"] == "RUNNING" and proxy.supervisor.calls == 3
    stuck = type("Proxy", (), {"supervisor": Programs("STARTING")})()
    assert doctor.settled_programs(stuck, patience=0.05, pause=0.01)["shop_blue"]["statename"] == "STARTING"


def worker_app(tmp_path: Path, settle: str = "0.2") -> config.App:
    """green's root a link to a release, as deploys leave it, and a worker program."""
    release = tmp_path / "releases" / "20261207T101500-3f2c1a9e0d11"
    (release / "src").mkdir(parents=True)
    (tmp_path / "green").symlink_to(release)
    (tmp_path / "blue" / "src").mkdir(parents=True)
    return make_app(
        tmp_path, root=f"{tmp_path}/%(color)s", workers="shop_celery shop_mail shop_beat", worker_settle=settle
    )


def info(state: str, pid: int, up: float) -> dict:
    return {"statename": state, "pid": pid, "start": 1000.0, "now": 1000.0 + up, "stderr_logfile": "/l/w.err"}


def test_doctor_lists_every_worker_and_calls_out_one_supervisor_keeps_restarting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = worker_app(tmp_path)
    monkeypatch.chdir(tmp_path / "releases" / "20261207T101500-3f2c1a9e0d11" / "src")  # this process: the worker
    me = os.getpid()
    infos = {"shop_celery": info("RUNNING", me, 600), "shop_mail": info("RUNNING", me, 0.05)}
    found = doctor.check_workers(app, "green", infos, lambda name: info("RUNNING", me + 1, 0.1))
    said = {name: f for f in found for name in app.deploy.workers if f" {name} " in f.what}  # type: ignore[union-attr]
    assert said["shop_celery"].ok and said["shop_celery"].what.endswith("(the live color green's release)")
    assert f"RUNNING pid {me} for 600 s in " in said["shop_celery"].what
    assert not said["shop_mail"].ok and "exits after it starts" in said["shop_mail"].what
    assert said["shop_mail"].fix == "tail /l/w.err"
    assert not said["shop_beat"].ok and "not in supervisord" in said["shop_beat"].what


def test_a_worker_in_another_release_or_down_is_a_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = worker_app(tmp_path)
    monkeypatch.chdir(tmp_path / "blue" / "src")  # the worker was never restarted onto green's release
    me = os.getpid()
    infos = {
        "shop_celery": info("RUNNING", me, 600),
        "shop_mail": info("FATAL", 0, 0),
        "shop_beat": info("RUNNING", me, 9),
    }
    found = doctor.check_workers(app, "green", infos, lambda name: infos[name])
    assert [f.ok for f in found] == [False, False, False]
    assert "not in the live color green's" in found[0].what and found[0].fix == "supervisorctl restart shop_celery"
    assert found[1].what == "shop: worker shop_mail is FATAL" and found[1].fix.startswith(
        "supervisorctl start shop_mail"
    )


def test_backups_that_are_not_verified_are_a_note(tmp_path: Path) -> None:
    [note] = doctor.backups_unproven(make_app(tmp_path, build="backup"))
    assert note.ok and "its backups are not verified" in note.what
    assert doctor.backups_unproven(make_app(tmp_path, build="backup", verify_backup="true")) == []
    assert doctor.backups_unproven(make_app(tmp_path, build="test", step_test="true")) == []

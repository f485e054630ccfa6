"""supervisord.conf is read the way supervisord reads it, by one helper (ctl/supervisordconf.py): pure file reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisor_bluegreen.ctl import cli, doctor, init, supervisordconf


def test_read_as_supervisord_does_here_env_comments_includes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BG_RUN", "/run/bg")
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "web.conf").write_text("[inet_http_server]\nport = *:9001\nlog = %(here)s/web.log\n")
    main = tmp_path / "supervisord.conf"
    main.write_text(
        "[unix_http_server]\nfile = %(ENV_BG_RUN)s/supervisor.sock   # supervisord's own comment\n"
        "chmod = 0700 ; and this one\n[supervisord]\nnodaemon = true\nlogfile = %(here)s/s.log\n"
        "[include]\nfiles = conf.d/*.conf\n"
    )
    conf = supervisordconf.read(str(main))
    assert conf.get("unix_http_server", "file") == "/run/bg/supervisor.sock"
    assert conf.get("unix_http_server", "chmod") == "0700"
    assert conf.get("supervisord", "logfile") == f"{tmp_path}/s.log"
    assert conf.get("inet_http_server", "log") == f"{tmp_path}/conf.d/web.log"  # the include's own folder
    assert conf.file_of("inet_http_server") == str(tmp_path / "conf.d" / "web.conf")
    assert conf.get("supervisord", "absent", "x") == "x"
    assert not supervisordconf.read(str(main), includes=False).has("inet_http_server")  # supervisorctl's view
    # the users of the helper: an open server in an include is warned about, naming that file
    [warning] = cli.supervisord_warnings(str(main))
    assert warning.startswith(f"{tmp_path}/conf.d/web.conf: [inet_http_server] port = *:9001 has no username")
    assert doctor.foreground(0, str(main))  # nodaemon = true (no process 0: no -n to read from /proc)
    assert init._include_dir(str(main)) == str(tmp_path / "conf.d")


def test_a_broken_or_unreadable_file_is_one_clear_line_that_shows_no_value(tmp_path: Path) -> None:
    missing = tmp_path / "nope.conf"
    with pytest.raises(supervisordconf.SupervisordConfError) as err:
        supervisordconf.read(str(missing))
    assert str(err.value) == f"{missing}: cannot read: No such file or directory"
    assert cli.supervisord_warnings(str(missing)) == [
        f"{missing}: cannot read supervisord's config: cannot read: No such file or directory"
    ]
    broken = tmp_path / "broken.conf"
    broken.write_text("no section header\n")
    [warning] = cli.supervisord_warnings(str(broken))
    assert warning.startswith(f"{broken}: cannot read supervisord's config: File contains no section headers.")
    assert "\n" not in warning
    secret = tmp_path / "secret.conf"
    secret.write_text("[unix_http_server]\nfile = /run/s.sock\nusername = u\npassword = 50%off\n")
    proxy, why = doctor.supervisord_proxy(str(secret))
    assert proxy is None
    assert why.startswith(f"{secret}: [unix_http_server] password: supervisord cannot expand its value")
    assert "50%off" not in why
    assert not doctor.foreground(0, str(secret))  # no nodaemon

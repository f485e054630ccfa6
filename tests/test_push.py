"""`bluegreen push`: the pusher's narrow path takes exactly `[-c CONF] APP COMMIT [--wait]` (pure checks)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from supervisor_bluegreen.push import Refused, conf_problem, parse

SHA = "0123456789abcdef0123456789abcdef01234567"


def test_parse_takes_exactly_app_and_a_full_commit_id() -> None:
    assert parse(["abiapp", SHA]) == ("", "abiapp", SHA, False)
    assert parse(["-c", "/etc/supervisor/supervisord.conf", "abiapp", SHA, "--wait"]) == (
        "/etc/supervisor/supervisord.conf", "abiapp", SHA, True,
    )  # fmt: skip
    assert parse(["abiapp", "a" * 64])[2] == "a" * 64  # sha256 repositories


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

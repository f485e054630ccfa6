"""Tests for supervisor_bluegreen.host.envfile: the build reads the environment file as /bin/sh does, or refuses."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest

from supervisor_bluegreen.host import envfile

SPECIAL = 'a #b $HOME `x` $(y) \\n \\\\ "q" ! * ~ ; & | < > { } [ ] ( )'

# lines the reader accepts, with what both it and `/bin/sh -c 'set -a; . FILE'` make of them
ACCEPTED = [
    ("", {}),
    ("   \t", {}),
    ("# a comment, with $HOME `x` 'unclosed \\", {}),
    ("  # an indented comment", {}),
    ("PLAIN=abc", {"PLAIN": "abc"}),
    ("EMPTY=", {"EMPTY": ""}),
    ("EMPTY_QUOTED=''", {"EMPTY_QUOTED": ""}),
    ('EMPTY_DOUBLE=""', {"EMPTY_DOUBLE": ""}),
    ("SAFE=a=b:c,d@e%f+g/h.i-j_K9", {"SAFE": "a=b:c,d@e%f+g/h.i-j_K9"}),
    ("URL=postgres://u:p@db:5432/x", {"URL": "postgres://u:p@db:5432/x"}),
    ("export EXPORTED=yes", {"EXPORTED": "yes"}),
    ("export\tTABBED='t'", {"TABBED": "t"}),
    ("  INDENTED='i'  \t", {"INDENTED": "i"}),
    ("_UNDER=1", {"_UNDER": "1"}),
    (f"SINGLE='{SPECIAL}'", {"SINGLE": SPECIAL}),
    ("QUOTE_SH='it'\\''s'", {"QUOTE_SH": "it's"}),
    ("QUOTE_PY='it'\"'\"'s'", {"QUOTE_PY": "it's"}),
    ("ONLY_QUOTE=''\"'\"''", {"ONLY_QUOTE": "'"}),
    ("HASH='pa#ss'", {"HASH": "pa#ss"}),
    ("MULTI='line one\nline two\n'", {"MULTI": "line one\nline two\n"}),
    ("CR='a\rb'", {"CR": "a\rb"}),
    ("UNICODE='grüße ✓'", {"UNICODE": "grüße ✓"}),
    ("DOUBLE=\"with space 'single' # ! * ~ ;\"", {"DOUBLE": "with space 'single' # ! * ~ ;"}),
    ("REPEATED=first", {"REPEATED": "first"}),
    ("REPEATED=second", {"REPEATED": "second"}),
]

# values the reader must refuse: /bin/sh would read something else than a plain reading (or fail)
REFUSED = [
    ("A=$HOME/x", "A", "a \\$"),
    ("A=${HOME}", "A", "a \\$"),
    ("A=$(id -u)", "A", "a \\$"),
    ("A=`id -u`", "A", "a backtick"),
    ('A="$HOME"', "A", "a \\$"),
    ('A="a`b`"', "A", "a backtick"),
    ('A="a\\"b"', "A", "a backslash"),
    ("A=a\\ b", "A", "a backslash"),
    ("C=a#b", "C", "a #"),
    ("C=a #b", "C", "a #"),
    ("C='a' # a comment after the value", "C", "a #"),
    ("A=a b", "A", "a space"),
    ("A= b", "A", "a space"),
    ("A='x' B='y'", "A", "a space"),
    ("A='unclosed", "A", "a quote that is not closed"),
    ('A="unclosed', "A", "a quote that is not closed"),
    ("A=it's", "A", "a quote that is not closed"),
    ("A='x'y", "A", "characters sh treats specially"),
    ("A=~/x", "A", "characters sh treats specially"),
    ("A=x;y", "A", "characters sh treats specially"),
    ("A=*", "A", "characters sh treats specially"),
    ("A=$'x'", "A", "a \\$"),
    ("A=x\r", "A", "a carriage return"),
    ("A='x'\r", "A", "a carriage return"),
    ("A='\x00'", "A", "a NUL byte"),
    ('A="two\nlines"', "A", "a quote that is not closed"),
]


def test_accepted_lines_read_as_listed() -> None:
    text = "\n".join(line for line, _ in ACCEPTED) + "\n"
    expected: dict[str, str] = {}
    for _, env in ACCEPTED:
        expected.update(env)
    assert envfile.parse(text) == expected
    assert envfile.parse(text.rstrip("\n")) == expected  # no newline at the end


@pytest.mark.parametrize(("line", "key", "reason"), REFUSED)
def test_refused_forms_name_the_file_line_and_key_and_say_how(line: str, key: str, reason: str) -> None:
    text = "# settings\nGOOD='ok'\n" + line + "\nAFTER=1\n"
    with pytest.raises(envfile.EnvFileError, match=f"^/etc/x.env line 3: {key}: {reason}") as err:
        envfile.parse(text, "/etc/x.env")
    assert f"write it as {key}='value' (single quotes; a ' inside as '\\'')" in str(err.value)
    assert err.value.fix == f"/etc/x.env line 3: write it as {key}='value' (single quotes; a ' inside as '\\'')"


@pytest.mark.parametrize("line", ["not a pair", "export A", "A", "1A=x", "A-B=x", "readonly A=x", "\ufeffA=x"])
def test_lines_that_are_no_assignment(line: str) -> None:
    with pytest.raises(envfile.EnvFileError, match=r"^<env> line 2: not KEY=value, a # comment or a blank line$"):
        envfile.parse("A=1\n" + line + "\n")


def test_the_line_number_counts_the_lines_of_a_multi_line_value() -> None:
    with pytest.raises(envfile.EnvFileError, match="line 4: B: a \\$"):
        envfile.parse("A='one\ntwo\nthree'\nB=$x\n")


def test_a_refused_value_is_never_shown() -> None:
    with pytest.raises(envfile.EnvFileError) as err:
        envfile.parse("PASSWORD=s3cr3t#tail\n")
    assert "s3cr3t" not in str(err.value) and "tail" not in str(err.value) and "s3cr3t" not in err.value.fix


VALUES = ["", "plain", "with space", "it's", "''", "'\"'\"'", 'a"b', "$HOME", "`id`", "$(id)", "a\\b", "a#b", "a #b",
          "line\nbreak\n", "tab\there", "~/x", "grüße", "x\r", "!", "*", "-", "=", "%s", "a'\\''b"]  # fmt: skip


def test_what_render_writes_parse_reads_back() -> None:
    env = {f"V{i}": value for i, value in enumerate([*VALUES, "".join(chr(c) for c in range(1, 128))])}
    assert envfile.parse(envfile.render(env)) == env
    for value in env.values():  # one line, the way bluegreen init writes each --env
        assert envfile.parse(f"K={shlex.quote(value)}\n") == {"K": value}
    with pytest.raises(envfile.EnvFileError):
        envfile.render({"NOT A NAME": "x"})


def sh_reads(path: Path) -> dict[str, str]:
    """What the programs get: the variables ``/bin/sh -c 'set -a; . FILE'`` adds to an empty environment."""

    def env0(script: str) -> dict[str, str]:
        out = subprocess.run(["env", "-i", "/bin/sh", "-c", script], capture_output=True, check=True).stdout
        return dict(item.split("=", 1) for item in out.decode("utf-8").split("\0") if item)

    before = env0("/usr/bin/env -0")
    after = env0(f"set -a; . {shlex.quote(str(path))}; /usr/bin/env -0")
    return {k: v for k, v in after.items() if before.get(k) != v}


@pytest.mark.integration
def test_the_reading_equals_bin_sh(tmp_path: Path) -> None:
    path = tmp_path / "app.env"
    path.write_text("\n".join(line for line, _ in ACCEPTED) + "\n")
    assert envfile.read(str(path)) == sh_reads(path)
    rendered = {f"V{i}": value for i, value in enumerate(VALUES)}
    path.write_text(envfile.render(rendered))
    assert envfile.read(str(path)) == sh_reads(path) == rendered


def test_merge_adds_missing_keys_keeps_other_values_and_replaces_every_assignment_when_asked() -> None:
    text = "# settings\nA=1\nexport B='two words'\nA='again'\n"
    merged, said = envfile.merge(text, {"A": "again", "C": "it's"})
    assert said == ["added C"] and merged == text + "C='it'\"'\"'s'\n"
    assert envfile.parse(merged) == {"A": "again", "B": "two words", "C": "it's"}
    kept, said = envfile.merge(text, {"B": "new"})
    assert kept == text and said == ["kept B: the file has another value (--replace-env changes it)"]
    changed, said = envfile.merge(text, {"A": "3"}, replace=True)
    assert said == ["changed A"] and changed == "# settings\nA=3\nexport B='two words'\nA=3\n"
    assert envfile.merge("A=1", {"Z": "9"})[0] == "A=1\nZ=9\n"  # no newline at the end: the new key on its own line
    with pytest.raises(envfile.EnvFileError, match="line 2"):
        envfile.merge("A=1\nB=$HOME\n", {"C": "x"})

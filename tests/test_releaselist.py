"""Pure parts of releases: the paths of a color at a release, which folders go, which release --to means."""

from __future__ import annotations

import pytest

from supervisor_bluegreen.host import releases
from supervisor_bluegreen.listener.sequences.release import contract_refusal
from supervisor_bluegreen.shared import config
from supervisor_bluegreen.shared.releaselist import Release, ReleaseError, listing, pick, recorded, to_problem

A, B, C = "a" * 40, "b" * 40, "c" * 40


def built(*commits: str) -> list[Release]:
    return [Release(f"2026120{i}T000000-{c[:12]}", c, float(i), i) for i, c in enumerate(commits, 1)]


def test_a_color_at_a_release_has_every_path_under_its_root_moved_there_and_the_rest_kept() -> None:
    color = config.Color(
        "blue", "shop_blue", "/srv/shop/run/blue.sock", checkout="/srv/shop/blue/src",
        static_root="/srv/shop/blue/static", root="/srv/shop/blue", python="/srv/shop/blue/venv/bin/python",
        environment=(("STATIC_ROOT", "/srv/shop/blue/static"), ("COLOR", "blue"), ("OTHER", "/srv/shop/blueish")),
        environment_file="/etc/bluegreen/shop.env",
    )  # fmt: skip
    at = releases.view(color, "/srv/shop/releases/R")
    assert (at.root, at.checkout, at.static_root, at.python) == (
        "/srv/shop/releases/R", "/srv/shop/releases/R/src", "/srv/shop/releases/R/static",
        "/srv/shop/releases/R/venv/bin/python",
    )  # fmt: skip
    assert dict(at.environment) == {
        "STATIC_ROOT": "/srv/shop/releases/R/static", "COLOR": "blue", "OTHER": "/srv/shop/blueish"
    }  # fmt: skip
    assert at.environment_file == color.environment_file and at.program == "shop_blue"
    assert releases.own_venv(at) == "/srv/shop/releases/R/venv"
    shared = releases.view(config.Color("blue", "p", "/s", root="/srv/shop/blue", python="/opt/venv/bin/python"), "/r")
    assert shared.python == "/opt/venv/bin/python" and releases.own_venv(shared) == ""


def test_pruning_keeps_the_newest_built_and_what_a_color_runs_and_leaves_strangers_alone() -> None:
    kept = built(A, B, C)
    names = [r.id for r in kept] + ["20261209T000000-dddddddddddd", "before-releases-blue-17", "notes.txt"]
    gone = releases.to_prune(names, kept, keep=2, protected={kept[0].id})
    assert gone == ["20261209T000000-dddddddddddd", "before-releases-blue-17"]  # unfinished build, a color's old folder
    assert releases.to_prune(names, kept, keep=1, protected=()) == sorted([*names[:2], *names[3:5]])


def test_rollback_to_a_commit_or_n_releases_back() -> None:
    kept = built(A, B, C)
    assert pick(kept, kept[2].id, "-1").commit == B
    assert pick(kept, kept[2].id, "-2").commit == A
    assert pick(kept, kept[2].id, "aaaa").commit == A
    with pytest.raises(ReleaseError, match="only 2 kept release"):
        pick(kept, kept[2].id, "-3")
    with pytest.raises(ReleaseError, match=r"no kept release of abcd \(kept: aaaaaaa, bbbbbbb, ccccccc\)"):
        pick(kept, kept[2].id, "abcd")
    assert to_problem("-2") == "" and to_problem(A) == ""
    assert "give a commit" in to_problem("main; rm -rf /") and "give a commit" in to_problem("-0")


def test_a_new_release_id_sorts_by_time_and_never_takes_a_name_twice() -> None:
    first = releases.new_id(A, 0.0, set())
    assert first == "19700101T000000-aaaaaaaaaaaa"
    assert releases.new_id(A, 0.0, {first}) == first + "-2"


def test_a_contract_of_a_later_release_refuses_the_rollback_with_its_migrations() -> None:
    kept = built(A, B, C)
    applied = [{"release": kept[1].id, "at": 2.5, "migrations": ["shop.0003_drop_note"]}]
    assert "shop.0003_drop_note" in contract_refusal(applied, kept[0])
    assert contract_refusal(applied, kept[1]) == ""  # its own contract: its code does without what it dropped
    assert contract_refusal(applied, kept[2]) == ""  # built after it


def test_the_listing_is_newest_first_with_the_colors_that_run_each() -> None:
    kept = built(A, B)
    state = {
        "releases": [r.record() for r in kept] + [{"id": "damaged"}],
        "colors": {"blue": {"release": kept[1].id}, "green": {"release": kept[0].id}},
        "live": "blue",
    }
    assert [r.id for r in recorded(state)] == [kept[0].id, kept[1].id]
    rows = listing(state)
    assert [(r["commit"], r["colors"], r["live"]) for r in rows] == [(B, ["blue"], True), (A, ["green"], False)]


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ("root = /srv/shop/%(color)s\ncheckout = /srv/other/%(color)s\n", "must be inside its root"),
        ("checkout = /srv/shop/%(color)s/src\nreleases = /srv/shop/blue/releases\n", "must not be inside the root"),
        ("root = /srv/%(color)s/x\ncheckout = /srv/%(color)s/x/src\n", "roots must be in one folder"),
        ("root = /a/%(color)s\ncheckout = /a/%(color)s/src\n", ""),
    ],
)
def test_a_deploy_needs_colors_whose_roots_can_point_at_releases(extra: str, problem: str) -> None:
    text = (
        "[app:shop]\nprogram = shop_%(color)s\nsocket = /srv/shop/run/%(color)s.sock\nlive_socket = /srv/shop/l.sock\n"
        "public_url = http://127.0.0.1/\nrepo = /srv/shop.git\n" + extra
    )
    if not problem:
        app = config.parse(text).app()
        assert app.deploy is not None and app.deploy.releases.endswith("/releases") and app.deploy.keep_releases == 5
        return
    with pytest.raises(config.ConfigError, match=problem):
        config.parse(text)

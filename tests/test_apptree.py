"""host/apptree.py: root walks the app user's tree without following a link or waiting on a FIFO."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from supervisor_bluegreen.host import apptree
from supervisor_bluegreen.shared.store import UnsafePath

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
NOBODY = (65534, 65534)


def tree(tmp_path: Path) -> Path:
    (tmp_path / "app.git" / "objects" / "ab").mkdir(parents=True)
    (tmp_path / "app.git" / "HEAD").write_text("ref: refs/heads/main\n")
    (tmp_path / "app.git" / "objects" / "ab" / "cd").write_text("blob")
    (tmp_path / "outside").mkdir()
    (tmp_path / "app.git" / "link").symlink_to(tmp_path / "outside")
    return tmp_path / "app.git"


def test_chown_tree_gives_every_entry_and_never_what_a_link_leads_to(tmp_path: Path) -> None:
    repo = tree(tmp_path)
    apptree.chown_tree(str(tmp_path), str(repo), *NOBODY)
    for p in [repo, *repo.rglob("*")]:
        assert (p.lstat().st_uid, p.lstat().st_gid) == NOBODY, p
    assert (tmp_path / "outside").stat().st_uid == 0


def test_a_folder_swapped_for_a_fifo_while_chown_tree_walks_is_refused_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The app user swaps a listed folder for a FIFO before root enters it: os.fwalk's plain open waited
    on it for ever (init hung); entering it as a folder, with no link followed, refuses it at once."""
    repo = tree(tmp_path)
    os.mkfifo(repo / "refs")
    listed = os.scandir

    class AsListed:  # what the listing said a moment before the swap: refs was a folder
        def __init__(self, entry: os.DirEntry) -> None:
            self.name, self._entry = entry.name, entry

        def is_dir(self, follow_symlinks: bool = True) -> bool:
            return self.name == "refs" or self._entry.is_dir(follow_symlinks=follow_symlinks)

    class Listing:
        def __init__(self, fd: int) -> None:
            self._it = listed(fd)

        def __enter__(self) -> Listing:
            return self

        def __exit__(self, *exc: object) -> None:
            self._it.close()

        def __iter__(self):
            return (AsListed(e) for e in self._it)

        def close(self) -> None:
            self._it.close()

    monkeypatch.setattr(os, "scandir", Listing)
    raised: list[BaseException] = []
    walker = threading.Thread(target=lambda: raised.extend(_catch(tmp_path, repo)), daemon=True)
    walker.start()
    walker.join(timeout=10)
    if walker.is_alive():  # unblock the open it waits in, so the test process can end
        with open(repo / "refs", "w"):
            pass
        pytest.fail("chown_tree waited on a FIFO")
    assert len(raised) == 1 and isinstance(raised[0], UnsafePath)
    assert "refs: it is a FIFO, not a folder" in str(raised[0])


def _catch(anchor: Path, repo: Path) -> list[BaseException]:
    try:
        apptree.chown_tree(str(anchor), str(repo), *NOBODY)
    except BaseException as exc:  # noqa: BLE001 (handed to the test's thread)
        return [exc]
    return []

"""Create, write and chown paths inside a tree the app user owns, as root, never following a link.

The app's folder (``/srv/APP``) is root's; below it the app user owns folders (``run``, the colors,
``home``, ``app.git``) and may put a symlink or a FIFO anywhere in them at any time. A path-based
``makedirs``/``chown``/``open`` by root would follow such a link out of the tree (``MEDIA_ROOT`` made
``/etc/supervisor/conf.d`` the app's; a stamp file written through a link became a ``.pth`` in root's
site-packages). Here root opens the anchor (checked to be root's and writable by no one else), then
walks one component at a time with ``openat(O_NOFOLLOW | O_DIRECTORY)`` from the descriptor it holds,
refuses a symlink or a non-folder at any component, and sets owner and mode on the descriptors it
opened (``fchown``/``fchmod``), so nothing the app user swaps in later is touched either.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator

from supervisor_bluegreen.shared.store import UnsafePath, _kind

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY


def parts_below(anchor: str, path: str) -> list[str] | None:
    """The components of ``path`` below ``anchor`` (lexically, after normpath); None when it is not below."""
    anchor, path = os.path.normpath(anchor), os.path.normpath(path)
    if not os.path.isabs(path) or not path.startswith(anchor.rstrip("/") + "/"):
        return None
    return path[len(anchor.rstrip("/")) + 1 :].split("/")


def open_anchor(anchor: str) -> int:
    """A descriptor of ``anchor``, a folder only root may write (else UnsafePath: the walk would start on sand)."""
    fd = os.open(anchor, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    st = os.fstat(fd)
    if st.st_uid not in (0, os.geteuid()) or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        os.close(fd)
        raise UnsafePath(errno.EPERM, f"refusing {anchor}: it must be root's and writable by no one else")
    return fd


def _step(fd: int, name: str, shown: str, make: tuple[int, int, int] | None) -> int:
    """Open folder ``name`` in ``fd`` without following a link; make it (owner, group, mode) when absent."""
    if name in ("", ".", ".."):
        raise UnsafePath(errno.EINVAL, f"refusing {shown}: not a plain path")
    try:
        return os.open(name, DIR_FLAGS, dir_fd=fd)
    except FileNotFoundError:
        if make is None:
            raise
        os.mkdir(name, 0o700, dir_fd=fd)
        new = os.open(name, DIR_FLAGS, dir_fd=fd)
        os.fchown(new, make[0], make[1])
        os.fchmod(new, make[2])
        return new
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            st = os.lstat(name, dir_fd=fd)
            raise UnsafePath(exc.errno, f"refusing {shown}: it is {_kind(st.st_mode)}, not a folder") from None
        raise


@contextlib.contextmanager
def walk_to(anchor: str, parts: list[str], make: tuple[int, int, int] | None = None) -> Iterator[int]:
    """A descriptor of the folder ``anchor/parts...``, reached without following any link.

    Missing folders are made with ``make`` (uid, gid, mode) when given; otherwise FileNotFoundError.
    """
    fd = open_anchor(anchor)
    try:
        shown = anchor.rstrip("/")
        for name in parts:
            shown = f"{shown}/{name}"
            nxt = _step(fd, name, shown, make)
            os.close(fd)
            fd = nxt
        yield fd
    finally:
        os.close(fd)


def fix(fd: int, uid: int, gid: int, mode: int) -> bool:
    """Owner and mode of the open ``fd`` set; True when something had to change."""
    st = os.fstat(fd)
    if (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (uid, gid, mode):
        return False
    os.fchown(fd, uid, gid)
    os.fchmod(fd, mode)
    return True


def make_dir(anchor: str, path: str, uid: int, gid: int, mode: int) -> str:
    """Folder ``path`` below ``anchor`` with this owner and mode: created, fixed or exists.

    Missing folders on the way are made the same; existing ones are left as they are (never chowned).
    """
    parts = _below(anchor, path)
    with walk_to(anchor, parts[:-1], make=(uid, gid, mode)) as parent:
        made = False
        try:
            os.mkdir(parts[-1], 0o700, dir_fd=parent)
            made = True
        except FileExistsError:
            pass
        fd = _step(parent, parts[-1], path, None)
        try:
            changed = fix(fd, uid, gid, mode)
        finally:
            os.close(fd)
    return "created" if made else "fixed" if changed else "exists"


def private_file(anchor: str, path: str, uid: int, gid: int, mode: int) -> str:
    """Regular file ``path`` below ``anchor`` with this owner and mode (made empty when absent), no link followed."""
    parts = _below(anchor, path)
    with walk_to(anchor, parts[:-1]) as parent:
        try:
            fd = os.open(parts[-1], os.O_RDONLY | FILE_FLAGS, dir_fd=parent)
            made = False
        except FileNotFoundError:
            fd = os.open(parts[-1], os.O_RDONLY | os.O_CREAT | os.O_EXCL | FILE_FLAGS, 0o600, dir_fd=parent)
            made = True
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafePath(exc.errno, f"refusing {path}: it is a symbolic link") from None
            raise
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
                what = _kind(st.st_mode) if not stat.S_ISREG(st.st_mode) else f"a file with {st.st_nlink} links"
                raise UnsafePath(errno.EINVAL, f"refusing {path}: it is {what}")
            changed = fix(fd, uid, gid, mode)
        finally:
            os.close(fd)
    return "created" if made else "fixed" if changed else "exists"


def chown_tree(anchor: str, path: str, uid: int, gid: int) -> None:
    """``chown -R`` of folder ``path`` below ``anchor``: every entry itself, never what a link points to.

    Each folder is entered like the rest of this module (``_step``: no link followed, a FIFO swapped in is
    refused at once), not by ``os.fwalk``, which opens what it listed as a folder with a plain open.
    """
    parts = _below(anchor, path)
    with walk_to(anchor, parts) as top:
        os.fchown(top, uid, gid)
        _chown_entries(top, path, uid, gid)


def _chown_entries(dirfd: int, shown: str, uid: int, gid: int) -> None:
    with os.scandir(dirfd) as entries:
        listed = [(entry.name, entry.is_dir(follow_symlinks=False)) for entry in entries]
    for name, is_dir in listed:
        os.chown(name, uid, gid, dir_fd=dirfd, follow_symlinks=False)
        if is_dir:
            sub = _step(dirfd, name, f"{shown}/{name}", None)
            try:
                _chown_entries(sub, f"{shown}/{name}", uid, gid)
            finally:
                os.close(sub)


def _below(anchor: str, path: str) -> list[str]:
    parts = parts_below(anchor, path)
    if not parts:
        raise UnsafePath(errno.EPERM, f"refusing {path}: it is not inside {anchor}")
    return parts


def read_in(dirfd: int, name: str, shown: str, limit: int = 1 << 20) -> tuple[str, os.stat_result] | None:
    """Text and stat of the regular file ``name`` in ``dirfd`` (no link followed, no FIFO waited on); None: absent."""
    try:
        fd = os.open(name, os.O_RDONLY | FILE_FLAGS, dir_fd=dirfd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafePath(exc.errno, f"refusing {shown}: it is a symbolic link") from None
        raise
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
            what = _kind(st.st_mode) if not stat.S_ISREG(st.st_mode) else f"larger than {limit} bytes"
            raise UnsafePath(errno.EINVAL, f"refusing {shown}: it is {what}")
        return fh.read(limit + 1).decode("utf-8"), st


def replace_in(dirfd: int, name: str, text: str, uid: int, gid: int, mode: int) -> None:
    """Put ``text`` at ``name`` in folder ``dirfd`` at once (temp file + rename, the temp never through a link)."""
    tmp = f".{name}.bluegreen-init"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp, dir_fd=dirfd)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | FILE_FLAGS, 0o600, dir_fd=dirfd)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", closefd=False) as fh:
            fh.write(text)
        os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    os.replace(tmp, name, src_dir_fd=dirfd, dst_dir_fd=dirfd)

"""Folders a preparation builds before renaming them onto their target, and their cleanup.

Every preparation stages its work in a hidden sibling of the target (``.NAME.partial-*`` for
the embedded datasets, ``.NAME.cpt-staging-*`` for the real ones) and holds an exclusive
``flock`` on the folder that holds the target while it works (a lock on the directory itself: no
lock file is left behind; preparations in one folder take turns). A partial folder is stale when
nobody holds that lock: its preparation was killed. ``remove_stale_partials`` deletes exactly
those, so a concurrent preparation never loses its folder.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cptlib import _io

PARTIAL_PATTERN = re.compile(r"^\.(?P<target>.+)\.(?:partial|cpt-staging)-[^/]+$")


def _lock_fd(folder: Path) -> int:
    return os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))


@contextmanager
def preparing(target: str | Path) -> Iterator[None]:
    """Hold the lock of ``target`` for the whole preparation; a second one waits for the first.

    The lock is released by the kernel when the process dies, so a killed preparation never
    blocks the next one; once the lock is taken, every partial folder of ``target`` is a killed
    run's and is removed.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = _lock_fd(target.parent)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        for stale in _partials(target.parent, target.name):  # ours now: left by a killed run
            shutil.rmtree(stale, ignore_errors=True)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _partials(root: Path, target: str | None) -> Iterator[Path]:
    for path in sorted(root.iterdir()) if root.is_dir() else ():
        match = PARTIAL_PATTERN.match(path.name)
        if match and path.is_dir() and not path.is_symlink() and (
                target is None or match.group("target") == target):
            yield path


def remove_stale_partials(root: str | Path) -> list[Path]:
    """Delete the partial folders under ``root`` that no live preparation owns; return them.

    For ``cpt clean``: while a preparation in ``root`` is running, nothing is removed (its
    folder may be among them); call it again later.
    """
    root = Path(root)
    if not root.is_dir() or _io.lock_held(root):
        return []
    stale = list(_partials(root, None))
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale

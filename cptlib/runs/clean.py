"""``cpt clean``: remove what interrupted work left behind, never what live work is using.

Removed: partial dataset folders of killed preparations (only when no preparation holds their
folder's lock), the failed runs' notebooks in ``results/<profile>/_failed/``, partial notebooks
of killed runs and lock files that no live run holds, and empty checkpoint folders. Kept: the
checkpoint of a killed run (the next ``cpt run`` of the same spec resumes from it).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from cptlib import _io
from cptlib.data import remove_stale_partials
from cptlib.paths import cache_dir, data_root

_RUNNING = re.compile(r"^\.(?P<run_id>[0-9a-f]+)\.\d+\.running\.ipynb$")


def _remove(path: Path, dry_run: bool) -> Path:
    if not dry_run:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    return path


def clean(results: Path, *, dry_run: bool = False) -> list[Path]:
    """Remove stale leftovers under ``results`` and the data folders; return what went."""
    removed: list[Path] = []
    for folder in (data_root(), cache_dir() / "data", cache_dir() / "smoke"):
        if folder.is_dir() and not dry_run:
            removed += remove_stale_partials(folder)
    for profile in sorted(p for p in results.glob("*") if p.is_dir()):
        locks = profile / ".locks"
        if (profile / "_failed").is_dir():
            removed.append(_remove(profile / "_failed", dry_run))
        for partial in sorted(profile.glob("*/.*.running.ipynb")):
            match = _RUNNING.match(partial.name)
            lock = locks / f"{partial.parent.name}-{match['run_id']}.lock" if match else None
            if lock is None or not _io.lock_held(lock):
                removed.append(_remove(partial, dry_run))
        for lock in sorted(locks.glob("*.lock")) if locks.is_dir() else []:
            if not _io.lock_held(lock):
                removed.append(_remove(lock, dry_run))
        for ckpt in sorted(profile.glob("*/checkpoints")):
            if ckpt.is_dir() and not any(ckpt.iterdir()):
                removed.append(_remove(ckpt, dry_run))
    return removed

"""Files the study writes: atomically, as strict JSON, never half-written.

Every artifact (records, checkpoints, adapters, markers, benchmark JSON) goes through
``atomic_write``: a uniquely named temporary file in the target's folder, fsynced, then renamed
over the target, so a reader sees the old file or the new one and a crash leaves no partial
file under the real name. Two writers never share a temporary name.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def atomic_write(path: Path | str, data: bytes | str | Callable[[Path], None]) -> Path:
    """Write ``data`` (bytes, text, or a function that writes a given path) to ``path``.

    The parent folder is created; on any failure the temporary file is removed and an existing
    ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        if callable(data):
            os.close(fd)
            data(tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; published files follow umask
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    """The process's umask, read without changing it where the system allows."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore at once
    os.umask(mask)
    return mask


def jsonable(value: Any) -> Any:
    """Plain JSON data: NaN and ±inf become null (JSON has neither), arrays and tensors become
    lists, paths become POSIX strings, tuples become lists, keys become strings."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return value.as_posix()
    return value


def dumps(value: Any, *, indent: int | None = 1, sort_keys: bool = False) -> str:
    """Strict JSON text (``allow_nan=False`` after ``jsonable``), newline-terminated."""
    return json.dumps(jsonable(value), indent=indent, sort_keys=sort_keys, allow_nan=False) + "\n"


def write_json(path: Path | str, value: Any, *, sort_keys: bool = False) -> Path:
    """``value`` as strict JSON at ``path``, atomically."""
    return atomic_write(path, dumps(value, sort_keys=sort_keys))


def read_json(path: Path | str) -> Any:
    """JSON from ``path``; a corrupt file is a ValueError naming it (not a JSONDecodeError)."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err.msg} at line {err.lineno}); "
                         "delete it to let it be made again") from err


@contextmanager
def exclusive_lock(path: Path | str, what: str) -> Iterator[Path]:
    """Hold an exclusive, non-blocking lock on ``path`` (created if missing) for the block.

    A second process asking for the same lock gets a ValueError at once, naming ``what``; the
    lock dies with its process, so a killed run never leaves a stale lock behind.
    """
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"{what} is already running in another process "
                             f"(lock {path}); wait for it to finish") from None
        try:
            yield path
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def lock_held(path: Path | str) -> bool:
    """Whether a live process holds an ``flock`` on ``path`` (a lock file or a folder) now;
    a missing path is not held."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


@contextmanager
def silenced_fd(fd: int) -> Iterator[None]:
    """Send what C/C++ code writes straight to file descriptor ``fd`` (1 or 2) to /dev/null
    for the block: HiGHS's banner, the profiler's start/stop lines. Python's own stream is
    flushed first so nothing of ours is lost."""
    import sys

    stream = {1: sys.stdout, 2: sys.stderr}.get(fd)
    if stream is not None:
        stream.flush()
    try:
        saved = os.dup(fd)
    except OSError:  # no such descriptor: nothing to hide
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), fd)
            yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)

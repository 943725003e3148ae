"""Where the study keeps things: one place, so tests can redirect everything with env vars."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Cache for generated data and the embedded backbone (``$CPT_CACHE``, else ~/.cache/cptlib)."""
    return Path(os.environ.get("CPT_CACHE", Path.home() / ".cache" / "cptlib")).expanduser()


def data_root() -> Path:
    """Default root of the datasets (``$CPT_DATA``, else ``cache_dir()/data``)."""
    env = os.environ.get("CPT_DATA")
    return Path(env).expanduser() if env else cache_dir() / "data"


def results_root(value: str | Path = "results") -> Path:
    """A results folder: relative ones are relative to the project, wherever a kernel runs."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else project_root() / path


def project_root() -> Path:
    """The repository checkout that holds ``notebooks/`` and ``book/`` (``$CPT_PROJECT`` or cwd).

    Falls back to the source tree of an editable install.
    """
    env = os.environ.get("CPT_PROJECT")
    if env:
        return Path(env).resolve()
    here = Path(__file__).resolve().parent.parent
    if (here / "notebooks").is_dir():
        return here
    return Path.cwd()

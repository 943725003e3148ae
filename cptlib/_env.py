"""What the study needs to know about where it runs: CI or a person, and on which machine.

One reading of ``$CI`` for the whole project (progress bars are for people, not for CI logs or
notebook outputs), and the provenance that every record and the book carry.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cptlib.paths import project_root

#: Distributions whose versions a record keeps (key in the record -> distribution name).
VERSIONED = {
    "torch": "torch",
    "torchvision": "torchvision",
    "timm": "timm",
    "open_clip": "open_clip_torch",
    "peft": "peft",
    "transformers": "transformers",
    "numpy": "numpy",
    "scipy": "scipy",
    "scikit-learn": "scikit-learn",
    "pandas": "pandas",
    "cptlib": "cptlib",
}


def in_ci() -> bool:
    """True under CI (``CI`` set to anything but an empty string, 0 or false)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def show_progress(requested: bool | None = None) -> bool:
    """Live progress bars: only for a person at a terminal, never in CI; ``False`` forces off."""
    if requested is False:
        return False
    return sys.stderr.isatty() and not in_ci()


def _dist_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git(args: Sequence[str], cwd: Path) -> str | None:
    """Output of a read-only git command, or None when git or the repository is missing."""
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_state(root: Path | None = None) -> dict[str, Any]:
    """Commit of the project checkout and whether tracked files differ from it.

    Untracked files (results, caches) do not make a checkout dirty; an untracked module that
    matters is covered by the records' ``code_version`` instead.
    """
    root = project_root() if root is None else Path(root)
    if _git(["rev-parse", "--is-inside-work-tree"], root) != "true":
        return {"commit": None, "dirty": None}
    status = _git(["status", "--porcelain", "--untracked-files=no"], root)
    return {
        "commit": _git(["rev-parse", "HEAD"], root),  # None in a repository with no commit yet
        "dirty": None if status is None else bool(status),
    }


def processor() -> str:
    """CPU model name; ``platform.processor()`` is empty on most Linux systems."""
    name = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if (not name or name == platform.machine()) and cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return name


#: CPU flags (Linux ``/proc/cpuinfo``) of instructions that compute bf16 natively.
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(cpuinfo: Path | str = "/proc/cpuinfo") -> set[str]:
    """The CPU's feature flags as Linux reports them (empty elsewhere)."""
    cpuinfo = Path(cpuinfo)
    if not cpuinfo.is_file():
        return set()
    for line in cpuinfo.read_text(errors="replace").splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def native_bf16(flags: set[str] | None = None) -> bool:
    """Whether this CPU computes bf16 in hardware. Without it, bf16 autocast is emulated:
    measured 15x slower than float32 for the quick backbone on an AVX2-only AMD EPYC, against
    2x faster on a CPU with AVX-512 BF16 (the efficiency chapter)."""
    return bool((cpu_flags() if flags is None else flags) & set(BF16_FLAGS))


def hardware() -> dict[str, Any]:
    """What a run ran on (no host name: records get published)."""
    import torch  # lazy: the CLI validates parameters without importing torch

    cuda = torch.cuda.is_available()
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": processor(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda_device": torch.cuda.get_device_name(0) if cuda else None,
        "cuda_device_count": torch.cuda.device_count() if cuda else 0,
        "cuda_version": torch.version.cuda,
    }


def provenance() -> dict[str, Any]:
    """Enough to rerun a record: library versions, git commit (+ dirty flag), hardware, time."""
    versions = {"python": platform.python_version()}
    versions.update({key: _dist_version(dist) for key, dist in VERSIONED.items()})
    return {
        "versions": versions,
        "git": git_state(),
        "hardware": hardware(),
        "timestamp_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }

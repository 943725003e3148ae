"""Profiles: the runs each scale lists (``profiles.yaml``), as run specs.

Per profile: ``experiments`` (values per experiment on top of the registry's smoke defaults),
``runs`` (entries ``{experiment, <parameter>: value, ..., seeds: [...], cs: [...]}``; ``seeds``
and ``cs`` expand into one run per seed and per control vector), ``pages`` (runs whose executed
notebook is a page of the book). Every entry becomes a ``RunSpec``, so a typo in the file is an
error naming the entry before any run starts.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from cptlib.runs.spec import PROFILES, RunSpec, load_profiles, profiles_file  # noqa: F401

#: Keys of a run entry that expand into several runs (the other keys are parameters as given).
EXPANDING = {"seeds": "seed", "cs": "c"}


def expand(entry: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``{experiment, seeds: [0, 1], cs: [[1,1],[4,1]], ...}`` → one dict per combination."""
    entry = dict(entry)
    axes = {EXPANDING[k]: entry.pop(k) for k in list(entry) if k in EXPANDING}
    for key, values in axes.items():
        if not isinstance(values, list) or not values:
            raise ValueError(f"{key}s must be a non-empty list, got {values!r}")
    if not axes:
        return [entry]
    names = list(axes)
    return [{**entry, **dict(zip(names, combo, strict=True))}
            for combo in itertools.product(*axes.values())]


def _spec(entry: Mapping[str, Any], profile: str, profiles: Mapping[str, Any],
          where: str) -> RunSpec:
    entry = dict(entry)
    if "experiment" not in entry:
        raise ValueError(f"{where} has no 'experiment'")
    experiment = entry.pop("experiment")
    try:
        return RunSpec.build(experiment, profile, entry, profiles=profiles)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None


def profile_runs(profile: str, only: str | None = None,
                 profiles: Mapping[str, Any] | None = None) -> list[RunSpec]:
    """Every run ``profile`` lists (optionally of one experiment), in file order, de-duplicated."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; known: {', '.join(PROFILES)}")
    profiles = load_profiles() if profiles is None else profiles
    specs: dict[str, RunSpec] = {}
    for i, entry in enumerate(profiles[profile].get("runs") or []):
        if not isinstance(entry, dict):
            raise ValueError(f"profiles.yaml {profile}.runs[{i}] must be a mapping")
        for params in expand(entry):
            if only is not None and params.get("experiment") != only:
                continue
            spec = _spec(params, profile, profiles, f"profiles.yaml {profile}.runs[{i}]")
            specs.setdefault(spec.run_id, spec)
    return list(specs.values())


def pages(profile: str, profiles: Mapping[str, Any] | None = None) -> dict[str, RunSpec]:
    """The featured runs of ``profile``: book page name → the run whose notebook it shows."""
    profiles = load_profiles() if profiles is None else profiles
    return {page: _spec(entry, profile, profiles, f"profiles.yaml {profile}.pages.{page}")
            for page, entry in (profiles[profile].get("pages") or {}).items()}

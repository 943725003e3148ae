"""A run spec: the one owner of a run's parameters, validated before any work starts.

``RunSpec.build(experiment, profile, overrides)`` merges the experiment's smoke defaults (the
registry), the profile's values for that experiment (``profiles.yaml``) and the overrides (a
sweep entry or ``-p KEY=VALUE``), rejects unknown keys with the list of known ones, checks
every value's type and range (c against the dataset's number of groups, without loading the
data) and knows the run's id and record path. ``cpt run``, ``cpt sweep``, the launchers, the
notebooks and the tests all go through it. It imports neither torch nor papermill, so a bad
parameter costs a fraction of a second.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from cptlib import records
from cptlib._env import native_bf16
from cptlib.config import (
    METHODS,
    TrainConfig,
    check_c,
    check_choice,
    check_int,
    check_number,
    resolve_precision,
)
from cptlib.paths import project_root, results_root
from cptlib.runs import experiments as registry
from cptlib.runs.experiments import DATASET_GROUPS, Experiment

PROFILES = ("smoke", "quick", "paper")
TRAIN_KEYS = tuple(f.name for f in fields(TrainConfig))
INPUT_KEYS = ("experiment", "dataset", "data_root", "data_size", "data_seed", "model",
              "model_options", "class_names", "img_size")
#: Parameters that say where a run is stored, not what it computes (not part of the run id).
PLACEMENT_KEYS = ("results_dir",)


def _check_inputs(p: dict[str, Any]) -> None:
    check_choice("dataset", p["dataset"], tuple(DATASET_GROUPS))
    check_choice("data_size", p["data_size"], ("full", "smoke"))
    check_int("data_seed", p["data_seed"], 0)
    check_int("img_size", p["img_size"], 1)
    for name in ("data_root",):
        if p[name] is not None and not (isinstance(p[name], str) and p[name]):
            raise ValueError(f"{name} must be a folder path or null, got {p[name]!r}")
    if not isinstance(p["model"], str) or not p["model"]:
        raise ValueError(f"model must be a model name such as 'quick', got {p['model']!r}")
    options = p["model_options"]
    if not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
        raise ValueError(f"model_options must be a mapping of names to values, got {options!r}")
    names = p["class_names"]
    if names is not None and not (isinstance(names, list) and names
                                  and all(isinstance(n, str) and n for n in names)):
        raise ValueError(f"class_names must be a list of class names or null, got {names!r}")


def _check_toy(p: dict[str, Any]) -> None:
    cs = p["cs"]
    if not isinstance(cs, list) or not cs:
        raise ValueError(f"cs must be a non-empty list of control vectors, got {cs!r}")
    for i, c in enumerate(cs):
        check_c(c, 2, name=f"cs[{i}]")
    methods = p["methods"]
    if not isinstance(methods, list) or not methods:
        raise ValueError(f"methods must be a non-empty list of method names, got {methods!r}")
    for i, m in enumerate(methods):
        check_choice(f"methods[{i}]", m, METHODS)
    check_int("steps", p["steps"], 1)
    check_number("lr", p["lr"], positive=True)
    check_int("seed", p["seed"], 0)


def _check_placement(p: dict[str, Any]) -> None:
    if not isinstance(p["results_dir"], str) or not p["results_dir"]:
        raise ValueError(f"results_dir must be a folder path, got {p['results_dir']!r}")


def _frozen_json(value: Any) -> str:
    """JSON text of parameters; a value JSON cannot hold (a YAML date, NaN) is named."""
    try:
        return json.dumps(value, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ValueError(f"parameters must be plain numbers, strings, lists and mappings: "
                         f"{err}") from None


def profiles_file() -> Path:
    return project_root() / "profiles.yaml"


def load_profiles(path: Path | None = None) -> dict[str, Any]:
    """The parsed profiles file; ValueError naming the file when it is malformed."""
    path = path or profiles_file()
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise ValueError(f"{path} is missing: run from the project folder or set "
                         "$CPT_PROJECT") from None
    except yaml.YAMLError as err:
        raise ValueError(f"{path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must map profile names to profiles")
    missing = [p for p in PROFILES if not isinstance(data.get(p), dict)]
    if missing:
        raise ValueError(f"{path} lacks profile(s) {missing}")
    return data


def profile_values(profile: str, experiment: str,
                   profiles: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What ``profiles.yaml`` sets for ``experiment`` at ``profile`` (may be empty)."""
    data = load_profiles() if profiles is None else profiles
    return dict((data[profile].get("experiments") or {}).get(experiment) or {})


@dataclass(frozen=True)
class RunSpec:
    """One run, completely and immutably described (picklable, for launchers)."""

    experiment: str
    profile: str
    params_json: str  # every parameter, validated (canonical JSON: the spec is immutable)
    overrides_json: str  # what the profile entry or the user set on top of the profile

    # ------------------------------------------------------------------ building

    @classmethod
    def build(cls, experiment: str, profile: str = "smoke",
              overrides: Mapping[str, Any] | None = None, *,
              profiles: Mapping[str, Any] | None = None) -> RunSpec:
        """Defaults ← profile values ← ``overrides``; ValueError names the first problem."""
        exp = registry.get(experiment)
        if profile not in PROFILES:
            raise ValueError(f"unknown profile {profile!r}; known: {', '.join(PROFILES)}")
        overrides = dict(overrides or {})
        for key in overrides:
            if not isinstance(key, str):
                raise ValueError(f"parameter names must be strings, got {key!r}")
        if "experiment" in overrides and overrides["experiment"] != experiment:
            raise ValueError(f"experiment is set by the command ({experiment!r}), not by -p")
        if "profile" in overrides:
            raise ValueError("profile is set with --profile, not with -p")
        params = registry.defaults(experiment)
        from_profile = profile_values(profile, experiment, profiles)
        for source, values in (("profiles.yaml", from_profile), ("override", overrides)):
            unknown = sorted(set(values) - set(params))
            if unknown:
                where = f"{profile}.experiments.{experiment} in profiles.yaml" \
                    if source == "profiles.yaml" else "parameter"
                raise ValueError(
                    f"unknown {where} {', '.join(unknown)} for experiment {experiment!r}; "
                    f"known: {', '.join(sorted(params))}")
            params.update(values)
        _validate(exp, params)
        return cls(experiment, profile, _frozen_json(params), _frozen_json(overrides))

    # ------------------------------------------------------------------ what it holds

    @property
    def params(self) -> dict[str, Any]:
        """Every parameter (a fresh copy: the spec itself never changes)."""
        return json.loads(self.params_json)

    @property
    def overrides(self) -> dict[str, Any]:
        return json.loads(self.overrides_json)

    @property
    def info(self) -> Experiment:
        return registry.get(self.experiment)

    @property
    def run_params(self) -> dict[str, Any]:
        """The parameters that determine the run's result: what its id hashes."""
        return {k: v for k, v in self.params.items() if k not in PLACEMENT_KEYS}

    @property
    def run_id(self) -> str:
        return records.run_id(self.run_params)

    @property
    def results_dir(self) -> Path:
        return results_root(self.params["results_dir"])

    @property
    def record_path(self) -> Path:
        return self.results_dir / self.profile / self.experiment / f"{self.run_id}.json"

    @property
    def notebook_out(self) -> Path:
        """The executed notebook, next to the record."""
        return self.record_path.with_suffix(".ipynb")

    @property
    def template(self) -> Path:
        """The notebook that runs this spec."""
        return project_root() / "notebooks" / self.info.notebook

    def train_config(self) -> TrainConfig:
        p = self.params
        return TrainConfig(**{k: p[k] for k in TRAIN_KEYS})

    def label(self) -> str:
        keys = ("method", "alpha", "c", "seed")
        p = self.params
        shown = ", ".join(f"{k}={p[k]}" for k in keys if p.get(k) is not None)
        if p.get("method") == "groupdro" and p.get("eta") not in (None, TrainConfig.eta):
            shown += f", eta={p['eta']}"  # a GroupDRO sweep over η: tell its runs apart
        if p.get("conditioned"):
            shown += ", conditioned"
        return f"{self.experiment}({shown})"

    def __repr__(self) -> str:
        return f"RunSpec({self.label()}, profile={self.profile!r}, id={self.run_id})"


def _validate(exp: Experiment, params: dict[str, Any]) -> None:
    _check_placement(params)
    if exp.runner == "toy":
        _check_toy(params)
        return
    _check_inputs(params)
    params["precision"] = resolve_precision(params["precision"], native_bf16())
    cfg = TrainConfig(**{k: params[k] for k in TRAIN_KEYS})
    cfg.validate(DATASET_GROUPS[params["dataset"]])
    params["c"] = cfg.c


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["c=[1,1,4,1]", "seed=3"]`` → values parsed as YAML (as papermill's ``-y`` does)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"-p expects KEY=VALUE, got {pair!r}")
        if key in out:
            raise ValueError(f"parameter {key} is given twice")
        try:
            out[key] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise ValueError(f"parameter {key}: {value!r} is not a valid YAML value ({mark})") \
                from None
    return out

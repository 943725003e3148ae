"""Profiles and sweeps: which runs a profile lists, and executing them with papermill.

``profiles.yaml`` lists, per profile, parameter overrides per experiment and the runs
(experiment × method × c × seed). A run is skipped when its record exists for the same
parameters and the same code; a failing run is reported and the sweep goes on.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import yaml
from tqdm import tqdm

from cptlib import records
from cptlib.paths import project_root

PROFILES = ("smoke", "quick", "paper")
# Keys of a run entry that expand into several runs (the other keys are parameters as given).
EXPANDING = {"seeds": "seed", "cs": "c"}


def profiles_file() -> Path:
    return project_root() / "profiles.yaml"


def load_profiles(path: Path | None = None) -> dict[str, Any]:
    with open(path or profiles_file()) as f:
        data = yaml.safe_load(f)
    missing = [p for p in PROFILES if p not in data]
    if missing:
        raise ValueError(f"{path or profiles_file()} lacks profile(s) {missing}")
    return data


def notebook_path(experiment: str) -> Path:
    path = project_root() / "notebooks" / f"{experiment}.ipynb"
    if not path.exists():
        known = sorted(
            p.stem for p in path.parent.glob("*.ipynb") if not p.stem.startswith("summary")
        )
        raise ValueError(f"unknown experiment {experiment!r}; known: {', '.join(known)}")
    return path


def notebook_defaults(experiment: str) -> dict[str, Any]:
    """The values of the notebook's cell tagged ``parameters`` (its smoke-scale defaults)."""
    nb = nbformat.read(notebook_path(experiment), as_version=4)
    for cell in nb.cells:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            namespace: dict[str, Any] = {}
            exec(cell.source, {}, namespace)  # our own notebook's literal assignments
            return {k: v for k, v in namespace.items() if not k.startswith("_")}
    raise ValueError(f"{notebook_path(experiment)} has no cell tagged 'parameters'")


@dataclass
class RunSpec:
    experiment: str
    profile: str
    overrides: dict[str, Any]  # what papermill injects
    params: dict[str, Any] = field(default_factory=dict)  # defaults + overrides

    @property
    def record_path(self) -> Path:
        return record_path_for(self.experiment, self.params)

    @property
    def notebook_out(self) -> Path:
        return self.record_path.with_suffix(".ipynb")

    def label(self) -> str:
        keys = ("method", "alpha", "c", "seed")
        shown = ", ".join(f"{k}={self.params[k]}" for k in keys if self.params.get(k) is not None)
        return f"{self.experiment}({shown})"


def record_path_for(experiment: str, params: dict[str, Any]) -> Path:
    """Where the run with these (complete) parameters writes its record."""
    params = {k: v for k, v in params.items() if k != "notebook"}
    if experiment == "toy":
        from cptlib.experiment import results_dir

        kept = {k: v for k, v in params.items() if k not in ("profile", "results_dir")}
        return records.record_path(
            results_dir(params.get("results_dir", "results")), params["profile"], "toy", kept
        )
    from cptlib.experiment import resolve

    return resolve(params)[3]


def make_spec(experiment: str, profile: str, overrides: dict[str, Any]) -> RunSpec:
    """A run of ``experiment`` at ``profile``: notebook defaults ← profile's experiment
    parameters ← ``overrides``."""
    profile_params = load_profiles()[profile].get("experiments", {}).get(experiment) or {}
    merged = {**profile_params, **overrides, "profile": profile, "experiment": experiment}
    if experiment == "toy":
        merged.pop("experiment")
    defaults = notebook_defaults(experiment)
    unknown = set(merged) - set(defaults)
    if unknown:
        raise ValueError(
            f"{experiment}: unknown parameter(s) {sorted(unknown)}; the notebook takes "
            f"{sorted(defaults)}"
        )
    return RunSpec(experiment, profile, merged, {**defaults, **merged})


def expand(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """``{experiment, seeds: [0, 1], cs: [[1,1],[4,1]], ...}`` → one dict per combination."""
    entry = dict(entry)
    axes = {EXPANDING[k]: entry.pop(k) for k in list(entry) if k in EXPANDING}
    if not axes:
        return [entry]
    names = list(axes)
    combos = itertools.product(*axes.values())
    return [{**entry, **dict(zip(names, combo, strict=True))} for combo in combos]


def profile_runs(profile: str, only: str | None = None) -> list[RunSpec]:
    """Every run ``profile`` lists (optionally of one experiment), in file order."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {PROFILES}")
    specs = []
    for entry in load_profiles()[profile].get("runs", []):
        for params in expand(entry):
            experiment = params.pop("experiment")
            if only is None or experiment == only:
                specs.append(make_spec(experiment, profile, params))
    return specs


def is_done(spec: RunSpec, code: str | None = None) -> bool:
    """A record exists for these parameters and this code, with its executed notebook (a
    record written by running the template directly, as nbval does, has none)."""
    path = spec.record_path
    if not path.exists() or not spec.notebook_out.exists():
        return False
    try:
        from cptlib.experiment import result_code_version

        return records.read_record(path).get("code_version") == (code or result_code_version())
    except (OSError, ValueError):
        return False


def execute(spec: RunSpec, *, log_output: bool = False) -> Path:
    """Run ``spec``'s notebook with papermill; the executed notebook lies next to the record.

    On failure the partial notebook is kept there and the papermill error propagates.
    """
    import papermill as pm

    out = spec.notebook_out
    out.parent.mkdir(parents=True, exist_ok=True)
    env_project = os.environ.setdefault("CPT_PROJECT", str(project_root()))
    pm.execute_notebook(
        str(notebook_path(spec.experiment)),
        str(out),
        parameters={**spec.overrides, "notebook": str(out)},
        kernel_name="python3",
        progress_bar=False,
        log_output=log_output,
        cwd=env_project,
    )
    return spec.record_path


@dataclass
class SweepResult:
    done: list[RunSpec] = field(default_factory=list)
    skipped: list[RunSpec] = field(default_factory=list)
    failed: list[tuple[RunSpec, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        lines = [f"{len(self.done)} run, {len(self.skipped)} skipped, {len(self.failed)} failed"]
        lines += [f"  FAILED {s.label()}: {err} (partial notebook: {s.notebook_out})"
                  for s, err in self.failed]
        return "\n".join(lines)


def prepare_inputs(specs: list[RunSpec]) -> None:
    """Generate the data and pretrain the embedded backbone once, before runs start side by
    side (two runs must not both build them). A failure here is left for the run to report."""
    from cptlib.experiment import dataset_root, split_params

    seen: set[str] = set()
    for spec in specs:
        if spec.experiment == "toy":
            continue
        try:
            exp, _ = split_params({k: v for k, v in spec.params.items() if k != "notebook"})
            key = json.dumps([exp["dataset"], exp["data_size"], exp["data_seed"],
                              exp["data_root"]])
            if key not in seen:
                seen.add(key)
                dataset_root(exp)
            if exp["model"] == "quick" and (exp["model_options"] or {}).get("pretrained"):
                from cptlib.models.quick_backbone import ensure_quick_backbone, quick_backbone_path

                if not quick_backbone_path().exists():
                    print("pretraining the embedded backbone (once; a few minutes) …", flush=True)
                ensure_quick_backbone()
        except Exception as exc:  # noqa: BLE001 — the run itself will fail and say why
            print(f"note: could not prepare inputs of {spec.label()}: {exc}", flush=True)


def default_jobs() -> int:
    """Runs side by side: two one-thread runs get more from two cores than one two-thread
    run (small matrices scale poorly across threads), and they hide kernel start-up."""
    return 2 if (os.cpu_count() or 1) >= 2 else 1


def _execute_isolated(spec: RunSpec, threads: int) -> None:
    """``cpt run`` in a child process with ``threads`` torch threads (one run's failure or
    memory never touches another's)."""
    args = [sys.executable, "-m", "cptlib.cli", "run", spec.experiment, "--profile", spec.profile]
    for key, value in spec.overrides.items():
        if key not in ("profile", "experiment"):
            args += ["-p", f"{key}={json.dumps(value)}"]  # JSON is YAML
    env = {**os.environ, "CPT_TORCH_THREADS": str(threads),
           "CPT_PROJECT": str(project_root())}
    out = subprocess.run(args, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        lines = [line for line in out.stderr.strip().splitlines() if line.strip()]
        raise RuntimeError(lines[-1] if lines else f"exit status {out.returncode}")


def sweep(
    profile: str,
    only: str | None = None,
    *,
    progress: bool | None = None,
    force: bool = False,
    jobs: int | None = None,
) -> SweepResult:
    """Execute every run of ``profile`` that has no up-to-date record; go on past failures.

    ``jobs`` runs execute side by side (default ``default_jobs()``), each with
    ``cores // jobs`` torch threads; ``jobs=1`` runs them one by one in this process's way.
    """
    from cptlib.experiment import result_code_version
    from cptlib.train import show_progress

    specs = profile_runs(profile, only)
    code = result_code_version()
    result = SweepResult()
    todo = []
    for spec in specs:
        (todo if force or not is_done(spec, code) else result.skipped).append(spec)
    jobs = max(1, min(jobs or default_jobs(), len(todo) or 1))
    threads = max(1, (os.cpu_count() or 1) // jobs)
    show = show_progress() if progress is None else progress
    print(f"sweep {profile}: {len(specs)} runs, {len(result.skipped)} up to date, "
          f"{len(todo)} to run ({jobs} at a time)", flush=True)
    prepare_inputs(todo)
    bar = tqdm(total=len(todo), desc=f"sweep {profile}", disable=not show, unit="run")

    def one(spec: RunSpec) -> tuple[RunSpec, float]:
        start = time.perf_counter()
        if jobs == 1:
            execute(spec)
        else:
            _execute_isolated(spec, threads)
        return spec, time.perf_counter() - start

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(one, spec): spec for spec in todo}
        for future in as_completed(futures):
            spec = futures[future]
            bar.update(1)
            try:
                _, seconds = future.result()
            except Exception as exc:  # noqa: BLE001 — a failing run must not stop the sweep
                message = str(exc).strip().splitlines()
                result.failed.append((spec, message[-1] if message else type(exc).__name__))
                print(f"FAILED {spec.label()}: see {spec.notebook_out}", flush=True)
                continue
            result.done.append(spec)
            if not show:
                print(f"done {spec.label()} in {seconds:.0f} s", flush=True)
    bar.close()
    return result


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["c=[1,1,4,1]", "seed=3"]`` → values parsed as YAML (as papermill's ``-y`` does)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"expected KEY=VALUE, got {pair!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def dump(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str)

"""What an experiment notebook's kernel runs: a spec in, a trained model and its record out.

A notebook's parameters are only ``experiment``, ``profile`` and ``overrides`` (papermill injects
them); the spec is rebuilt here, so the notebook, the sweep and ``cpt run`` agree on every value
and on the record's path. A checkpoint next to the record makes a killed run resume to the same
record.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from cptlib import distributed as D
from cptlib import records
from cptlib._env import provenance
from cptlib.choose_c import OBJECTIVES, search_c
from cptlib.config import C_METHODS, TrainConfig
from cptlib.models import count_trainable, load_adapter, save_adapter
from cptlib.models.conditioned import Conditioned
from cptlib.models.precision import precision
from cptlib.runs.inputs import Data, build_model, load_data
from cptlib.runs.spec import RunSpec, parse_overrides
from cptlib.train import evaluate, grid_of, reference_c, train

# The code that determines a run's numbers; editing plots, the CLI or the sweep does not
# invalidate runs.
RESULT_CODE = ("balancers.py", "grads.py", "train.py", "config.py", "metrics.py", "toy.py",
               "choose_c.py", "models", "data", "runs/inputs.py", "runs/worker.py",
               "runs/experiments.py")


def result_code_version() -> str:
    """Hash of the modules in ``RESULT_CODE``: a record made by other code is out of date."""
    package = Path(__file__).resolve().parent.parent
    return records.code_version([package / name for name in RESULT_CODE])


@dataclass
class Run:
    """What a notebook gets back: the spec, the data, the trained model (selected checkpoint)
    and the record."""

    spec: RunSpec
    data: Data
    model: torch.nn.Module
    record: dict[str, Any]

    @property
    def record_path(self) -> Path:
        return self.spec.record_path

    def describe(self) -> str:
        """One Markdown paragraph saying which run this is (the page's first sentence)."""
        p, r = self.spec.params, self.record
        c = "" if p["c"] is None or p["method"] not in C_METHODS else \
            f", c = [{', '.join(f'{v:g}' for v in p['c'])}]"
        return (f"This page shows run `{self.spec.run_id}` of experiment **{self.spec.experiment}**"
                f" at the **{self.spec.profile}** profile: method **{p['method']}**{c}, sampling "
                f"exponent α = {p['alpha']:g}, seed {p['seed']}; model `{p['model']}` with "
                f"{r['trainable_params']:,} trained parameters, {r['resolved']['steps']} steps "
                f"of batch {p['batch_size']} (per-group gradients: "
                f"{r['resolved']['grad_way']}). Its record is "
                f"`results/{self.spec.profile}/{self.spec.experiment}/{self.spec.run_id}.json`.")


def spec_for(experiment: str, profile: str, overrides: dict[str, Any] | None,
             run_id: str | None = None) -> RunSpec:
    """The notebook's spec; ``run_id`` (from the launcher) must match what the kernel builds."""
    spec = RunSpec.build(experiment, profile, overrides or {})
    if run_id is not None and run_id != spec.run_id:
        raise ValueError(f"the kernel built run {spec.run_id} but was started for {run_id}: "
                         "profiles.yaml or the registry changed while the run was queued")
    return spec


def _notebook_name(notebook: str | None) -> str | None:
    """Records name their notebook relative to themselves (no build-machine paths)."""
    return Path(notebook).name if notebook else None


def run_training(experiment: str, profile: str = "smoke",
                 overrides: dict[str, Any] | None = None, *, run_id: str | None = None,
                 notebook: str | None = None, progress: bool | None = None) -> Run:
    """Train one run and write its record and adapter atomically."""
    spec = spec_for(experiment, profile, overrides, run_id)
    D.init_from_env()  # several processes under torchrun (one run, several GPUs); else a no-op
    if os.environ.get("CPT_TORCH_THREADS"):  # set by a sweep running several runs at once
        torch.set_num_threads(int(os.environ["CPT_TORCH_THREADS"]))
    path = spec.record_path
    data = load_data(spec)
    cfg = spec.train_config()
    cfg.resolve_epochs(len(data.train))
    cfg.validate(data.train.n_groups)
    model = run_model(spec, cfg, data)
    ckpt = path.parent / "checkpoints" / f"{path.stem}.pt"

    start = time.perf_counter()
    out = train(model, data.train, data.val, data.test, cfg, checkpoint=ckpt, progress=progress)
    model.load_state_dict(out["best_state"], strict=False)
    extra = {}
    if cfg.conditioned:  # the dial and the c search, at the precision it was trained in
        with precision(model.model, cfg.precision):
            extra = conditioned_metrics(model, data, cfg)
    adapter = path.with_suffix(".safetensors")
    if D.is_main():  # every rank has the same result; one writes it
        save_adapter(model, adapter, c=cfg.c, method=cfg.method, run_id=path.stem)
    D.barrier()
    record = records.RunRecord(
        experiment=spec.experiment,
        profile=spec.profile,
        run_id=spec.run_id,
        params=spec.run_params,
        metrics={
            "val": out["val"],
            "test": out["test"],
            "last_val": out["last_val"],
            "last_test": out["last_test"],
            "selected_step": out["selected_step"],
            **extra,
        },
        history=out["history"],
        group_names=list(data.train.group_names),
        train_group_counts=data.train.train_group_counts.tolist(),
        split_group_counts=data.split_group_counts(),
        trainable_params=count_trainable(model),
        adapter=adapter.name,
        adapter_bytes=adapter.stat().st_size,
        wall_time_s=time.perf_counter() - start,
        train_time_s=out["train_time_s"],
        # What the parameters resolved to here (epochs → steps, grad_way "auto" → a way).
        resolved={"steps": cfg.steps, "warmup_steps": cfg.warmup_steps,
                  "eval_every": cfg.eval_every, "grad_way": out["grad_way"]},
        code_version=result_code_version(),
        provenance=provenance(),
        notebook=_notebook_name(notebook),
    )
    if D.is_main():
        records.write_record(record, path)
        ckpt.unlink(missing_ok=True)
        _remove_if_empty(ckpt.parent)
    D.barrier()
    return Run(spec=spec, data=data, model=model, record=record.to_dict())


def run_model(spec: RunSpec, cfg: TrainConfig, data: Data) -> torch.nn.Module:
    """The spec's model; for a conditioned run wrapped so that its trained tensors are θ(c)."""
    model = build_model(spec, data.train.n_classes)
    if cfg.conditioned:
        model = Conditioned(model, data.train.n_groups, cfg.c_hidden, cfg.c_max)
    return model


# The paths of the dial: each group's c_k raised to these strengths in turn (others at 1).
DIAL_STRENGTHS = (2.0, 4.0, 8.0)


class AtC:
    """Metrics of a conditioned model at a c, each (c, split) evaluated once: the grid, the
    dial's paths and the search share their evaluations."""

    def __init__(self, model: Conditioned, data: Data, cfg: TrainConfig) -> None:
        self.model, self.data, self.cfg = model, data, cfg
        self.cache: dict[tuple[tuple[float, ...], str], dict[str, Any]] = {}

    def __call__(self, c: list[float], split: str) -> dict[str, Any]:
        key = (tuple(float(v) for v in c), split)
        if key not in self.cache:
            self.model.set_c(c)
            self.cache[key] = evaluate(self.model, getattr(self.data, split),
                                       self.data.train.train_group_counts,
                                       self.cfg.eval_batch_size)
        return self.cache[key]

    def both(self, c: list[float]) -> dict[str, Any]:
        return {"c": [float(v) for v in c], "val": self(c, "val"), "test": self(c, "test")}


def conditioned_metrics(model: Conditioned, data: Data, cfg: TrainConfig) -> dict[str, Any]:
    """What a conditioned run's record holds beyond the reference c, at the selected adapter:

    - ``grid``: validation and test metrics at every c of the selection grid;
    - ``paths``: the same along the dial's paths (c = 1, then each group raised to each of
      ``DIAL_STRENGTHS`` up to c_max), for the chapter's curves and the book's dial;
    - ``search``: c chosen on validation (``cptlib.choose_c``) for each objective, with its
      test metrics. τ for ``avg_at_worst_group`` is the validation worst-group accuracy at
      c = 1: the best average among the c that keep c = 1's worst group.

    The model is left at the reference c."""
    start = time.perf_counter()
    n_groups = data.train.n_groups
    at = AtC(model, data, cfg)
    out: dict[str, Any] = {"grid": [at.both(c) for c in grid_of(cfg, n_groups)]}
    strengths = [s for s in DIAL_STRENGTHS if s <= cfg.c_max]
    paths = [{"raised": None, "strength": 1.0, **at.both([1.0] * n_groups)}]
    for k in range(n_groups):
        for s in strengths:
            c = [s if j == k else 1.0 for j in range(n_groups)]
            paths.append({"raised": k, "strength": s, **at.both(c)})
    out["paths"] = paths
    tau = at([1.0] * n_groups, "val")["worst_group_acc"]
    out["search"] = []
    for objective in OBJECTIVES:
        choice = search_c(lambda c: at(c, "val"), n_groups, cfg.c_max, objective=objective,
                          tau=tau if objective == "avg_at_worst_group" else None,
                          evals=cfg.c_search_evals, seed=cfg.seed)
        out["search"].append({"objective": objective, "tau": choice.tau, "evals": choice.evals,
                              **at.both(choice.c)})
    model.set_c(reference_c(cfg, n_groups))
    out["dial_time_s"] = time.perf_counter() - start  # evaluation after training, not training
    return out


def evaluate_record(path: str | Path, c: list[float] | None = None) -> dict[str, Any]:
    """Per-group validation and test metrics of a run's adapter (at ``c`` if conditioned):
    what ``cpt eval`` prints. Accuracies are fractions, groups in the record's order."""
    path = Path(path)
    record = records.read_record(path)
    params = dict(record["params"])
    spec = RunSpec.build(record["experiment"], record["profile"],
                         {k: v for k, v in params.items() if k != "experiment"})
    cfg = spec.train_config()
    data = load_data(spec)
    model = run_model(spec, cfg, data)
    load_adapter(model, path.parent / record["adapter"])
    if cfg.conditioned:
        c = c if c is not None else reference_c(cfg, data.train.n_groups)
        model.set_c(c)
    counts = data.train.train_group_counts
    keep = ("worst_group_acc", "avg_acc", "mean_acc", "per_group_acc", "per_group_n")
    out: dict[str, Any] = {"run_id": record["run_id"], "c": c if c is not None else params["c"],
                           "group_names": record["group_names"]}
    for split in ("val", "test"):
        metrics = evaluate(model, getattr(data, split), counts, cfg.eval_batch_size)
        out[split] = {k: metrics[k] for k in keep}
    return out


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass  # not empty (another run's checkpoint) or already gone


def toy_spec(profile: str = "smoke", overrides: dict[str, Any] | None = None,
             run_id: str | None = None) -> RunSpec:
    return spec_for("toy", profile, overrides, run_id)


def toy_record(spec: RunSpec, trajectories: pd.DataFrame, *,
               notebook: str | None = None) -> dict[str, Any]:
    """Write the toy chapter's record: each (method, c)'s end point and final μ."""
    last = trajectories.sort_values("step").groupby(["method", "c_str"]).tail(1)
    record = records.RunRecord(
        experiment="toy",
        profile=spec.profile,
        run_id=spec.run_id,
        params=spec.run_params,
        metrics={"final": last.to_dict(orient="records")},
        code_version=result_code_version(),
        provenance=provenance(),
        notebook=_notebook_name(notebook),
    )
    records.write_record(record, spec.record_path)
    return record.to_dict()


def main(argv: list[str] | None = None) -> int:
    """``torchrun --nproc_per_node N -m cptlib.runs.worker EXPERIMENT [--profile P] [-p K=V]``:
    one run on several processes (GPUs) without a notebook; rank 0 writes the record."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m cptlib.runs.worker", description=main.__doc__)
    p.add_argument("experiment")
    p.add_argument("--profile", default="quick")
    p.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    run = run_training(args.experiment, args.profile, parse_overrides(args.param))
    if D.is_main():
        print(run.record_path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What an experiment notebook calls: parameters in, a trained model and a run record out.

Every experiment notebook has the same parameters (the smoke scale by default); profiles in
``profiles.yaml`` override them. A notebook never branches on the profile: this module turns
parameters into data, model, training and record, the same way at every scale.
"""

from __future__ import annotations

import importlib
import os
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from cptlib import records
from cptlib.paths import cache_dir, data_root, project_root
from cptlib.train import TrainConfig, train

TEXT_DATASETS = ("multinli", "civilcomments", "synthetic-text")
EMBEDDED = {"synthetic": "cptlib.data.synthetic", "synthetic-text": "cptlib.data.synthetic_text"}
# Tiny generated stand-ins of the embedded data for the smoke scale (per train group; val/test).
SMOKE_COUNTS = {"synthetic": ([48, 8, 4, 24], 8), "synthetic-text": ([48, 8, 4, 24], 8)}

# The notebook parameters that are not TrainConfig fields, with their defaults.
EXPERIMENT_DEFAULTS: dict[str, Any] = {
    "experiment": "synthetic",
    "profile": "smoke",
    "dataset": "synthetic",
    "data_root": None,  # default: $CPT_DATA/<dataset>
    "data_size": "full",  # "full", or "smoke" for a tiny stand-in generated locally
    "data_seed": 0,
    "model": "quick",
    "model_options": {},
    "class_names": None,  # CLIP prompts
    "img_size": 224,
    "results_dir": "results",
}
TRAIN_FIELDS = {f.name for f in fields(TrainConfig)}
# The code that determines a run's numbers; editing plots or the CLI does not invalidate runs.
RESULT_CODE = ("balancers.py", "grads.py", "train.py", "experiment.py", "metrics.py", "toy.py",
               "models", "data")


def result_code_version() -> str:
    """Hash of the modules in ``RESULT_CODE``: a record made by other code is out of date."""
    package = Path(__file__).resolve().parent
    return records.code_version([package / name for name in RESULT_CODE])


def notebook_params(namespace: dict[str, Any]) -> dict[str, Any]:
    """The run parameters among a notebook's variables (its ``parameters`` cell)."""
    return {k: v for k, v in namespace.items() if k in TRAIN_FIELDS or k in EXPERIMENT_DEFAULTS}


def split_params(params: dict[str, Any]) -> tuple[dict[str, Any], TrainConfig]:
    """Separate experiment parameters from the training configuration; reject unknown keys."""
    unknown = set(params) - TRAIN_FIELDS - set(EXPERIMENT_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown parameter(s): {', '.join(sorted(unknown))}")
    exp = {**EXPERIMENT_DEFAULTS, **{k: v for k, v in params.items() if k in EXPERIMENT_DEFAULTS}}
    cfg = TrainConfig(**{k: v for k, v in params.items() if k in TRAIN_FIELDS})
    if cfg.c is not None:
        cfg.c = [float(v) for v in cfg.c]
    return exp, cfg


def dataset_root(exp: dict[str, Any]) -> Path:
    """Make sure the data exists and return its folder.

    Embedded data is generated on first use; at smoke size real datasets are replaced by a tiny
    stand-in in their own layout, so the real loader runs without a download.
    """
    name, size, seed = exp["dataset"], exp["data_size"], int(exp["data_seed"])
    if size not in ("full", "smoke"):
        raise ValueError(f"data_size must be 'full' or 'smoke', got {size!r}")
    if size == "smoke":
        if name in EMBEDDED:
            module = importlib.import_module(EMBEDDED[name])
            # The generator's version is part of the folder: a cache made by older drawing or
            # template code is never mistaken for today's data.
            version = getattr(module, "DRAWING_VERSION", getattr(module, "TEMPLATE_VERSION", 0))
            root = cache_dir() / "smoke" / f"{name}-{seed}-v{version}"
            counts, n_eval = SMOKE_COUNTS[name]
            if not (root / ".cpt-complete.json").exists():
                module.generate(root, seed=seed, counts=counts, n_eval_per_group=n_eval,
                                progress=False)
            return root
        from cptlib.data.fakes import write_fake

        # write_fake keeps an identical stand-in and replaces one made by other code.
        return write_fake(name, cache_dir() / "smoke" / f"{name}-{seed}", seed=seed)
    root = Path(exp["data_root"]) if exp["data_root"] else data_root() / name
    if name in EMBEDDED:
        # ensure_*: generate if missing; refuse a folder made with other parameters or by an
        # older generator instead of training on it.
        ensure = "ensure_" + EMBEDDED[name].rsplit(".", 1)[1]
        getattr(importlib.import_module(EMBEDDED[name]), ensure)(root, seed=seed, progress=False)
    return root


def transform_for(exp: dict[str, Any], split: str):
    """The split's preprocessing at the model's input size (None: the dataset's own default)."""
    if exp["dataset"] in TEXT_DATASETS or exp["dataset"] in EMBEDDED:
        return None
    from cptlib.data.transforms import image_transform

    kwargs = {}
    if str(exp["model"]).startswith("clip:"):
        from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

        kwargs = {"mean": OPENAI_DATASET_MEAN, "std": OPENAI_DATASET_STD}
    return image_transform(split, img_size=int(exp["img_size"]), **kwargs)


@dataclass
class Data:
    train: Any
    val: Any
    test: Any
    root: Path


def load_data(exp: dict[str, Any]) -> Data:
    from cptlib.data import load

    root = dataset_root(exp)
    splits = {
        s: load(exp["dataset"], root, s, transform_for(exp, s)) for s in ("train", "val", "test")
    }
    return Data(root=root, **splits)


def build(exp: dict[str, Any], data: Data, seed: int) -> torch.nn.Module:
    from cptlib.models import build_model

    torch.manual_seed(seed)
    options = dict(exp["model_options"] or {})
    if exp["class_names"] is not None:
        options["class_names"] = list(exp["class_names"])
    return build_model(exp["model"], data.train.n_classes, **options)


@dataclass
class Run:
    """What a notebook gets back: the data, the trained model (best checkpoint) and the record."""

    data: Data
    model: torch.nn.Module
    record: dict
    record_path: Path


def resolve(params: dict[str, Any]) -> tuple[dict[str, Any], TrainConfig, dict[str, Any], Path]:
    """Parameters → (experiment params, training config, recorded params, record path).

    The sweep calls this too, so "does this run's record exist?" has one answer.
    """
    exp, cfg = split_params(params)
    record_params = {**exp, **{f: getattr(cfg, f) for f in sorted(TRAIN_FIELDS)}}
    for key in ("results_dir", "profile"):
        record_params.pop(key)
    path = records.record_path(results_dir(exp["results_dir"]), exp["profile"], exp["experiment"],
                               record_params)
    return exp, cfg, record_params, path


def results_dir(value: str | Path) -> Path:
    """Relative results folders are relative to the project, wherever the kernel runs."""
    path = Path(value)
    return path if path.is_absolute() else project_root() / path


def run(
    params: dict[str, Any], *, notebook: str | None = None, progress: bool | None = None
) -> Run:
    """Train one run from notebook parameters and write its record atomically.

    A checkpoint next to the record makes the same call resume after a crash.
    """
    exp, cfg, record_params, path = resolve(params)
    if os.environ.get("CPT_TORCH_THREADS"):  # set by a sweep running several runs at once
        torch.set_num_threads(int(os.environ["CPT_TORCH_THREADS"]))
    data = load_data(exp)
    cfg.resolve_epochs(len(data.train))
    cfg.validate(data.train.n_groups)
    model = build(exp, data, cfg.seed)
    ckpt = path.parent / "checkpoints" / f"{path.stem}.pt"

    start = time.perf_counter()
    out = train(model, data.train, data.val, data.test, cfg, checkpoint=ckpt, progress=progress)
    model.load_state_dict(out["best_state"], strict=False)
    from cptlib.models import count_trainable, save_adapter

    adapter = path.with_suffix(".safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_adapter(model, adapter, c=cfg.c, method=cfg.method, run_id=path.stem)
    record = {
        "experiment": exp["experiment"],
        "profile": exp["profile"],
        "run_id": path.stem,
        "params": record_params,
        "metrics": {
            "val": out["val"],
            "test": out["test"],
            "last_val": out["last_val"],
            "last_test": out["last_test"],
            "selected_step": out["selected_step"],
        },
        "history": out["history"],
        "group_names": data.train.group_names,
        "train_group_counts": data.train.train_group_counts.tolist(),
        "trainable_params": count_trainable(model),
        "adapter": adapter.name,
        "adapter_bytes": adapter.stat().st_size,
        "wall_time_s": time.perf_counter() - start,
        "train_time_s": out["train_time_s"],
        # What the parameters resolved to here (epochs → steps, grad_way "auto" → a way).
        "resolved": {"steps": cfg.steps, "warmup_steps": cfg.warmup_steps,
                     "eval_every": cfg.eval_every, "grad_way": out["grad_way"]},
        "code_version": result_code_version(),
        "provenance": records.provenance(),
        "notebook": notebook,
    }
    records.write_record(record, path)
    ckpt.unlink(missing_ok=True)
    return Run(data=data, model=model, record=record, record_path=path)


TOY_PARAMS = ("profile", "cs", "methods", "steps", "lr", "seed", "results_dir")


def toy_params(namespace: dict[str, Any]) -> dict[str, Any]:
    """The toy notebook's parameters among its variables."""
    return {k: namespace[k] for k in TOY_PARAMS if k in namespace}


def toy_record(params: dict[str, Any], trajectories, *, notebook: str | None = None) -> dict:
    """Write the toy chapter's run record: each (method, c)'s end point and final μ."""
    from cptlib.sweep import record_path_for

    path = record_path_for("toy", params)
    last = trajectories.sort_values("step").groupby(["method", "c_str"]).tail(1)
    record = {
        "experiment": "toy",
        "profile": params["profile"],
        "run_id": path.stem,
        "params": {k: v for k, v in params.items() if k not in ("profile", "results_dir")},
        "metrics": {"final": last.to_dict(orient="records")},
        "code_version": result_code_version(),
        "provenance": records.provenance(),
        "notebook": notebook,
    }
    records.write_record(record, path)
    return record


# The name notebooks import: their own parameter ``experiment`` would shadow the module.
run_experiment = run

"""A run's inputs: its data (generated, stood in or loaded) and its model, from its spec.

Embedded data is generated on first use; at smoke size a real dataset is replaced by a tiny
stand-in in its own layout, so the real loader runs without a download. ``prepare`` makes the
inputs of many specs once, before runs start side by side (two runs must never both build them).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cptlib.data import load
from cptlib.data.fakes import write_fake
from cptlib.data.synthetic import MARKER
from cptlib.data.transforms import image_transform
from cptlib.models import build_model as _build_model
from cptlib.models.quick_backbone import ensure_quick_backbone, quick_backbone_path
from cptlib.paths import cache_dir, data_root
from cptlib.runs.experiments import EMBEDDED_DATASETS, TEXT_DATASETS
from cptlib.runs.spec import RunSpec

_EMBEDDED_MODULES = {"synthetic": "cptlib.data.synthetic",
                     "synthetic-text": "cptlib.data.synthetic_text"}
# Tiny generated stand-ins of the embedded data for the smoke scale (per train group; val/test).
SMOKE_COUNTS = {"synthetic": ([48, 8, 4, 24], 8), "synthetic-text": ([48, 8, 4, 24], 8)}


@dataclass
class Data:
    train: Any
    val: Any
    test: Any
    root: Path

    def split_group_counts(self) -> dict[str, list[int]]:
        """Items per group of each split (what the chapters show about the data)."""
        return {s: getattr(self, s).group_counts.tolist() for s in ("train", "val", "test")}


def dataset_root(spec: RunSpec) -> Path:
    """Make sure the spec's data exists and return its folder."""
    p = spec.params
    name, size, seed = p["dataset"], p["data_size"], int(p["data_seed"])
    if size == "smoke":
        if name in EMBEDDED_DATASETS:
            module = importlib.import_module(_EMBEDDED_MODULES[name])
            # The generator's version is part of the folder: a cache made by older drawing or
            # template code is never mistaken for today's data.
            version = getattr(module, "DRAWING_VERSION", getattr(module, "TEMPLATE_VERSION", 0))
            root = cache_dir() / "smoke" / f"{name}-{seed}-v{version}"
            counts, n_eval = SMOKE_COUNTS[name]
            if not (root / MARKER).exists():
                module.generate(root, seed=seed, counts=counts, n_eval_per_group=n_eval,
                                progress=False)
            return root
        # write_fake keeps an identical stand-in and replaces one made by other code.
        return write_fake(name, cache_dir() / "smoke" / f"{name}-{seed}", seed=seed)
    root = Path(p["data_root"]) if p["data_root"] else data_root() / name
    if name in EMBEDDED_DATASETS:
        # ensure_*: generate if missing; refuse a folder made with other parameters or by an
        # older generator instead of training on it.
        module_name = _EMBEDDED_MODULES[name]
        ensure = "ensure_" + module_name.rsplit(".", 1)[1]
        getattr(importlib.import_module(module_name), ensure)(root, seed=seed, progress=False)
    return root


def transform_for(spec: RunSpec, split: str):
    """The split's preprocessing at the model's input size (None: the dataset's own default)."""
    p = spec.params
    if p["dataset"] in TEXT_DATASETS or p["dataset"] in EMBEDDED_DATASETS:
        return None
    kwargs = {}
    if str(p["model"]).startswith("clip:"):
        from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD  # lazy: CLIP only

        kwargs = {"mean": OPENAI_DATASET_MEAN, "std": OPENAI_DATASET_STD}
    return image_transform(split, img_size=int(p["img_size"]), **kwargs)


def load_data(spec: RunSpec) -> Data:
    root = dataset_root(spec)
    splits = {s: load(spec.params["dataset"], root, s, transform_for(spec, s))
              for s in ("train", "val", "test")}
    return Data(root=root, **splits)


def build_model(spec: RunSpec, n_classes: int) -> torch.nn.Module:
    """The spec's model, its random parts drawn from the run's seed."""
    p = spec.params
    torch.manual_seed(p["seed"])
    options = dict(p["model_options"] or {})
    if p["class_names"] is not None:
        options["class_names"] = list(p["class_names"])
    return _build_model(p["model"], n_classes, **options)


def needs_quick_backbone(spec: RunSpec) -> bool:
    p = spec.params
    return p.get("model") == "quick" and bool((p.get("model_options") or {}).get("pretrained"))


def prepare(specs: list[RunSpec], log=print) -> list[tuple[RunSpec, str]]:
    """Generate each distinct dataset and pretrain the embedded backbone once.

    Returns the specs whose inputs could not be made, with the reason (their runs are then
    reported as failed without being started).
    """
    done: dict[str, str | None] = {}
    failed = []
    for spec in specs:
        if spec.info.runner != "train":
            continue
        p = spec.params
        keys = [repr((p["dataset"], p["data_size"], p["data_seed"], p["data_root"]))]
        if needs_quick_backbone(spec):
            keys.append("quick-backbone")
        for key in keys:
            if key not in done:
                try:
                    if key == "quick-backbone":
                        if not quick_backbone_path().exists():
                            log("pretraining the embedded backbone (once; a few minutes) …")
                        ensure_quick_backbone()
                    else:
                        dataset_root(spec)
                    done[key] = None
                except (ValueError, OSError) as err:
                    done[key] = str(err)
            if done[key] is not None:
                failed.append((spec, done[key]))
                break
    return failed

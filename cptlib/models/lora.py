"""LoRA (Hu et al. 2021, through peft) on a frozen timm ViT's attention, plus a new head.

The comparison method of the book's efficiency chapter: instead of prompts, a rank-r update
B·A of each ``qkv`` projection (B starts at zero, so the untrained model equals the backbone
with the new head). Trainable: the LoRA matrices (r · 4D per block for a width-D ViT) and the
head; nothing else. The backbone stays in eval mode; LoRA's own dropout (``lora_dropout``, 0 by
default) is the only stochastic part.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from cptlib.models.base import CPTModel, check_dropout, check_num_classes, count_params, new_head
from cptlib.models.pretrained import create_timm
from cptlib.models.vit import check_vit, timm_data_config


class LoRAViT(CPTModel):
    """A timm ViT with peft LoRA adapters on its attention and a new linear head."""

    method = "lora"

    def __init__(self, vit: nn.Module, spec: dict[str, Any]) -> None:
        import peft

        super().__init__(spec)
        check_vit(vit, spec["name"])
        self._backbone_params = count_params(vit)  # before LoRA adds its matrices
        config = peft.LoraConfig(
            r=spec["lora_r"],
            lora_alpha=spec["lora_alpha"],
            lora_dropout=spec["lora_dropout"],
            target_modules=list(spec["target_modules"]),
        )
        self.backbone = peft.get_peft_model(vit, config)  # freezes all but the LoRA matrices
        self.head = new_head(vit.embed_dim, self.num_classes)
        self.train()  # the nn.Module default, with the frozen part in eval mode

    @property
    def vit(self) -> nn.Module:
        """The timm ViT itself, with the LoRA layers injected in place."""
        return self.backbone.get_base_model()

    def train(self, mode: bool = True) -> LoRAViT:
        """Backbone in eval mode, except LoRA's own dropout (the method's stochastic part)."""
        super().train(mode)
        for name, module in self.backbone.named_modules():
            if name.endswith("lora_dropout"):
                module.train(mode)
        return self

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens after the final norm (B, N, D)."""
        return self.vit.forward_features(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """CLS pooling as timm does it, then the new head."""
        return self.head(self.vit.forward_head(x, pre_logits=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes) for images ``x``."""
        return self.forward_head(self.forward_features(x))

    def backbone_param_count(self) -> int:
        """The timm ViT's parameters, without the LoRA matrices and the head."""
        return self._backbone_params

    @property
    def data_config(self) -> dict[str, Any]:
        """Input size and normalisation the backbone expects."""
        return timm_data_config(self.vit)


def build_lora(
    name: str,
    num_classes: int,
    lora_r: int = 8,
    lora_alpha: float = 16,
    lora_dropout: float = 0.0,
    target_modules: Sequence[str] = ("qkv",),
    pretrained: bool = False,
    **timm_kwargs: Any,
) -> LoRAViT:
    """LoRA on ``lora:<timm vit name>``; ``timm_kwargs`` go to ``timm.create_model``."""
    if isinstance(lora_r, bool) or not isinstance(lora_r, int) or lora_r < 1:
        raise ValueError(f"{name}: lora_r must be a positive int, got {lora_r!r}")
    spec = {
        "name": name,
        "num_classes": check_num_classes(num_classes),
        "lora_r": lora_r,
        "lora_alpha": lora_alpha,
        "lora_dropout": check_dropout(lora_dropout, "lora_dropout"),
        "target_modules": list(target_modules),
        "pretrained": bool(pretrained),
        **timm_kwargs,
    }
    vit = create_timm(name.removeprefix("lora:"), bool(pretrained), num_classes=0, **timm_kwargs)
    return LoRAViT(vit, spec)

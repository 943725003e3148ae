"""A timm ResNet, fully fine-tuned: the paper's non-transformer setting (ResNet-50).

Every parameter trains (a new head with ``num_classes`` outputs replaces the ImageNet one), and
BatchNorm stays in train mode, as in the authors' code. Samples therefore interact in the
forward pass (batch statistics), so per-group gradients from per-group sub-batches ("split")
are not exactly those of the whole batch: the model says so with ``batch_interacts = True`` and
the training loop should use the "naive" way. Adapters also store the BatchNorm running
statistics (``adapter_buffers = True``), which the evaluation-mode logits depend on.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cptlib.models.base import CPTModel, check_num_classes, count_params
from cptlib.models.pretrained import create_timm
from cptlib.models.vit import timm_data_config


class FineTunedResNet(CPTModel):
    """A timm ResNet whose every parameter trains (no frozen part, no eval-mode override)."""

    method = "full-finetune"
    batch_interacts = True
    adapter_buffers = True
    frozen_modules = ()

    def __init__(self, backbone: nn.Module, spec: dict[str, Any]) -> None:
        super().__init__(spec)
        self.backbone = backbone.requires_grad_(True)
        self.train()  # the nn.Module default (BatchNorm in train mode)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map (B, C, h, w)."""
        return self.backbone.forward_features(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Global pooling and the new linear head."""
        return self.backbone.forward_head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes) for images ``x``."""
        return self.backbone(x)

    def backbone_param_count(self) -> int:
        """Parameters of the ResNet without its classification head."""
        return count_params(self.backbone) - count_params(self.backbone.get_classifier())

    @property
    def data_config(self) -> dict[str, Any]:
        """Input size and normalisation the backbone expects."""
        return timm_data_config(self.backbone)


def build_resnet(
    name: str, num_classes: int, pretrained: bool = False, **timm_kwargs: Any
) -> FineTunedResNet:
    """A fully fine-tuned timm ResNet ``name`` (``resnet50`` in the paper profile)."""
    spec = {
        "name": name,
        "num_classes": check_num_classes(num_classes),
        "pretrained": bool(pretrained),
        **timm_kwargs,
    }
    backbone = create_timm(name, bool(pretrained), num_classes=num_classes, **timm_kwargs)
    return FineTunedResNet(backbone, spec)

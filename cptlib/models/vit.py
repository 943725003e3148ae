"""Visual prompt tuning (VPT, Jia et al. 2022) on a frozen timm ``VisionTransformer``.

Shallow: T learnable tokens right after the prefix tokens (CLS, and register tokens if any),
inserted after the positional embedding (they have none of their own). Deep: in addition, before
every later block the T prompt slots are *replaced* by that block's own prompts. A new linear
head reads the final CLS token (after the final norm). Only prompts and head train; the backbone
stays in eval mode, so prompt dropout is the only stochastic part. With T = 0 the model computes
exactly what timm's own forward computes with the same head.

The prompts are inserted after ``norm_pre`` (identity for the original ViTs), i.e. in the space
the blocks read, which is also where the deep prompts of later blocks live.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from cptlib.models.base import (
    CPTModel,
    check_dropout,
    check_num_classes,
    check_prompt_tokens,
    count_params,
    freeze,
    new_head,
)
from cptlib.models.pretrained import QUICK_WEIGHTS, create_timm, load_local

Block = Callable[[torch.Tensor], torch.Tensor]


def prompt_init_range(patch_size: tuple[int, int], width: int) -> float:
    """VPT's uniform init bound v = sqrt(6 / (3·p_h·p_w + D)) (Xavier over a patch's inputs)."""
    return math.sqrt(6.0 / (3 * patch_size[0] * patch_size[1] + width))


class PromptTokens(nn.Module):
    """The learnable prompts of VPT: ``n_layers`` × T tokens of width D, and their dropout.

    Layer 0's prompts are inserted at the input; layer i ≥ 1's replace the prompt slots before
    block i (deep VPT). One parameter, ``prompts`` of shape (n_layers, T, D), so an adapter holds
    one tensor. Dropout acts on the per-sample expanded prompts (independent masks per sample).
    """

    def __init__(
        self, n_layers: int, tokens: int, width: int, init_range: float, dropout: float
    ) -> None:
        super().__init__()
        self.prompts = nn.Parameter(torch.empty(n_layers, tokens, width))
        nn.init.uniform_(self.prompts, -init_range, init_range)
        self.dropout = nn.Dropout(dropout)
        self._taps: list[tuple[int, torch.Tensor]] | None = None

    @property
    def tokens(self) -> int:
        """Prompt length T."""
        return self.prompts.shape[1]

    @contextmanager
    def capture(self) -> Iterator[list[tuple[int, torch.Tensor]]]:
        """Record ``(layer, per-sample prompts (B, T, D))`` for every use inside the block.

        Why: samples do not interact in the frozen backbone, so the gradient that reaches sample
        b's copy of the prompts is sample b's own; summing those copies per group gives
        per-group prompt gradients from one backward pass (``cptlib.grads``, way "expand").
        The copies are taken before dropout, where they are still exact copies of the prompts.
        """
        if self._taps is not None:
            raise RuntimeError("PromptTokens.capture() is already active")
        self._taps = []
        try:
            yield self._taps
        finally:
            self._taps = None

    def _batch(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        prompts = self.prompts[layer].to(x.dtype).expand(x.shape[0], -1, -1)
        if self._taps is not None:
            self._taps.append((layer, prompts))
        return self.dropout(prompts)

    def insert(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """Insert layer 0's prompts into ``x`` (B, N, D) after its first ``start`` tokens."""
        return torch.cat([x[:, :start], self._batch(0, x), x[:, start:]], dim=1)

    def replace(self, x: torch.Tensor, layer: int, start: int) -> torch.Tensor:
        """Overwrite the T prompt slots of ``x`` (after ``start`` tokens) with ``layer``'s."""
        end = start + self.tokens
        return torch.cat([x[:, :start], self._batch(layer, x), x[:, end:]], dim=1)

    def run(self, x: torch.Tensor, blocks: Iterable[Block], start: int) -> torch.Tensor:
        """Insert the prompts, then run ``blocks``, replacing the slots before each deep layer."""
        x = self.insert(x, start)
        for i, block in enumerate(blocks):
            if 0 < i < self.prompts.shape[0]:
                x = self.replace(x, i, start)
            x = block(x)
        return x


def check_vit(backbone: nn.Module, name: str) -> None:
    """Refuse timm models whose forward this module does not reproduce, saying why."""
    from timm.models.vision_transformer import VisionTransformer

    if not isinstance(backbone, VisionTransformer):
        kind = type(backbone).__name__
        raise ValueError(f"{name}: VPT needs a timm VisionTransformer, got {kind}")
    for step in ("forward_features", "_pos_embed", "forward_head"):
        if getattr(type(backbone), step) is not getattr(VisionTransformer, step):
            raise ValueError(
                f"{name}: {type(backbone).__name__} overrides {step}; VPT here re-runs "
                "VisionTransformer's own steps and would not match it"
            )
    if backbone.cls_token is None:
        raise ValueError(f"{name}: VPT's head reads the CLS token, but this model has none")
    if backbone.global_pool != "token":
        raise ValueError(
            f"{name}: global_pool={backbone.global_pool!r} is not supported (the VPT head reads "
            "the CLS token); pass global_pool='token' if the checkpoint allows it"
        )


def patch_size_of(backbone: nn.Module) -> tuple[int, int]:
    """The (h, w) patch size of a timm ViT's patch embedding (stride of a conv stem)."""
    size = getattr(backbone.patch_embed, "patch_size", None)
    if size is None:
        raise ValueError(f"cannot read the patch size of {type(backbone.patch_embed).__name__}")
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


class VPTViT(CPTModel):
    """A frozen timm ``VisionTransformer`` with VPT prompts and a new linear head."""

    def __init__(
        self,
        backbone: nn.Module,
        spec: dict[str, Any],
        prompt_tokens: int,
        deep: bool,
        prompt_dropout: float,
    ) -> None:
        super().__init__(spec)
        check_vit(backbone, spec["name"])
        self.method = "vpt-deep" if deep else "vpt-shallow"
        self.backbone = freeze(backbone)
        width = backbone.embed_dim
        n_layers = len(backbone.blocks) if deep else 1
        bound = prompt_init_range(patch_size_of(backbone), width)
        self.prompt = PromptTokens(n_layers, prompt_tokens, width, bound, prompt_dropout)
        self.head = new_head(width, self.num_classes)
        self.train()  # the nn.Module default, with the frozen part in eval mode

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens after the final norm, (B, prefix + T + patches, D); timm's steps + prompts."""
        vit = self.backbone
        x = vit.patch_embed(x)
        x = vit._pos_embed(x)  # CLS / register tokens, positional embedding, pos_drop
        x = vit.patch_drop(x)
        x = vit.norm_pre(x)
        x = self.prompt.run(x, vit.blocks, start=vit.num_prefix_tokens)
        return vit.norm(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Logits from the tokens: timm's CLS pooling (+ fc_norm, head_drop), then the head."""
        return self.head(self.backbone.forward_head(x, pre_logits=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes) for images ``x`` (B, 3, H, W)."""
        return self.forward_head(self.forward_features(x))

    def backbone_param_count(self) -> int:
        """The timm ViT's parameters (built with ``num_classes=0``: no ImageNet head)."""
        return count_params(self.backbone)

    @property
    def data_config(self) -> dict[str, Any]:
        """Input size and normalisation the backbone expects."""
        return timm_data_config(self.backbone)


def timm_data_config(model: nn.Module) -> dict[str, Any]:
    """``{"image_size", "mean", "std"}`` of a timm model (ImageNet statistics by default)."""
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    cfg = getattr(model, "pretrained_cfg", None) or {}
    embed = getattr(model, "patch_embed", None)
    size = getattr(embed, "img_size", None) or cfg.get("input_size", (3, 224, 224))[1:]
    size = (size, size) if isinstance(size, int) else tuple(int(s) for s in size)
    return {
        "image_size": size,
        "mean": tuple(cfg.get("mean", IMAGENET_DEFAULT_MEAN)),
        "std": tuple(cfg.get("std", IMAGENET_DEFAULT_STD)),
    }


def build_vpt(
    name: str,
    num_classes: int,
    prompt_tokens: int = 10,
    deep: bool = True,
    prompt_dropout: float = 0.1,
    pretrained: bool = False,
    **timm_kwargs: Any,
) -> VPTViT:
    """VPT on the timm ViT ``name``; ``timm_kwargs`` go to ``timm.create_model``."""
    num_classes = check_num_classes(num_classes)
    spec = {
        "name": name,
        "num_classes": num_classes,
        "prompt_tokens": check_prompt_tokens(prompt_tokens),
        "deep": bool(deep),
        "prompt_dropout": check_dropout(prompt_dropout),
        "pretrained": bool(pretrained),
        **timm_kwargs,
    }
    backbone = create_timm(name, bool(pretrained), num_classes=0, **timm_kwargs)
    return VPTViT(backbone, spec, prompt_tokens, bool(deep), prompt_dropout)


def build_quick(
    name: str,
    num_classes: int,
    prompt_tokens: int = 5,
    deep: bool = True,
    prompt_dropout: float = 0.1,
    pretrained: bool = False,
    backbone_cfg: dict[str, Any] | None = None,
) -> VPTViT:
    """VPT on the study's embedded small backbone (``cptlib.models.quick_backbone``).

    ``pretrained=True`` loads the file ``ensure_quick_backbone()`` returns (building it on first
    use); ``backbone_cfg`` overrides the architecture for random-weight smoke models only.
    """
    # lazy: the embedded backbone (and its synthetic pretraining data) only for "quick"
    from cptlib.models.quick_backbone import create_quick_backbone, ensure_quick_backbone

    if pretrained and backbone_cfg:
        raise ValueError("quick: backbone_cfg changes the architecture; needs pretrained=False")
    spec = {
        "name": name,
        "num_classes": check_num_classes(num_classes),
        "prompt_tokens": check_prompt_tokens(prompt_tokens),
        "deep": bool(deep),
        "prompt_dropout": check_dropout(prompt_dropout),
        "pretrained": bool(pretrained),
    }
    if backbone_cfg:
        spec["backbone_cfg"] = dict(backbone_cfg)
    backbone = create_quick_backbone(backbone_cfg)
    if pretrained:
        load_local(QUICK_WEIGHTS, backbone, ensure_quick_backbone())
    return VPTViT(backbone, spec, prompt_tokens, bool(deep), prompt_dropout)

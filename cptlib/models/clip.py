"""CoOp (Zhou et al. 2022) on a frozen open_clip CLIP: learnable text context, class names, cosine.

The text prompt of class k is "<ctx_1> … <ctx_M> <class name k>." where the M context vectors
are learned (shared by the classes) and the rest is the class name's token embeddings. Logits
are exp(logit_scale) · cos(image feature, text feature of class k) (+ logit_bias if the model has
one). Only the context trains (M · text width: 16 · 768 = 12,288 for ViT-L/14), plus optional
VPT-style visual prompts on a ViT image tower (``visual_prompt_tokens``; the open_clip
``VisionTransformer`` is run block by block with the same ``PromptTokens`` as the timm VPT).
``zero_shot=True`` (or ``zero_shot_logits``) gives plain zero-shot CLIP with the hand-written
prompt "a photo of a {class name}." from the same object: the baseline with nothing trained.

The frozen text embeddings are looked up from the token ids at every forward (not cached), so
loading other CLIP weights into ``model.clip`` later is picked up.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cptlib.models.base import (
    CPTModel,
    check_dropout,
    check_num_classes,
    check_prompt_tokens,
    count_params,
    freeze,
)
from cptlib.models.pretrained import create_open_clip
from cptlib.models.vit import PromptTokens, prompt_init_range

ZERO_SHOT_TEMPLATE = "a photo of a {}."
_PLACEHOLDER = "X"  # CoOp's stand-in token for the learned context in the tokenized prompt
CTX_INIT_STD = 0.02


class CoOpCLIP(CPTModel):
    """A frozen open_clip ``CLIP`` with a learned text context (and optional visual prompts)."""

    frozen_modules = ("clip",)

    def __init__(
        self,
        clip: nn.Module,
        tokenizer: Any,
        spec: dict[str, Any],
        visual_prompt_tokens: int = 0,
        visual_deep: bool = True,
        prompt_dropout: float = 0.1,
    ) -> None:
        super().__init__(spec)
        self.clip = freeze(clip)
        self.zero_shot = bool(spec["zero_shot"])
        names, n_ctx = list(spec["class_names"]), int(spec["n_ctx"])
        self.register_buffer("prompt_ids", _coop_ids(tokenizer, names, n_ctx), persistent=False)
        self.text_length = _causal_length(clip, self.prompt_ids)
        zs = [ZERO_SHOT_TEMPLATE.format(n) for n in names]
        self.register_buffer("zero_shot_ids", _token_ids(tokenizer, zs), persistent=False)
        width = clip.token_embedding.weight.shape[1]
        self.ctx = nn.Parameter(torch.randn(n_ctx, width) * CTX_INIT_STD)
        if spec["ctx_init"]:
            self._init_context(tokenizer, spec["ctx_init"])
        self.visual_prompt = (
            _visual_prompts(clip.visual, visual_prompt_tokens, visual_deep, prompt_dropout)
            if visual_prompt_tokens
            else None
        )
        if self.zero_shot:
            self.ctx.requires_grad_(False)
            self.method = "zero-shot"
        else:
            self.method = "coop+vpt" if self.visual_prompt is not None else "coop"
        self.train()  # the nn.Module default, with the frozen part in eval mode

    def shared_params(self) -> list[nn.Parameter]:
        """The parameters every sample uses through the per-class text features (the context).

        Why: their per-group gradients do not come per sample (the text tower runs once per
        class, not per image); ``cptlib.grads`` way "expand" gets them from K batched
        vector-Jacobian products of the logits, one backward through the text tower.
        """
        return [self.ctx] if self.ctx.requires_grad else []

    def _init_context(self, tokenizer: Any, text: str) -> None:
        """Set the LAST context vectors to the token embeddings of the hand-written ``text``."""
        ids = tokenizer.encode(text)
        if len(ids) > self.ctx.shape[0]:
            raise ValueError(
                f"ctx_init {text!r} has {len(ids)} tokens, more than n_ctx={self.ctx.shape[0]}"
            )
        with torch.no_grad():
            emb = self.clip.token_embedding.weight[torch.tensor(ids)]
            self.ctx[self.ctx.shape[0] - len(ids) :] = emb

    def _encode_embedded_text(self, embeddings: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """CLIP's text tower from token *embeddings* (``CLIP.encode_text`` after its lookup),
        on the first ``text_length`` positions only (see ``_causal_length``)."""
        from open_clip.transformer import text_global_pool

        clip, n = self.clip, self.text_length
        cast = clip.transformer.get_cast_dtype()
        embeddings, ids = embeddings[:, :n], ids[:, :n]
        x = embeddings.to(cast) + clip.positional_embedding[:n].to(cast)
        mask = clip.attn_mask[:n, :n] if clip.attn_mask is not None else None
        x = clip.transformer(x, attn_mask=mask)
        x = clip.ln_final(x)
        eos = getattr(clip, "text_eos_id", None)
        x = text_global_pool(x, ids, clip.text_pool_type, eos_token_id=eos)
        proj = clip.text_projection
        if proj is not None:
            x = proj(x) if isinstance(proj, nn.Linear) else x @ proj
        return x

    def text_features(self) -> torch.Tensor:
        """Normalised text features (C, E) of the class prompts with the learned context."""
        ids = self.prompt_ids
        frozen = self.clip.token_embedding(ids)
        ctx = self.ctx.to(frozen.dtype).unsqueeze(0).expand(ids.shape[0], -1, -1)
        start = 1  # after the start-of-text token
        emb = torch.cat([frozen[:, :start], ctx, frozen[:, start + ctx.shape[1] :]], dim=1)
        return F.normalize(self._encode_embedded_text(emb, ids), dim=-1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised image features (B, E), through the visual prompts if there are any."""
        if self.visual_prompt is None:
            return F.normalize(self.clip.encode_image(x), dim=-1)
        visual = self.clip.visual
        tokens = self.visual_prompt.run(visual._embeds(x), visual.transformer.resblocks, start=1)
        pooled, _ = visual._pool(tokens)
        if visual.proj is not None:
            pooled = pooled @ visual.proj
        return F.normalize(pooled, dim=-1)

    def _scaled_cosine(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        logits = self.clip.logit_scale.exp() * image @ text.T
        bias = getattr(self.clip, "logit_bias", None)
        return logits + bias if bias is not None else logits

    def forward_head(self, image_features: torch.Tensor) -> torch.Tensor:
        """Logits (B, C) from normalised image features and the prompted class texts."""
        return self._scaled_cosine(image_features, self.text_features())

    def zero_shot_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Plain zero-shot CLIP logits with "a photo of a {class name}." (no prompts, no ctx)."""
        image = F.normalize(self.clip.encode_image(x), dim=-1)
        text = F.normalize(self.clip.encode_text(self.zero_shot_ids), dim=-1)
        return self._scaled_cosine(image, text)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes) for images ``x`` preprocessed as ``data_config`` says."""
        if self.zero_shot:
            return self.zero_shot_logits(x)
        return self.forward_head(self.forward_features(x))

    def backbone_param_count(self) -> int:
        """All of CLIP's parameters (image and text towers)."""
        return count_params(self.clip)

    @property
    def data_config(self) -> dict[str, Any]:
        """Input size and normalisation CLIP expects (OpenAI's statistics by default)."""
        from open_clip import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

        visual = self.clip.visual
        cfg = getattr(visual, "preprocess_cfg", {}) or {}
        size = visual.image_size
        return {
            "image_size": (size, size) if isinstance(size, int) else tuple(size),
            "mean": tuple(cfg.get("mean", OPENAI_DATASET_MEAN)),
            "std": tuple(cfg.get("std", OPENAI_DATASET_STD)),
        }


def _causal_length(clip: nn.Module, ids: torch.Tensor) -> int:
    """How many leading positions of the class prompts the pooled text features depend on.

    Why: CLIP's text attention is causal and its feature is read at the end-of-text token, so
    positions after the last prompt's end-of-text token (padding to 77 tokens) change nothing;
    dropping them makes the text tower ~10× cheaper for short prompts, which matters for CPT,
    whose per-group context gradients take one text-tower backward pass per group. The full
    length where that does not hold (no causal mask, or pooling not at a token that ends the
    prompt).
    """
    full = int(ids.shape[1])
    pool = getattr(clip, "text_pool_type", None)
    if getattr(clip, "attn_mask", None) is None or pool not in ("argmax", "eos", "first"):
        return full
    if pool == "first":
        return 1
    if pool == "argmax":
        ends = ids.argmax(dim=-1)
    else:
        ends = (ids == getattr(clip, "text_eos_id", None)).int().argmax(dim=-1)
    return min(full, int(ends.max()) + 1)


def _token_ids(tokenizer: Any, texts: Sequence[str]) -> torch.Tensor:
    """Token ids (N, context_length), refusing texts that the context length would truncate."""
    limit = tokenizer.context_length - 2  # start and end of text
    for text in texts:
        if len(tokenizer.encode(text)) > limit:
            raise ValueError(f"prompt {text!r} is longer than CLIP's {limit}-token context")
    return tokenizer(list(texts)).long()


def _coop_ids(tokenizer: Any, class_names: Sequence[str], n_ctx: int) -> torch.Tensor:
    """Token ids of "X … X <class name>." with the M placeholders right after start-of-text."""
    placeholder = tokenizer.encode(_PLACEHOLDER)
    prefix = " ".join([_PLACEHOLDER] * n_ctx)
    ids = _token_ids(tokenizer, [f"{prefix} {name}.".strip() for name in class_names])
    slots = ids[:, 1 : 1 + n_ctx]
    if n_ctx and (len(placeholder) != 1 or not bool((slots == placeholder[0]).all())):
        raise ValueError("the tokenizer does not map each context placeholder to one token")
    return ids


def _visual_prompts(
    visual: nn.Module, tokens: int, deep: bool, dropout: float
) -> PromptTokens:
    """VPT prompts for an open_clip ViT image tower (after CLS, after ``ln_pre``)."""
    from open_clip.transformer import VisionTransformer

    if not isinstance(visual, VisionTransformer):
        raise ValueError(
            f"visual prompts need open_clip's VisionTransformer image tower, not "
            f"{type(visual).__name__} (e.g. the ResNet towers of clip:RN50)"
        )
    if visual.attn_pool is not None or visual.pool_type != "tok":
        raise ValueError("visual prompts need CLS-token pooling (pool_type='tok', no attn_pool)")
    if not visual.transformer.batch_first:
        raise ValueError("visual prompts need a batch-first open_clip transformer")
    width = visual.transformer.width
    patch = tuple(visual.conv1.kernel_size)
    n_layers = len(visual.transformer.resblocks) if deep else 1
    return PromptTokens(n_layers, tokens, width, prompt_init_range(patch, width), dropout)


def _merge_cfg(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """The overridden top-level entries of an open_clip model config, merged one level deep."""
    merged = {}
    for key, value in overrides.items():
        old = base.get(key)
        nested = isinstance(old, dict) and isinstance(value, dict)
        merged[key] = {**old, **value} if nested else value
    return merged


def build_clip(
    name: str,
    num_classes: int,
    class_names: Sequence[str] | None = None,
    n_ctx: int = 16,
    ctx_init: str | None = None,
    zero_shot: bool = False,
    visual_prompt_tokens: int = 0,
    visual_deep: bool = True,
    prompt_dropout: float = 0.1,
    pretrained: bool = False,
    pretrained_tag: str = "openai",
    clip_cfg: dict[str, Any] | None = None,
) -> CoOpCLIP:
    """CoOp on ``clip:<open_clip arch>``; ``clip_cfg`` overrides the architecture's config.

    ``clip_cfg`` has open_clip's model-config shape (``embed_dim``, ``vision_cfg``,
    ``text_cfg``, ...); nested dicts are merged into the built-in config, so a smoke model can
    shrink the towers while keeping, e.g., the text width.
    """
    import open_clip

    arch = name.removeprefix("clip:")
    base = open_clip.get_model_config(arch)
    if base is None:
        raise ValueError(f"{name}: unknown open_clip architecture (see open_clip.list_models())")
    if isinstance(class_names, str) or not class_names or not all(
        isinstance(c, str) and c for c in class_names
    ):
        raise ValueError(f"{name}: class_names (a list of non-empty str) is required")
    if len(class_names) != check_num_classes(num_classes):
        raise ValueError(f"{name}: {len(class_names)} class_names for num_classes={num_classes}")
    if pretrained and clip_cfg:
        raise ValueError(f"{name}: clip_cfg changes the architecture; use it with pretrained=False")
    spec = {
        "name": name,
        "num_classes": num_classes,
        "class_names": list(class_names),
        "n_ctx": check_prompt_tokens(n_ctx, "n_ctx"),
        "ctx_init": ctx_init or None,
        "zero_shot": bool(zero_shot),
        "visual_prompt_tokens": check_prompt_tokens(visual_prompt_tokens, "visual_prompt_tokens"),
        "visual_deep": bool(visual_deep),
        "prompt_dropout": check_dropout(prompt_dropout),
        "pretrained": bool(pretrained),
        "pretrained_tag": pretrained_tag,
    }
    if clip_cfg:
        spec["clip_cfg"] = copy.deepcopy(dict(clip_cfg))
    overrides = _merge_cfg(base, dict(clip_cfg or {}))
    clip = create_open_clip(arch, bool(pretrained), pretrained_tag, **overrides)
    if type(clip) is not open_clip.model.CLIP:
        raise ValueError(
            f"{name}: CoOp here needs open_clip's CLIP with its built-in text transformer, "
            f"not {type(clip).__name__}"
        )
    tokenizer = open_clip.get_tokenizer(arch, context_length=clip.context_length)
    if not isinstance(tokenizer, open_clip.tokenizer.SimpleTokenizer):
        raise ValueError(f"{name}: CoOp here needs the OpenAI BPE tokenizer")
    return CoOpCLIP(clip, tokenizer, spec, visual_prompt_tokens, visual_deep, prompt_dropout)

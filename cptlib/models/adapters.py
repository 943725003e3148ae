"""Per-c adapters: the trained tensors of one run in a small safetensors file, with metadata.

Why: each control vector c is its own trained prompt + head (≈ 0.37 MB for ViT-B/16, T = 10,
deep), while the frozen backbone is shared. The file holds exactly the trainable parameters
(plus BatchNorm statistics for models that declare ``adapter_buffers``), and metadata: the model
spec, the tensors' names and shapes, the cptlib version and the caller's metadata (e.g. c).
``load_adapter`` refuses a model whose spec or tensor shapes differ, saying what differs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

import cptlib
from cptlib import _io

FORMAT = "cptlib-adapter/1"
_RESERVED = ("format", "spec", "params", "cptlib_version")
# Spec entries that only matter while training: an adapter loads across them.
_TRAINING_ONLY = frozenset({"prompt_dropout", "lora_dropout"})


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors an adapter stores: trainable parameters (+ persistent buffers if declared)."""
    state = {name: p for name, p in model.named_parameters() if p.requires_grad}
    if getattr(model, "adapter_buffers", False):
        persistent = set(model.state_dict())
        state.update({n: b for n, b in model.named_buffers() if n in persistent})
    return state


def _spec_of(model: nn.Module) -> dict[str, Any]:
    spec = getattr(model, "spec", None)
    if not isinstance(spec, dict):
        raise ValueError(f"{type(model).__name__} has no spec: build it with build_model")
    return json.loads(_to_json(spec))


def _to_json(value: Any) -> str:
    """JSON text of ``value``; tensors and arrays become lists, paths strings."""

    def default(obj: Any) -> Any:
        if hasattr(obj, "tolist"):
            return obj.tolist()
        if isinstance(obj, Path):
            return str(obj)
        raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")

    try:
        return json.dumps(value, default=default, sort_keys=True)
    except TypeError as err:
        raise ValueError(f"adapter metadata must be JSON-serialisable: {err}") from err


def save_adapter(model: nn.Module, path: str | Path, **metadata: Any) -> Path:
    """Write ``model``'s trained tensors and metadata to the safetensors file ``path``.

    ``metadata`` (e.g. ``c=[1, 1, 4, 1], seed=0``) must be JSON-serialisable and must not use
    the reserved keys ``format``, ``spec``, ``params``, ``cptlib_version``. Written atomically.
    """
    from safetensors.torch import save

    clash = sorted(set(metadata) & set(_RESERVED))
    if clash:
        raise ValueError(f"metadata keys {clash} are reserved by the adapter format")
    state = adapter_state(model)
    tensors = {name: t.detach().cpu().contiguous().clone() for name, t in state.items()}
    header = {
        "format": FORMAT,
        "spec": _to_json(_spec_of(model)),
        "params": _to_json({name: list(t.shape) for name, t in tensors.items()}),
        "cptlib_version": cptlib.__version__,
        "metadata": _to_json(metadata),
    }
    return _io.atomic_write(Path(path), _canonical(save(tensors, metadata=header)))


def _canonical(blob: bytes) -> bytes:
    """The same safetensors bytes with the header's metadata keys sorted.

    safetensors keeps the metadata in a Rust HashMap whose order is random per process, so the
    same adapter would differ byte-wise between runs; the tensor data and layout are untouched.
    """
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + n])
    meta = header.pop("__metadata__", None)
    tensors = sorted(header.items(), key=lambda item: item[1]["data_offsets"])
    ordered = ({"__metadata__": dict(sorted(meta.items()))} if meta else {}) | dict(tensors)
    text = json.dumps(ordered, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # safetensors aligns the data to 8 bytes
    return len(text).to_bytes(8, "little") + text + blob[8 + n :]


def _differences(
    saved_spec: dict[str, Any],
    model_spec: dict[str, Any],
    saved_shapes: dict[str, list[int]],
    model_shapes: dict[str, list[int]],
) -> list[str]:
    """Human-readable list of what differs between an adapter and a model."""
    diffs = []
    for key in sorted((set(saved_spec) | set(model_spec)) - _TRAINING_ONLY):
        a, b = saved_spec.get(key, "(absent)"), model_spec.get(key, "(absent)")
        if a != b:
            diffs.append(f"{key}: adapter {a!r}, model {b!r}")
    for name in sorted(set(saved_shapes) | set(model_shapes)):
        a, b = saved_shapes.get(name), model_shapes.get(name)
        if a != b:
            diffs.append(f"tensor {name}: adapter {a or 'absent'}, model {b or 'absent'}")
    return diffs


def read_adapter_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of an adapter file, without loading it into a model."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except Exception as exc:  # noqa: BLE001 - SafetensorError derives from Exception only
        raise ValueError(f"{path} is not a safetensors file ({exc})") from None
    if header.get("format") != FORMAT:
        raise ValueError(f"{path} is not a cptlib adapter (format {header.get('format')!r})")
    try:
        meta = {
            **json.loads(header["metadata"]),
            "spec": json.loads(header["spec"]),
            "params": json.loads(header["params"]),
            "cptlib_version": header["cptlib_version"],
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: damaged cptlib adapter header ({type(exc).__name__}: {exc})") \
            from None
    if not isinstance(meta["spec"], dict) or not isinstance(meta["params"], dict):
        raise ValueError(f"{path}: damaged cptlib adapter header (spec or params not a mapping)")
    return meta


def load_adapter(model: nn.Module, path: str | Path) -> dict[str, Any]:
    """Load the adapter at ``path`` into ``model`` in place; return its metadata.

    Raises ValueError naming every difference if the adapter was trained on another model
    (name, num_classes, prompt count, any other spec entry but dropout, or tensor shapes).
    The returned dict holds the caller's metadata plus ``spec``, ``params``, ``cptlib_version``.
    """
    from safetensors.torch import load_file

    meta = read_adapter_metadata(path)
    state = adapter_state(model)
    model_shapes = {name: list(t.shape) for name, t in state.items()}
    diffs = _differences(meta["spec"], _spec_of(model), meta["params"], model_shapes)
    if diffs:
        raise ValueError(f"adapter {path} does not match this model: " + "; ".join(diffs))
    tensors = load_file(str(path))
    with torch.no_grad():
        for name, target in state.items():
            target.copy_(tensors[name].to(target.device))
    return meta

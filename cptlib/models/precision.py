"""Reduced-precision forward passes: bf16 autocast, with attention on its unfused path.

Why: on a CPU with bf16 matrix instructions (AVX512-BF16, AMX) the linear layers of the quick
models run several times faster in bf16 than in float32, but PyTorch's fused CPU attention
kernel is *slower* in bf16 than in float32 in the backward pass (measured with the profiler on
the quick ViT: 154 ms a step against 29 ms). So under bf16 the models' attention takes its
unfused path (timm's ``fused_attn=False``, Hugging Face's ``"eager"``), whose matrix products
autocast lowers to bf16 as well. Autocast casts a weight to bf16 at every call and caches the
cast only for tensors that require a gradient, so the frozen backbone's linear and convolution
weights would be recast at every step (a tenth of the quick ViT's step): they are cast once, for
the duration of the block, to exactly the bf16 values autocast would compute. Logits come back
in float32, so losses, per-group gradients, the Gramian and the balancer stay float32; the
trained parameters stay float32 throughout.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import nn

from cptlib.config import PRECISIONS


def _device_type(model: nn.Module) -> str:
    param = next(model.parameters(), None)
    return param.device.type if param is not None else "cpu"


def _unfused_attention(model: nn.Module, stack: ExitStack) -> None:
    """Switch every attention of ``model`` to its unfused path until ``stack`` closes."""
    for module in model.modules():
        if isinstance(getattr(module, "fused_attn", None), bool):  # timm's Attention
            stack.callback(setattr, module, "fused_attn", module.fused_attn)
            module.fused_attn = False
        config = getattr(module, "config", None)
        if hasattr(module, "set_attn_implementation") and config is not None:  # Hugging Face
            before = getattr(config, "_attn_implementation", None)
            if before not in (None, "eager"):
                module.set_attn_implementation("eager")
                stack.callback(module.set_attn_implementation, before)


# The layers whose weights autocast casts to bf16 (its lower-precision ops on the CPU and GPU).
_BF16_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _frozen_weights_in_bf16(model: nn.Module, stack: ExitStack) -> None:
    """Hold the frozen weights of ``model``'s bf16 layers in bf16 until ``stack`` closes."""
    for module in model.modules():
        if not isinstance(module, _BF16_LAYERS):
            continue
        for param in module.parameters(recurse=False):
            if param.requires_grad or param.dtype != torch.float32:
                continue
            stack.callback(setattr, param, "data", param.data)
            param.data = param.data.to(torch.bfloat16)


@contextmanager
def precision(model: nn.Module, name: str) -> Iterator[nn.Module]:
    """Run ``model``'s forward pass at precision ``name`` until the block ends.

    ``"fp32"`` changes nothing. ``"bf16"`` runs the forward pass under bf16 autocast on the
    model's device and returns float32 logits; on the CPU its attention is unfused, and frozen
    weights are held in bf16 (see the module docstring), so inside the block the model is called
    through its ``forward`` only. Blocks nest; on exit the model is exactly as before.
    """
    if name not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {name!r}")
    if name == "fp32":
        yield model
        return
    device = _device_type(model)
    with ExitStack() as stack:
        if device == "cpu":
            _unfused_attention(model, stack)
        _frozen_weights_in_bf16(model, stack)
        own = model.__dict__.get("forward")  # an enclosing block's wrapper, if any
        plain = model.forward

        def forward(*args: Any, **kwargs: Any) -> torch.Tensor:
            with torch.autocast(device, dtype=torch.bfloat16):
                return plain(*args, **kwargs).float()

        model.forward = forward  # an attribute of this instance only
        stack.callback(_restore_forward, model, own)
        yield model


def _restore_forward(model: nn.Module, own: Any) -> None:
    if own is None:
        del model.forward
    else:
        model.forward = own

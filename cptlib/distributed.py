"""Several processes for one run (``torchrun``; NCCL on GPUs, gloo on CPUs).

The balancer must see the *global* batch, so the training loop does not wrap the model in
``DistributedDataParallel``: every rank takes its slice of the single-process batch, computes
per-group loss sums, counts and gradient sums on it, and these are summed over the ranks before
the balancer (the LP) runs. Every rank then holds the same global quantities, computes the same
β (it is broadcast from rank 0 all the same, so the update is identical to the bit) and applies
the same update, so the parameters never drift apart. Rank 0 alone writes checkpoints, selects
the model and writes the record (``is_main``). With one process every function is the identity.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = [
    "all_reduce_grads",
    "barrier",
    "broadcast",
    "global_group_grads",
    "global_group_stats",
    "init_from_env",
    "is_main",
    "rank",
    "shard",
    "world_size",
]


def _active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if _active() else 0


def world_size() -> int:
    """How many processes share the run (1 without a process group)."""
    return dist.get_world_size() if _active() else 1


def is_main() -> bool:
    """Whether this process writes files (checkpoints, records, figures): rank 0."""
    return rank() == 0


def init_from_env(backend: str | None = None) -> bool:
    """Join the process group that ``torchrun`` describes (RANK, WORLD_SIZE, MASTER_ADDR…).

    Returns whether several processes take part. NCCL when CUDA is there, else gloo; each rank
    uses the GPU of its LOCAL_RANK.
    """
    if _active():
        return world_size() > 1
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend)
    return True


def shard(batch: Any) -> Any:
    """This rank's contiguous slice of a collated global batch (a tensor, a list of items or a
    mapping of tensors; all slices together are the batch, sizes differ by at most one).

    The whole batch is collated on every rank first, so that random augmentations draw what
    the single-process run draws; only the forward and backward passes are split.
    """
    if world_size() == 1:
        return batch
    if isinstance(batch, Mapping):
        return {key: shard(value) for key, value in batch.items()}
    start, stop = _bounds(len(batch))
    return batch[start:stop]


def _bounds(n: int) -> tuple[int, int]:
    size, extra = divmod(n, world_size())
    r = rank()
    start = r * size + min(r, extra)
    return start, start + size + (r < extra)


def _device() -> torch.device:
    """Where collective tensors must live: the current GPU for NCCL, else the CPU."""
    if _active() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _sum(t: Tensor) -> Tensor:
    """The sum over ranks of ``t`` (a new tensor on ``t``'s device)."""
    out = t.detach().to(_device(), copy=True)
    dist.all_reduce(out)
    return out.to(t.device)


def broadcast(t: Tensor, src: int = 0) -> Tensor:
    """Rank ``src``'s ``t`` on every rank (``t`` itself with one process)."""
    if world_size() == 1:
        return t
    out = t.detach().to(_device(), copy=True)
    dist.broadcast(out, src)
    return out.to(t.device)


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def global_group_stats(losses: Tensor, counts: Tensor, grads: Tensor | None = None
                       ) -> tuple[Tensor, Tensor, Tensor | None]:
    """Per-group mean losses (K,), counts (K,) and mean-loss gradients (K, P) of this rank's
    slice → the same of the global batch: sums (mean × local count) and counts are summed over
    the ranks, then divided. One all-reduce for all three."""
    if world_size() == 1:
        return losses, counts, grads
    k = counts.shape[0]
    local = counts.to(losses.dtype)
    parts = [losses.detach() * local, local]
    if grads is not None:
        parts.append((grads * local.to(grads.dtype)[:, None]).to(losses.dtype).reshape(-1))
    total = _sum(torch.cat(parts))
    g_counts = total[k:2 * k].round().to(counts.dtype)
    denom = g_counts.clamp(min=1).to(losses.dtype)
    g_losses = total[:k] / denom
    g_grads = None
    if grads is not None:
        g_grads = (total[2 * k:].view(k, -1) / denom[:, None]).to(grads.dtype)
    return g_losses, g_counts, g_grads


def global_group_grads(gg):
    """``GroupGrads`` of this rank's slice → the global batch's (Gramian recomputed)."""
    if world_size() == 1:
        return gg
    losses, counts, grads = global_group_stats(gg.losses, gg.counts, gg.grads)
    return type(gg)(losses=losses, counts=counts, grads=grads, gramian=grads @ grads.T)


def all_reduce_grads(params: Sequence[Tensor]) -> None:
    """Sum ``p.grad`` over the ranks (one flat all-reduce); parameters without a gradient are
    treated as zero on this rank."""
    if world_size() == 1:
        return
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                      for p in params])
    flat = _sum(flat)
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p).clone()
        offset += n

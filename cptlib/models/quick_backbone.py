"""The embedded backbone of the quick profile: a small timm ViT pretrained here, on the CPU.

Why: the quick profile must show prompt tuning on a *pretrained* backbone whose frozen features
carry both the object and the background cue (as ImageNet features do for Waterbirds), with no
download. A plain patch-4 ViT does not learn rotated shapes in a few minutes, so the patch
embedding is a 3-layer convolutional stem (stride 4 overall, 64 tokens); everything else is a
standard timm ``VisionTransformer`` (class token, no register tokens, ``global_pool="token"``),
so VPT code that calls ``patch_embed``, ``_pos_embed``, ``blocks`` and ``norm`` works unchanged.

Pretraining (``pretrain_quick_backbone``) uses a *different* synthetic task than the downstream
benchmark (``cptlib.data.upstream``: 8 shapes × 4 background families, uniform and independent).
``ensure_quick_backbone`` caches the result under ``cache_dir()/backbones`` keyed by a hash of the
configuration, with a JSON sidecar recording its SHA-256, the upstream metrics and the gates.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import math
import sys
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from timm.layers.patch_embed import PatchEmbed
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from tqdm import tqdm

from cptlib import _io
from cptlib._env import show_progress
from cptlib.data.synthetic import (
    BACKGROUNDS,
    DRAWING_VERSION,
    SHAPES,
    generate_arrays,
    to_normalized_tensor,
)
from cptlib.data.upstream import generate_upstream
from cptlib.paths import cache_dir

# Architecture + pretraining recipe. Every key is part of the cache key: changing any of them
# produces a different backbone file. Settings from ../shared/prototype-findings.md.
QUICK_CONFIG: dict[str, Any] = {
    "name": "quick-vit",
    "img_size": 32,
    "width": 96,
    "depth": 4,
    "heads": 3,
    "mlp_ratio": 4.0,
    "patch_size": 4,  # overall stride of the conv stem: (32 / 4)^2 = 64 tokens
    "stem_channels": [32, 64],  # hidden channels of the 3-layer stem (last layer outputs width)
    "global_pool": "token",
    "pretrain": {
        "seed": 0,
        "n_train": 20_000,
        "n_heldout": 2_000,
        "steps": 703,
        "batch_size": 128,
        "lr": 1e-3,
        "weight_decay": 0.05,
        "warmup_steps": 50,
        "background_loss_weight": 0.1,  # equal weight starves shape learning (prototype)
        "flip": True,
        "data_version": DRAWING_VERSION,  # the upstream images change when the drawing does
    },
}

# Sanity gates checked after pretraining and recorded in the sidecar. Not part of the cache key:
# they judge a backbone, they do not change it. The probe is a logistic regression on frozen CLS
# features of the downstream benchmark (``synthetic``, seed 0); natural (ERM) sampling must give
# a low worst-group accuracy, i.e. the background is the easier cue, as in Waterbirds.
QUICK_GATES: dict[str, Any] = {
    "min_heldout_shape_acc": 0.65,
    "min_heldout_background_acc": 0.95,
    "max_probe_erm_worst_group_acc": 0.6,
    "probe_seed": 0,
    "probe_counts": None,  # None: Waterbirds' training counts
    "probe_n_eval_per_group": 300,
}

# Format version of the sidecar; bump when its meaning changes.
_SIDECAR_VERSION = 1


class ConvStem(PatchEmbed):
    """timm's ``PatchEmbed`` whose single strided conv is a small 3-layer conv stem.

    Subclassing keeps the attributes ``VisionTransformer`` and VPT code read (``img_size``,
    ``patch_size``, ``grid_size``, ``num_patches``, ``feat_ratio()``, ``dynamic_feat_size()``,
    ``flatten``/``output_fmt``, ``norm``); only ``proj`` changes. No batch norm: samples must not
    interact in the forward pass (per-group sub-batches give the same gradients as one batch).
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 32,
        patch_size: int = 4,
        in_chans: int = 3,
        embed_dim: int = 96,
        *,
        stem_channels: tuple[int, ...] = (32, 64),
        bias: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim,
            bias=bias, **kwargs,
        )
        strides = _stem_strides(patch_size, len(stem_channels) + 1)
        chans = [in_chans, *stem_channels, embed_dim]
        layers: list[nn.Module] = []
        for i, stride in enumerate(strides):
            layers.append(nn.Conv2d(chans[i], chans[i + 1], 3, stride=stride, padding=1, bias=bias))
            if i < len(strides) - 1:
                layers.append(nn.GELU())
        self.proj = nn.Sequential(*layers)

    def set_input_size(self, img_size=None, patch_size=None) -> None:
        """A new image size changes the grid; a new patch size would need a new stem."""
        if patch_size is not None and tuple(_pair(patch_size)) != tuple(self.patch_size):
            raise ValueError("the conv stem's stride is fixed; build a new backbone instead")
        super().set_input_size(img_size=img_size)


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _stem_strides(patch_size: int, n_layers: int) -> list[int]:
    """Strides of the stem: stride-1 layers first, then log2(patch_size) stride-2 layers."""
    n_down = int(round(math.log2(patch_size))) if patch_size >= 1 else -1
    if patch_size < 1 or 2**n_down != patch_size or n_down > n_layers:
        raise ValueError(
            f"patch_size must be a power of two ≤ 2^{n_layers} for a {n_layers}-layer stem, "
            f"got {patch_size}"
        )
    return [1] * (n_layers - n_down) + [2] * n_down


def _merged_config(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """QUICK_CONFIG updated by ``config`` (nested dicts merged one level deep)."""
    merged = copy.deepcopy(QUICK_CONFIG)
    for key, value in (config or {}).items():
        if key not in merged:
            raise ValueError(f"unknown quick-backbone config key {key!r}; known: {sorted(merged)}")
        if isinstance(merged[key], dict):
            unknown = set(value) - set(merged[key])
            if unknown:
                raise ValueError(f"unknown keys in config[{key!r}]: {sorted(unknown)}")
            merged[key].update(value)
        else:
            merged[key] = value
    return merged


def create_quick_backbone(config: Mapping[str, Any] | None = None) -> VisionTransformer:
    """A randomly initialised quick backbone (``num_classes=0``: ``model(x)`` is the CLS feature).

    ``config`` overrides keys of ``QUICK_CONFIG`` (e.g. ``{"width": 16, "depth": 1}`` in tests).
    """
    cfg = _merged_config(config)
    if cfg["width"] % cfg["heads"]:
        raise ValueError(f"width {cfg['width']} is not divisible by heads {cfg['heads']}")
    if cfg["img_size"] % cfg["patch_size"]:
        raise ValueError(f"img_size {cfg['img_size']} is not a multiple of {cfg['patch_size']}")
    embed_layer = partial(ConvStem, stem_channels=tuple(cfg["stem_channels"]))
    return VisionTransformer(
        img_size=cfg["img_size"],
        patch_size=cfg["patch_size"],
        num_classes=0,
        global_pool=cfg["global_pool"],
        embed_dim=cfg["width"],
        depth=cfg["depth"],
        num_heads=cfg["heads"],
        mlp_ratio=cfg["mlp_ratio"],
        class_token=True,
        reg_tokens=0,
        embed_layer=embed_layer,
    )


# ----------------------------------------------------------------------------- cache
def config_hash(config: Mapping[str, Any] | None = None) -> str:
    """Short SHA-256 of the merged configuration: the cache key of a pretrained backbone."""
    text = json.dumps(_merged_config(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def quick_backbone_path(config: Mapping[str, Any] | None = None) -> Path:
    """Where the pretrained state_dict of this configuration lives (its sidecar: ``.json``)."""
    cfg = _merged_config(config)
    return cache_dir() / "backbones" / f"{cfg['name']}-{config_hash(cfg)}.pt"


def sidecar_path(path: Path) -> Path:
    return Path(path).with_suffix(".json")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class BackboneChecksumError(RuntimeError):
    """The cached backbone file does not match the SHA-256 its sidecar recorded."""


def verify_quick_backbone(path: Path) -> dict[str, Any]:
    """The sidecar of ``path`` after checking the file's SHA-256 against it."""
    path = Path(path)
    side = sidecar_path(path)
    if not path.is_file() or not side.is_file():
        raise FileNotFoundError(f"no pretrained backbone at {path} (with sidecar {side.name})")
    meta = json.loads(side.read_text())
    digest = _sha256(path)
    if digest != meta.get("sha256"):
        raise BackboneChecksumError(
            f"{path} has SHA-256 {digest}, but {side.name} recorded {meta.get('sha256')}: "
            "the file is corrupt or was replaced; delete both files to pretrain again"
        )
    return meta


# ----------------------------------------------------------------------------- pretraining
class _UpstreamModel(nn.Module):
    """Backbone + one linear head per upstream label (shape, background)."""

    def __init__(self, backbone: VisionTransformer, n_shapes: int, n_backgrounds: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.shape_head = nn.Linear(backbone.num_features, n_shapes)
        self.background_head = nn.Linear(backbone.num_features, n_backgrounds)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.backbone(x)
        return self.shape_head(f), self.background_head(f)


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on biases, norms, position embedding and class token (standard for ViT)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        skip = p.ndim <= 1 or name.endswith(("pos_embed", "cls_token"))
        (no_decay if skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def _lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up, then cosine decay to zero, per step."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def _batches(n: int, batch_size: int, steps: int, gen: torch.Generator):
    """``steps`` index batches: consecutive slices of seeded permutations (epochs)."""
    perm, pos = torch.randperm(n, generator=gen), 0
    for _ in range(steps):
        if pos + batch_size > n:
            perm, pos = torch.randperm(n, generator=gen), 0
        yield perm[pos : pos + batch_size]
        pos += batch_size


@torch.no_grad()
def _predict(model: _UpstreamModel, images: np.ndarray, batch_size: int = 512):
    shape_pred, bg_pred = [], []
    for start in range(0, len(images), batch_size):
        s, b = model(to_normalized_tensor(images[start : start + batch_size]))
        shape_pred.append(s.argmax(1))
        bg_pred.append(b.argmax(1))
    return torch.cat(shape_pred).numpy(), torch.cat(bg_pred).numpy()


def pretrain_quick_backbone(
    config: Mapping[str, Any] | None = None,
    steps: int | None = None,
    seed: int | None = None,
    progress: bool = True,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Pretrain a quick backbone on the upstream task; returns (backbone state_dict, metrics).

    Deterministic for a given config, seed and torch thread count (the thread count can change
    float reduction order, hence the last bits; the sidecar records it). ``steps`` / ``seed``
    override ``config["pretrain"]``. Metrics: held-out shape and background accuracy, the loss
    of the first and last tenth of the steps, wall time.
    """
    cfg = _merged_config(config)
    pre = cfg["pretrain"]
    steps = int(pre["steps"] if steps is None else steps)
    seed = int(pre["seed"] if seed is None else seed)
    if steps <= 0 or pre["batch_size"] <= 0:
        raise ValueError(f"steps and batch_size must be positive, got {steps}, {pre['batch_size']}")
    start = time.perf_counter()
    train, heldout = generate_upstream(pre["n_train"], pre["n_heldout"], seed, cfg["img_size"])
    torch.manual_seed(seed)
    model = _UpstreamModel(create_quick_backbone(cfg), len(SHAPES), len(BACKGROUNDS))
    opt = torch.optim.AdamW(_param_groups(model, pre["weight_decay"]), lr=pre["lr"])
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: _lr_factor(s, min(pre["warmup_steps"], steps), steps))
    gen = torch.Generator().manual_seed(seed)
    images = torch.from_numpy(train.images)
    shape_y, bg_y = torch.from_numpy(train.shape), torch.from_numpy(train.background)
    batch_size = min(pre["batch_size"], len(train))
    losses: list[float] = []
    bar = tqdm(_batches(len(train), batch_size, steps, gen), total=steps,
               desc="pretraining quick backbone", disable=not show_progress(progress))
    model.train()
    for idx in bar:
        x = to_normalized_tensor(images[idx])
        if pre["flip"]:
            flip = torch.rand(len(idx), generator=gen) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
        s_logits, b_logits = model(x)
        loss = nn.functional.cross_entropy(s_logits, shape_y[idx]) + pre[
            "background_loss_weight"] * nn.functional.cross_entropy(b_logits, bg_y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
    model.eval()
    metrics: dict[str, Any] = {"steps": steps, "seed": seed}
    tenth = max(1, steps // 10)
    metrics["loss_first"] = float(np.mean(losses[:tenth]))
    metrics["loss_last"] = float(np.mean(losses[-tenth:]))
    if len(heldout):
        shape_pred, bg_pred = _predict(model, heldout.images)
        metrics["heldout_shape_acc"] = float(np.mean(shape_pred == heldout.shape))
        metrics["heldout_background_acc"] = float(np.mean(bg_pred == heldout.background))
    metrics["train_wall_s"] = time.perf_counter() - start
    state = {k: v.detach().clone() for k, v in model.backbone.state_dict().items()}
    return state, metrics


# ----------------------------------------------------------------------------- gates
@torch.no_grad()
def extract_features(backbone: nn.Module, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Frozen CLS features (N, width) of uint8 NHWC images, in eval mode."""
    backbone.eval()
    chunks = [backbone(to_normalized_tensor(images[i : i + batch_size])).numpy()
              for i in range(0, len(images), batch_size)]
    return np.concatenate(chunks) if chunks else np.zeros((0, backbone.num_features))


def _group_accuracies(pred: np.ndarray, y: np.ndarray, g: np.ndarray, k: int) -> list[float]:
    return [float(np.mean(pred[g == i] == y[g == i])) if np.any(g == i) else float("nan")
            for i in range(k)]


def linear_probe(backbone: nn.Module, gates: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Logistic regression on frozen features of the downstream benchmark, natural (ERM) and
    group-balanced (weights N / n_g): test per-group accuracies of both.

    Why: the frozen features must carry both cues, with the background the easier one, so that
    ERM takes the shortcut (low worst-group accuracy) and reweighting recovers the object cue.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    g_cfg = {**QUICK_GATES, **(gates or {})}
    data = generate_arrays(g_cfg["probe_seed"], _image_size(backbone), g_cfg["probe_counts"],
                           g_cfg["probe_n_eval_per_group"])
    group = data.y * 2 + data.place
    train, test = data.split == 0, data.split == 2
    f_train = extract_features(backbone, data.images[train])
    scaler = StandardScaler().fit(f_train)
    f_train = scaler.transform(f_train)
    f_test = scaler.transform(extract_features(backbone, data.images[test]))
    counts = np.bincount(group[train], minlength=4)
    weights = {"erm": None, "balanced": (train.sum() / counts)[group[train]]}
    out: dict[str, Any] = {}
    for name, w in weights.items():
        clf = LogisticRegression(max_iter=2000).fit(f_train, data.y[train], sample_weight=w)
        acc = _group_accuracies(clf.predict(f_test), data.y[test], group[test], 4)
        out[f"probe_{name}_per_group_acc"] = acc
        out[f"probe_{name}_worst_group_acc"] = float(np.nanmin(acc))
    return out


def _image_size(backbone: nn.Module) -> int:
    return int(backbone.patch_embed.img_size[0])


def check_gates(metrics: Mapping[str, Any], gates: Mapping[str, Any] | None = None) -> dict:
    """Each gate's value, threshold and verdict (a missing metric fails its gate)."""
    g_cfg = {**QUICK_GATES, **(gates or {})}
    rules = {
        "heldout_shape_acc": (">=", g_cfg["min_heldout_shape_acc"]),
        "heldout_background_acc": (">=", g_cfg["min_heldout_background_acc"]),
        "probe_erm_worst_group_acc": ("<", g_cfg["max_probe_erm_worst_group_acc"]),
    }
    out = {}
    for key, (op, threshold) in rules.items():
        value = metrics.get(key)
        ok = value is not None and (value >= threshold if op == ">=" else value < threshold)
        out[key] = {"value": value, "rule": f"{op} {threshold}", "passed": bool(ok)}
    return out


def _warn_failed_gates(meta: Mapping[str, Any], path: Path) -> None:
    failed = {k: v for k, v in meta.get("gates", {}).items() if not v["passed"]}
    if failed:
        detail = "; ".join(f"{k} = {v['value']} (needs {v['rule']})" for k, v in failed.items())
        warnings.warn(
            f"the quick backbone {path.name} failed its sanity gates: {detail}. Results built on "
            "it may not show the Waterbirds-like shortcut; see the sidecar "
            f"{sidecar_path(path)}", RuntimeWarning, stacklevel=3)


# ----------------------------------------------------------------------------- ensure / load
@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock beside ``path`` so that parallel runs pretrain once (POSIX only)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no lock, at worst a duplicate pretraining
        yield
        return
    with open(path.with_suffix(".lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)



def _build(path: Path, cfg: dict[str, Any], gates: Mapping[str, Any] | None,
           progress: bool) -> dict[str, Any]:
    """Pretrain, run the gates, and write the state_dict and its sidecar (file first)."""
    start = time.perf_counter()
    state, metrics = pretrain_quick_backbone(cfg, progress=progress)
    backbone = create_quick_backbone(cfg)
    backbone.load_state_dict(state)
    metrics.update(linear_probe(backbone, gates))
    buf = io.BytesIO()  # saving to a named file would embed its name: bytes would differ
    torch.save(state, buf)
    _io.atomic_write(path, buf.getvalue())
    meta = {
        "format": _SIDECAR_VERSION,
        "file": path.name,
        "sha256": _sha256(path),
        "config": cfg,
        "config_hash": config_hash(cfg),
        "metrics": metrics,
        "gates": check_gates(metrics, gates),
        "wall_time_s": time.perf_counter() - start,
        "torch_num_threads": torch.get_num_threads(),
        "versions": {"torch": torch.__version__, "timm": timm.__version__,
                     "numpy": np.__version__, "python": sys.version.split()[0]},
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    text = json.dumps(meta, indent=2, sort_keys=True) + "\n"
    _io.atomic_write(sidecar_path(path), text)
    return meta


def ensure_quick_backbone(
    progress: bool = True,
    config: Mapping[str, Any] | None = None,
    *,
    gates: Mapping[str, Any] | None = None,
    on_mismatch: str = "retrain",
) -> Path:
    """Path of the pretrained state_dict for ``config``, pretraining it on first use.

    Every call checks the file's SHA-256 against its sidecar. On a mismatch it pretrains again
    with a warning (``on_mismatch="retrain"``: the file is a cache, reproducible from its config)
    or raises ``BackboneChecksumError`` (``on_mismatch="raise"``). A failed sanity gate warns.
    """
    if on_mismatch not in ("retrain", "raise"):
        raise ValueError(f"on_mismatch must be 'retrain' or 'raise', got {on_mismatch!r}")
    cfg = _merged_config(config)
    path = quick_backbone_path(cfg)
    with _file_lock(path):
        if path.is_file() and sidecar_path(path).is_file():
            try:
                meta = verify_quick_backbone(path)
            except BackboneChecksumError as err:
                if on_mismatch == "raise":
                    raise
                warnings.warn(f"{err}; pretraining it again", RuntimeWarning, stacklevel=2)
            else:
                _warn_failed_gates(meta, path)
                return path
        meta = _build(path, cfg, gates, progress)
    _warn_failed_gates(meta, path)
    return path


def load_quick_backbone(
    config: Mapping[str, Any] | None = None, progress: bool = True
) -> VisionTransformer:
    """The pretrained quick backbone (built on first use), in eval mode."""
    path = ensure_quick_backbone(progress=progress, config=config)
    model = create_quick_backbone(config)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


def prepare_backbone(
    root: str | Path | None = None, source: str | None = None, progress: bool = True
) -> Path:
    """``cpt data backbone``: the cached quick backbone, pretrained on first use; its path.

    Here rather than in ``cptlib.data.prepare`` so that the data layer never imports the models.
    ``root`` and ``source`` are refused: the file is cached by its configuration's hash.
    """
    if source:
        raise ValueError("backbone is generated locally; --source applies to real datasets only")
    if root:
        raise ValueError("the backbone is cached by its configuration; --root does not apply")
    return Path(ensure_quick_backbone(progress=progress))

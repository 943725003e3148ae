"""The training loop: clear errors before work, the schedule, selection on validation, and a
run killed part-way and resumed ending exactly like an uninterrupted one."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cptlib.data.groups import GroupDataset
from cptlib.train import TrainConfig, batch_indices, lr_factor, train


def toy_split(split: str, n_per_group=(40, 8, 6, 30), seed: int = 0) -> GroupDataset:
    """Four groups of 8-d points; the label is readable from the input, with group shifts."""
    gen = torch.Generator().manual_seed(seed + {"train": 0, "val": 1, "test": 2}[split])
    xs, ys, attrs = [], [], []
    for group, n in enumerate(n_per_group):
        y, a = divmod(group, 2)
        x = torch.randn(n, 8, generator=gen)
        x[:, 0] += 2.0 * y - 1.0
        x[:, 1] += 2.0 * a - 1.0
        xs.append(x)
        ys += [y] * n
        attrs += [a] * n
    return GroupDataset(
        "toy", split, list(torch.cat(xs)), ys, attrs, n_classes=2, n_attr=2,
        group_names=["0/0", "0/1", "1/0", "1/1"], train_group_counts=list(n_per_group),
    )


def make_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.Dropout(0.2), nn.Tanh(), nn.Linear(16, 2))


SETS = {s: toy_split(s) for s in ("train", "val", "test")}


def run(cfg: TrainConfig, **kwargs):
    return train(make_model(), SETS["train"], SETS["val"], SETS["test"], cfg, **kwargs)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"lr": -0.1}, "lr"),
        ({"steps": 0}, "steps"),
        ({"method": "nope"}, "nope"),
        ({"method": "cpt", "c": [1.0, 1.0]}, "c has 2 entries"),
        ({"method": "cpt", "c": [1.0, -1.0, 1.0, 1.0]}, r"c\[1\] must be a finite number > 0"),
        ({"method": "cpt", "c": [1.0, float("nan"), 1.0, 1.0]}, "finite"),
        ({"grad_way": "fast"}, "grad_way"),
        ({"precision": "fp16"}, "precision must be one of fp32, bf16"),
        ({"warmup_steps": 50, "steps": 20}, "warmup_steps"),
    ],
)
def test_bad_parameters_fail_before_training(change, message):
    model = make_model()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=message):
        train(model, SETS["train"], SETS["val"], SETS["test"], TrainConfig(**change))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_schedule_warms_up_linearly_then_decays_by_cosine_per_step():
    cfg = TrainConfig(steps=110, warmup_steps=10)
    assert lr_factor(0, cfg) == pytest.approx(0.1)
    assert lr_factor(9, cfg) == pytest.approx(1.0)
    assert lr_factor(10, cfg) == pytest.approx(1.0)
    assert lr_factor(60, cfg) == pytest.approx(0.5)
    assert lr_factor(110, cfg) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(50, TrainConfig(steps=100, schedule="constant")) == 1.0


def test_batches_depend_on_seed_and_step_only_and_follow_the_sampling_weights():
    weights = torch.tensor([1.0, 0.0, 3.0])
    first = batch_indices(weights, 4000, seed=1, step=7)
    assert torch.equal(first, batch_indices(weights, 4000, seed=1, step=7))
    assert not torch.equal(first, batch_indices(weights, 4000, seed=1, step=8))
    counts = torch.bincount(first, minlength=3).double()
    assert counts[1] == 0
    assert counts[2] / counts.sum() == pytest.approx(0.75, abs=0.03)


@pytest.mark.parametrize("method", ["erm", "groupdro", "cpt"])
def test_selection_uses_validation_never_test(method):
    out = run(TrainConfig(method=method, alpha=1.0, steps=30, eval_every=5, batch_size=16))
    val_wga = [h["val"]["worst_group_acc"] for h in out["history"]]
    chosen = out["history"][val_wga.index(max(val_wga))]
    assert out["selected_step"] == chosen["step"]
    assert out["test"] == chosen["test"]
    assert out["last_test"] == out["history"][-1]["test"]


def test_training_learns_and_records_balancer_diagnostics():
    out = run(TrainConfig(method="cpt", alpha=1.0, steps=60, eval_every=20, batch_size=16, lr=0.2))
    first, last = out["history"][0], out["history"][-1]
    assert last["val"]["mean_acc"] > 0.7
    assert sum(last["train"]["mode_counts"].values()) == 20
    assert 0.0 <= last["train"]["conflict_frac"] <= 1.0
    assert first["train"]["mu"] is not None and math.isfinite(first["train"]["mu"])


def test_windows_record_the_update_and_the_training_losses_per_group():
    """What the trade-offs chapter reads: per-group training losses, β and the update's norm."""
    cfg = TrainConfig(method="cpt", alpha=1.0, steps=40, eval_every=20, batch_size=16, lr=0.2,
                      clip_norm=0.05)
    out = run(cfg)
    for entry in out["history"]:
        train = entry["train"]
        assert len(train["per_group_loss"]) == len(train["beta"]) == 4
        assert all(v is not None and v > 0 for v in train["per_group_loss"])
        assert sum(train["beta"]) == pytest.approx(1.0, abs=1e-6)  # CPT's β is a distribution
        assert train["grad_norm"] > 0
        assert 0 <= train["clipped_steps"] <= train["steps"] == 20
    # a norm limit this small clips (nearly) every step; a huge one none
    assert out["history"][0]["train"]["clipped_steps"] >= 15
    loose = run(TrainConfig(method="cpt", alpha=1.0, steps=20, eval_every=20, batch_size=16,
                            lr=0.2, clip_norm=1e6))
    assert loose["history"][0]["train"]["clipped_steps"] == 0
    # ERM with the data's sampling (α = 0) sees group 2 (6 of 84 points) in few batches: its
    # mean training loss is still over the steps that had it, not diluted by absent ones
    erm = run(TrainConfig(method="erm", alpha=0.0, steps=20, eval_every=20, batch_size=4))
    assert all(v is None or v > 0 for v in erm["history"][0]["train"]["per_group_loss"])


@pytest.mark.parametrize("method", ["cpt", "groupdro"])
def test_resumed_run_ends_exactly_like_an_uninterrupted_one(tmp_path, method):
    cfg = dict(method=method, alpha=1.0, steps=24, eval_every=6, batch_size=16, seed=3)
    whole = run(TrainConfig(**cfg))
    ckpt = tmp_path / "run.pt"
    partial = run(TrainConfig(**cfg), checkpoint=ckpt, stop_after=13)
    assert partial == {"finished": False, "step": 13}
    assert ckpt.exists()
    # A fresh model object, as after a crash: everything comes from the checkpoint.
    resumed = run(TrainConfig(**cfg), checkpoint=ckpt)
    assert resumed["history"] == whole["history"]
    assert resumed["selected_step"] == whole["selected_step"]
    for key, value in whole["best_state"].items():
        assert torch.equal(resumed["best_state"][key], value), key


def test_checkpoint_of_another_configuration_is_refused(tmp_path):
    ckpt = tmp_path / "run.pt"
    run(TrainConfig(steps=10, eval_every=5), checkpoint=ckpt, stop_after=5)
    with pytest.raises(ValueError, match="different configuration"):
        run(TrainConfig(steps=10, eval_every=5, lr=0.05), checkpoint=ckpt)


def image_split(split: str, n_per_group=(24, 6, 5, 20)) -> GroupDataset:
    """Four groups of 3×16×16 images whose label shifts channel 0 (for the VPT models)."""
    gen = torch.Generator().manual_seed({"train": 0, "val": 1, "test": 2}[split])
    xs, ys, attrs = [], [], []
    for group, n in enumerate(n_per_group):
        y, a = divmod(group, 2)
        x = torch.randn(n, 3, 16, 16, generator=gen)
        x[:, 0] += y - 0.5
        x[:, 1] += a - 0.5
        xs += list(x)
        ys += [y] * n
        attrs += [a] * n
    return GroupDataset("img", split, xs, ys, attrs, n_classes=2, n_attr=2,
                        group_names=["0/0", "0/1", "1/0", "1/1"],
                        train_group_counts=list(n_per_group))


@pytest.mark.parametrize("method", ["erm", "groupdro"])
def test_diagnostics_never_change_training(method):
    """With "expand", diagnostic steps take the update from the per-group gradients: the run
    must end where a run without diagnostics ends (same dropout draws, rounding aside)."""
    from cptlib.models import build_model

    sets = {s: image_split(s) for s in ("train", "val", "test")}
    outs = {}
    for diag in (0, 2):
        torch.manual_seed(0)
        model = build_model("vit_tiny_patch16_224", 2, img_size=16, patch_size=8, embed_dim=24,
                            depth=2, num_heads=2, prompt_tokens=2, prompt_dropout=0.2)
        cfg = TrainConfig(method=method, alpha=1.0, steps=12, eval_every=6, batch_size=16,
                          diag_every=diag, seed=1)
        outs[diag] = train(model, sets["train"], sets["val"], sets["test"], cfg)
    assert outs[0]["grad_way"] == outs[2]["grad_way"] == "expand"
    for key, value in outs[0]["best_state"].items():
        torch.testing.assert_close(outs[2]["best_state"][key], value, rtol=1e-4, atol=1e-6)
    assert all(h["train"]["conflict_frac"] is None for h in outs[0]["history"])
    assert all(h["train"]["conflict_frac"] is not None for h in outs[2]["history"])

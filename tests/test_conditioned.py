"""One adapter for every c (``cptlib.models.conditioned``): θ(c), its gradient, its file, and
conditioned training of every prompt family at smoke scale."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from cptlib import balancers as B
from cptlib.analysis import every_c
from cptlib.config import TrainConfig
from cptlib.grads import group_losses
from cptlib.models import build_model, load_adapter, save_adapter
from cptlib.models.adapters import adapter_state
from cptlib.models.conditioned import Conditioned, c_features, raise_grid, sample_c
from cptlib.runs.worker import run_training
from cptlib.train import Window, conditioned_step

TINY = {"prompt_tokens": 2, "deep": True, "img_size": 16, "patch_size": 8, "depth": 2,
        "embed_dim": 16, "num_heads": 2, "prompt_dropout": 0.0}


def tiny(seed: int = 0, groups: int = 4) -> Conditioned:
    torch.manual_seed(seed)
    model = build_model("vit_tiny_patch16_224", 2, pretrained=False, **TINY).double()
    return Conditioned(model, groups, hidden=3, c_max=8.0).double()


def batch(seed: int = 1, n: int = 12):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 16, 16, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 2, (n,), generator=gen)
    g = torch.arange(n) % 4
    return x, y, g


def randomise(model: Conditioned, seed: int = 3) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.3 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    model.refresh()


def test_a_new_conditioned_model_is_the_wrapped_model_for_every_c():
    model = tiny()
    x, _, _ = batch()
    model.eval()
    outs = [model(x, c) for c in ([1, 1, 1, 1], [8, 1, 1, 1], [1, 2, 3, 4])]
    assert all(torch.equal(outs[0], o) for o in outs[1:])


def test_theta_depends_on_the_ray_of_c_only_and_changes_with_it():
    model = tiny()
    randomise(model)
    a, b, other = (model.tensors(c) for c in ([1, 1, 4, 1], [2, 2, 8, 2], [4, 1, 1, 1]))
    assert all(torch.allclose(u, v) for u, v in zip(a, b, strict=True))
    assert any(not torch.allclose(u, v) for u, v in zip(a, other, strict=True))
    z = c_features(torch.tensor([1.0, 8.0]), 8.0)
    assert torch.allclose(z, torch.tensor([-0.5, 0.5]))


@pytest.mark.parametrize("bad", [[1, 1, 1], [1, 0, 1, 1], [1, -2, 1, 1], [1, math.nan, 1, 1]])
def test_a_bad_c_is_refused_with_its_problem(bad):
    with pytest.raises(ValueError, match="c"):
        tiny().set_c(bad)


def test_only_the_wrapper_parameters_train_and_are_stored(tmp_path):
    model = tiny()
    names = set(adapter_state(model))
    assert names == {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(not n.startswith("model.") for n in names)
    randomise(model)
    path = save_adapter(model, tmp_path / "a.safetensors", conditioned=True)
    fresh = tiny()  # the same frozen backbone, other trained tensors
    randomise(fresh, seed=9)
    meta = load_adapter(fresh, path)
    fresh.set_c([1, 1, 4, 1])
    model.set_c([1, 1, 4, 1])
    x, _, _ = batch()
    model.eval()
    fresh.eval()
    assert meta["spec"]["conditioned"]["hidden"] == 3
    assert torch.allclose(model(x), fresh(x))


def test_a_model_whose_samples_interact_is_refused():
    torch.manual_seed(0)
    resnet = build_model("resnet18", 2, pretrained=False)
    with pytest.raises(ValueError, match="do not interact"):
        Conditioned(resnet, 4)


@pytest.mark.parametrize("way", ["expand", "naive"])
def test_the_step_gives_the_gradient_of_the_balanced_loss_through_theta(way):
    """conditioned_step's gradient on θ⁰, W_1, b_1, U equals autograd of Σ β_k L_k(θ(c))."""
    model = tiny()
    randomise(model)
    x, y, g = batch()
    c = [1.0, 2.0, 4.0, 0.5]
    cfg = TrainConfig(method="scalarized", c=c, clip_norm=1e9, conditioned=True, diag_every=0)
    balancer = B.get("scalarized", c=c)
    conditioned_step(model, c, balancer, x, y, g, 4, cfg, way, Window(), 0)
    got = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    model.zero_grad(set_to_none=True)
    theta = model.tensors(c)
    logits = functional_call(model.model, dict(zip(model.slot_names, theta, strict=True)), (x,))
    losses, _ = group_losses(F.cross_entropy(logits, y, reduction="none"), g, 4)
    r = torch.tensor(c, dtype=torch.float64) / sum(c)
    (r * losses).sum().backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert torch.allclose(got[name], p.grad, atol=1e-10), name
    assert got["out.weight"].abs().sum() > 0


def test_expand_and_naive_agree_for_cpt():
    grads = {}
    for way in ("expand", "naive"):
        model = tiny()
        randomise(model)
        x, y, g = batch()
        c = [1.0, 1.0, 4.0, 1.0]
        cfg = TrainConfig(method="cpt", c=c, clip_norm=1e9, conditioned=True, diag_every=0)
        conditioned_step(model, c, B.get("cpt", c=c), x, y, g, 4, cfg, way, Window(), 0)
        grads[way] = torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad])
    assert torch.allclose(grads["expand"], grads["naive"], atol=1e-9)


def test_sampled_c_cover_the_stated_range_and_are_reproducible():
    cs = torch.tensor([sample_c(4, 8.0, seed=0, step=s) for s in range(400)])
    assert cs.min() >= 1 and cs.max() <= 8
    assert cs.max() / cs.min() > 6
    assert sample_c(4, 8.0, 0, 7) == sample_c(4, 8.0, 0, 7) != sample_c(4, 8.0, 1, 7)
    assert raise_grid(3) == [[1, 1, 1], [4, 1, 1], [1, 4, 1], [1, 1, 4]]


@pytest.mark.parametrize("bad, match", [
    ({"method": "erm"}, "need a method that takes c"),
    ({"c_max": 1.0}, "c_max must be > 1"),
    ({"conditioned": False, "c_grid": [[1, 1, 1, 1]]}, "c_grid"),
    ({"c_grid": [[1, 1]]}, "c_grid\\[0\\] has 2 entries"),
    ({"conditioned": "yes"}, "conditioned must be true or false"),
    ({"c_search_evals": 15}, "c_search_evals must be at least 16"),
])
def test_bad_conditioning_parameters_are_named(bad, match):
    cfg = TrainConfig(**{"method": "cpt", "conditioned": True, **bad})
    with pytest.raises(ValueError, match=match):
        cfg.validate(4)


@pytest.mark.parametrize("experiment", ["synthetic", "waterbirds", "waterbirds_clip", "text"])
def test_conditioned_training_runs_for_every_prompt_family(experiment, tmp_path):
    """Smoke scale: VPT on the quick backbone and on a timm ViT, CoOp on CLIP, peft prompts."""
    run = run_training(experiment, "smoke", {"conditioned": True, "c_hidden": 4,
                                             "results_dir": str(tmp_path)}, progress=False)
    metrics = run.record["metrics"]
    grid = metrics["grid"]
    assert [e["c"] for e in grid] == raise_grid(4)
    assert all(0 <= e["test"]["worst_group_acc"] <= 1 for e in grid)
    entry = run.record["history"][-1]
    assert len(entry["grid_val"]) == len(grid)
    assert entry["selection_score"] == pytest.approx(
        sum(v["worst_group_acc"] for v in entry["grid_val"]) / len(grid))
    assert metrics["val"] == grid[0]["val"]  # the reference c is c = 1, the grid's first
    # The dial's paths: c = 1, then each group raised to 2, 4, 8 (c_max), shared with the grid.
    paths = metrics["paths"]
    assert [(p["raised"], p["strength"]) for p in paths] == [(None, 1.0)] + [
        (k, s) for k in range(4) for s in (2.0, 4.0, 8.0)]
    by_c = {tuple(p["c"]): p for p in paths}
    assert all(by_c[tuple(e["c"])]["test"] == e["test"] for e in grid)
    # c chosen on validation: never worse there than c = 1 (a member of the search).
    search = {s["objective"]: s for s in metrics["search"]}
    assert set(search) == {"worst_group", "avg_at_worst_group"}
    c1 = grid[0]["val"]
    assert search["worst_group"]["val"]["worst_group_acc"] >= c1["worst_group_acc"]
    constrained = search["avg_at_worst_group"]
    assert constrained["tau"] == c1["worst_group_acc"]
    assert constrained["val"]["worst_group_acc"] >= constrained["tau"]
    assert constrained["val"]["avg_acc"] >= c1["avg_acc"]
    assert all(1 <= v <= 8 for s in search.values() for v in s["c"])
    assert all(s["evals"] <= 48 for s in search.values())
    model = run.model
    assert isinstance(model, Conditioned) and model.c == (1.0,) * 4
    assert run.record["trainable_params"] == sum(
        p.numel() for p in model.parameters() if p.requires_grad)
    # The formula the book uses for adapter sizes at the paper's shapes.
    dedicated = sum(p.numel() for p in model.slots)
    assert run.record["trainable_params"] == every_c.conditioned_param_count(dedicated, 4, 4)


def test_cpt_eval_dials_c_on_a_conditioned_record_and_refuses_a_bad_c(tmp_path):
    import json
    import subprocess
    import sys

    run = run_training("synthetic", "smoke", {"conditioned": True, "c_hidden": 4,
                                              "results_dir": str(tmp_path)}, progress=False)
    path = str(run.record_path)

    def cpt(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "cptlib.cli", "eval", path, *args],
                              capture_output=True, text=True, timeout=300)

    for bad in ("[1, 1, 1]", "[1, 0, 1, 1]", "[1, .nan, 1, 1]", "[1, -1, 1, 1]", "c"):
        done = cpt("--c", bad)
        assert done.returncode == 2, (bad, done.stderr)
        assert done.stdout == "" and len(done.stderr.strip().splitlines()) == 1
        assert "--c" in done.stderr
    done = cpt("--c", "[1, 1, 4, 1]")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    grid = {tuple(e["c"]): e for e in run.record["metrics"]["grid"]}
    for split in ("val", "test"):
        assert out[split]["per_group_acc"] == pytest.approx(
            grid[(1.0, 1.0, 4.0, 1.0)][split]["per_group_acc"])
    assert out["group_names"] == run.record["group_names"]
    done = cpt()  # without --c: the reference c, named in the output
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["c"] == [1.0] * 4


def test_a_resumed_conditioned_run_ends_exactly_like_an_uninterrupted_one(tmp_path):
    """The c drawn per step are a function of (seed, step), and the wrapper's parameters are
    what the checkpoint holds, so a crash costs nothing but time."""
    from cptlib.runs.worker import load_data, run_model, spec_for
    from cptlib.train import train

    spec = spec_for("synthetic", "smoke", {"conditioned": True, "c_hidden": 4, "steps": 12,
                                           "eval_every": 4, "results_dir": str(tmp_path)}, None)
    data = load_data(spec)

    def fresh():
        cfg = spec.train_config()
        cfg.validate(data.train.n_groups)
        return run_model(spec, cfg, data), cfg

    def go(**kwargs):
        model, cfg = fresh()
        return train(model, data.train, data.val, data.test, cfg, progress=False, **kwargs)

    whole = go()
    ckpt = tmp_path / "run.pt"
    assert go(checkpoint=ckpt, stop_after=7) == {"finished": False, "step": 7}
    resumed = go(checkpoint=ckpt)  # a new model object: everything comes from the checkpoint
    assert resumed["history"] == whole["history"]
    assert resumed["selected_step"] == whole["selected_step"]
    for key, value in whole["best_state"].items():
        assert torch.equal(resumed["best_state"][key], value), key

"""The quick backbone: architecture, pretraining on a tiny config, the verified cache."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from cptlib.models import quick_backbone as qb

# A backbone small enough to pretrain in a second or two; gates probe a tiny benchmark.
TINY = {
    "width": 24, "depth": 1, "heads": 2, "stem_channels": [8, 16],
    "pretrain": {"n_train": 384, "n_heldout": 64, "batch_size": 32, "steps": 40,
                 "warmup_steps": 4, "lr": 3e-3},
}
TINY_GATES = {"probe_counts": (40, 4, 4, 20), "probe_n_eval_per_group": 8}


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run faster on one thread (no OpenMP hand-offs), above all on a busy CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_architecture_matches_the_quick_config():
    model = qb.create_quick_backbone()
    assert isinstance(model, VisionTransformer)
    assert model.patch_embed.num_patches == 64 and model.patch_embed.grid_size == (8, 8)
    assert model.num_prefix_tokens == 1 and model.global_pool == "token"
    n_params = sum(p.numel() for p in model.parameters())
    assert 500_000 < n_params < 560_000, n_params
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    x = torch.randn(2, 3, 32, 32)
    assert model(x).shape == (2, 96)
    assert model.forward_features(x).shape == (2, 65, 96)


def test_vpt_style_forward_path_is_the_standard_one():
    """patch_embed -> _pos_embed -> (prompts after CLS) -> blocks -> norm, as VPT code calls it."""
    torch.manual_seed(0)
    model = qb.create_quick_backbone().eval()
    x = torch.randn(3, 3, 32, 32)
    tokens = model._pos_embed(model.patch_embed(x))
    assert tokens.shape == (3, 65, 96)
    with torch.no_grad():
        manual = model.norm(model.blocks(tokens))[:, 0]
        assert torch.allclose(manual, model(x), atol=1e-5)
        prompts = torch.zeros(3, 5, 96)
        with_prompts = torch.cat([tokens[:, :1], prompts, tokens[:, 1:]], dim=1)
        assert model.norm(model.blocks(with_prompts)).shape == (3, 70, 96)


def test_config_validation_and_cache_key(tmp_path, monkeypatch):
    monkeypatch.setenv("CPT_CACHE", str(tmp_path))
    with pytest.raises(ValueError, match="unknown quick-backbone config key"):
        qb.create_quick_backbone({"widht": 8})
    with pytest.raises(ValueError, match="unknown keys"):
        qb.quick_backbone_path({"pretrain": {"step": 3}})
    with pytest.raises(ValueError, match="divisible"):
        qb.create_quick_backbone({"width": 10, "heads": 3})
    with pytest.raises(ValueError, match="power of two"):
        qb.create_quick_backbone({"patch_size": 3, "img_size": 33})
    base = qb.quick_backbone_path()
    assert base.parent == tmp_path / "backbones" and base.name.startswith("quick-vit-")
    assert qb.quick_backbone_path({"depth": 4}) == base  # the default value: same key
    assert qb.quick_backbone_path({"pretrain": {"steps": 5}}) != base
    assert qb.QUICK_CONFIG["pretrain"]["steps"] == 703  # merging never mutates the defaults


def test_pretraining_lowers_the_loss_and_is_deterministic():
    state, metrics = qb.pretrain_quick_backbone(TINY, progress=False)
    assert metrics["steps"] == 40
    assert metrics["loss_last"] < metrics["loss_first"] - 0.05, metrics
    assert 0.0 <= metrics["heldout_shape_acc"] <= 1.0
    assert metrics["heldout_background_acc"] > 0.5  # 4-way chance is 0.25: the easy cue
    again, _ = qb.pretrain_quick_backbone(TINY, steps=3, progress=False)
    again2, _ = qb.pretrain_quick_backbone(TINY, steps=3, progress=False)
    assert all(torch.equal(again[k], again2[k]) for k in again)
    other, _ = qb.pretrain_quick_backbone(TINY, steps=3, seed=1, progress=False)
    assert not all(torch.equal(again[k], other[k]) for k in again)
    model = qb.create_quick_backbone(TINY)
    model.load_state_dict(state)  # the state_dict fits the architecture


def test_ensure_caches_verifies_and_detects_corruption(tmp_path, monkeypatch):
    monkeypatch.setenv("CPT_CACHE", str(tmp_path))
    with pytest.warns(RuntimeWarning, match="failed its sanity gates"):
        path = qb.ensure_quick_backbone(progress=False, config=TINY, gates=TINY_GATES)
    assert path == qb.quick_backbone_path(TINY) and path.is_file()
    meta = json.loads(qb.sidecar_path(path).read_text())
    assert meta["sha256"] == qb._sha256(path) and meta["config"]["width"] == 24
    assert set(meta["gates"]) == {"heldout_shape_acc", "heldout_background_acc",
                                  "probe_erm_worst_group_acc"}
    assert 0 <= meta["metrics"]["probe_balanced_worst_group_acc"] <= 1
    assert meta["wall_time_s"] > 0 and meta["torch_num_threads"] >= 1

    def no_pretraining(*args, **kwargs):
        raise AssertionError("a verified cached backbone must not be pretrained again")

    monkeypatch.setattr(qb, "pretrain_quick_backbone", no_pretraining)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the tiny model fails its gates
        assert qb.ensure_quick_backbone(progress=False, config=TINY) == path
        model = qb.load_quick_backbone(TINY, progress=False)
    assert torch.equal(model.pos_embed, torch.load(path, weights_only=True)["pos_embed"])

    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")  # corrupt the file
    with pytest.raises(qb.BackboneChecksumError, match="SHA-256"):
        qb.ensure_quick_backbone(progress=False, config=TINY, on_mismatch="raise")
    with pytest.raises(qb.BackboneChecksumError):
        qb.verify_quick_backbone(path)
    monkeypatch.undo()
    monkeypatch.setenv("CPT_CACHE", str(tmp_path))
    with pytest.warns(RuntimeWarning) as record:  # retrains, then the tiny model fails gates
        qb.ensure_quick_backbone(progress=False, config=TINY, gates=TINY_GATES)
    assert any("pretraining it again" in str(w.message) for w in record)
    assert qb.verify_quick_backbone(path)["sha256"] == meta["sha256"]  # same bytes as before
    with pytest.raises(ValueError, match="on_mismatch"):
        qb.ensure_quick_backbone(config=TINY, on_mismatch="ignore")


def test_gates_verdicts():
    good = {"heldout_shape_acc": 0.7, "heldout_background_acc": 0.99,
            "probe_erm_worst_group_acc": 0.4}
    assert all(v["passed"] for v in qb.check_gates(good).values())
    bad = qb.check_gates({**good, "probe_erm_worst_group_acc": 0.8})
    assert not bad["probe_erm_worst_group_acc"]["passed"] and bad["heldout_shape_acc"]["passed"]
    assert not qb.check_gates({})["heldout_shape_acc"]["passed"]

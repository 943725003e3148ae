"""Paper profile on ViT-B/16 (random weights, CPU): trainable counts and the per-c adapter."""

from __future__ import annotations

import pytest
import torch

from cptlib.models import build_model, count_trainable, load_adapter, save_adapter

VIT_B16 = "vit_base_patch16_224.orig_in21k"


def build_b16(**options):
    torch.manual_seed(0)
    return build_model(VIT_B16, 2, pretrained=False, **options)


@pytest.fixture(scope="module")
def deep_b16():
    return build_b16(prompt_tokens=10, deep=True)


def test_paper_trainable_counts(deep_b16):
    # 12 layers · 10 prompts · 768 + head 768 · 2 + 2 (method.md)
    assert count_trainable(deep_b16) == 93_698
    assert count_trainable(build_b16(prompt_tokens=10, deep=False)) == 9_218
    assert deep_b16.backbone_param_count() == 85_798_656  # ViT-B/16 without a head


def test_adapter_is_small_and_round_trip_reproduces_logits(deep_b16, tmp_path):
    trained = deep_b16.eval()
    with torch.no_grad():  # stand-in for training: move prompts and head away from the init
        for p in trained.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    path = save_adapter(trained, tmp_path / "c.safetensors", c=[1, 1, 4, 1], seed=3)
    assert path.stat().st_size < 400_000

    fresh = build_b16(prompt_tokens=10, deep=True).eval()  # same seed: same random backbone
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert not torch.equal(fresh(x), trained(x))
        meta = load_adapter(fresh, path)
        assert torch.equal(fresh(x), trained(x))
    assert meta["c"] == [1, 1, 4, 1] and meta["seed"] == 3
    assert meta["spec"]["prompt_tokens"] == 10

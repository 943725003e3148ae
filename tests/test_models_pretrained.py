"""Pretrained weights: fast clear offline errors, no network with pretrained=False, local files,
the weights table, MiniLM's real weights, and the efficiency table."""

from __future__ import annotations

import socket
import time

import open_clip
import pytest
import timm
import torch
from safetensors import safe_open

from cptlib.models import (
    PAPER_WEIGHTS,
    PretrainedWeightsUnavailable,
    build_model,
    count_trainable,
    trainable_table,
)
from cptlib.models.pretrained import QUICK_WEIGHTS, load_local
from cptlib.models.quick_backbone import create_quick_backbone
from cptlib.models.text import minilm_path

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")

TINY_VIT = dict(img_size=32, patch_size=8, depth=2, embed_dim=48, num_heads=2)
TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"width": 32, "heads": 2, "layers": 1},
}
TINY_BERT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test's code path at once."""

    def refuse(*args, **kwargs):
        raise OSError("network access attempted in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


@pytest.fixture
def empty_hub(monkeypatch, tmp_path, no_network):
    """Offline mode and an empty Hugging Face cache."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    return tmp_path / "hf"


@pytest.mark.parametrize(
    "name, options, names_in_message",
    [
        ("vit_tiny_patch16_224", TINY_VIT, ["vit_tiny_patch16_224", "timm.create_model("]),
        ("resnet50", {}, ["resnet50.tv_in1k", "pretrained=True"]),
        ("lora:vit_tiny_patch16_224", TINY_VIT, ["vit_tiny_patch16_224"]),
        ("clip:RN50", {"class_names": ["a", "b"]}, ["pretrained='openai'", "open_clip"]),
        ("bert-base-uncased", {}, ["bert-base-uncased", "AutoModel.from_pretrained("]),
    ],
)
def test_pretrained_weights_offline_fail_at_once_with_how_to_get_them(
    empty_hub, name, options, names_in_message
):
    start = time.perf_counter()
    with pytest.raises(PretrainedWeightsUnavailable) as info:
        build_model(name, 2, pretrained=True, **options)
    assert time.perf_counter() - start < 10
    message = str(info.value)
    for text in [*names_in_message, "HF_HUB_OFFLINE=0 python -c", str(empty_hub / "hub"),
                 "pretrained=False"]:
        assert text in message


def test_pretrained_false_never_touches_the_network(no_network):
    torch.manual_seed(0)
    models = [
        build_model("vit_tiny_patch16_224", 2, **TINY_VIT),
        build_model("quick", 2, backbone_cfg={"width": 24, "depth": 1, "heads": 2}),
        build_model("clip:ViT-B-32", 2, class_names=["a", "b"], clip_cfg=TINY_CLIP),
        build_model("resnet10t", 2),
        build_model("lora:vit_tiny_patch16_224", 2, **TINY_VIT),
        build_model("bert-base-uncased", 2, bert_cfg=TINY_BERT),
    ]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for model in models:
            out = model(["a bird", "a lake"] if model.method == "prompt-tuning" else x)
            assert out.shape == (2, 2)


def test_minilm_loads_its_real_weights_offline(no_network):
    torch.manual_seed(0)
    model = build_model("minilm", 2).eval()
    with safe_open(str(minilm_path() / "model.safetensors"), framework="pt") as f:
        shipped = f.get_tensor("embeddings.word_embeddings.weight")
    loaded = model.backbone.get_base_model().bert.embeddings.word_embeddings.weight
    assert torch.equal(loaded, shipped)
    assert model.spec["pretrained"] is True and count_trainable(model) == 20 * 384 + 384 * 2 + 2
    with torch.no_grad():
        logits = model(["a heron by the water", "a sparrow in the forest", "hello"])
    assert logits.shape == (3, 2) and torch.isfinite(logits).all()
    random = build_model("minilm", 2, pretrained=False)
    assert not torch.equal(random.backbone.get_base_model().bert.embeddings.word_embeddings.weight,
                           shipped)


def test_local_backbone_file_loads_through_the_same_guard(tmp_path):
    cfg = {"width": 24, "depth": 1, "heads": 2}
    torch.manual_seed(0)
    source = create_quick_backbone(cfg)
    torch.save(source.state_dict(), tmp_path / "quick.pt")
    torch.manual_seed(1)
    target = create_quick_backbone(cfg)
    load_local(QUICK_WEIGHTS, target, tmp_path / "quick.pt")
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(),
                                                  target.state_dict().values(), strict=True))
    with pytest.raises(PretrainedWeightsUnavailable, match="ensure_quick_backbone"):
        load_local(QUICK_WEIGHTS, target, tmp_path / "missing.pt")


def test_paper_weights_table_names_real_checkpoints():
    assert PAPER_WEIGHTS["vit_base_patch16_224.orig_in21k"].ref == "vit_base_patch16_224.orig_in21k"
    assert PAPER_WEIGHTS["resnet50"].ref == "resnet50.tv_in1k"
    assert PAPER_WEIGHTS["clip:ViT-L-14"].tag == "openai"
    for source in PAPER_WEIGHTS.values():
        if source.library == "timm":
            assert source.ref in timm.list_pretrained(source.ref)
        elif source.library == "open_clip":
            assert open_clip.get_pretrained_cfg(source.ref, source.tag)


def test_trainable_table_counts_and_builds_without_weights(no_network):
    table = trainable_table(
        [
            ("vit_tiny_patch16_224", {**TINY_VIT, "prompt_tokens": 2, "pretrained": True}),
            ("vit_tiny_patch16_224", {**TINY_VIT, "prompt_tokens": 2, "deep": False}),
            ("resnet10t", {"num_classes": 3}),
        ]
    )
    assert list(table.columns) == ["model", "method", "trainable", "backbone_params", "percent"]
    assert list(table["method"]) == ["vpt-deep", "vpt-shallow", "full-finetune"]
    width = TINY_VIT["embed_dim"]
    head = width * 2 + 2
    assert list(table["trainable"][:2]) == [2 * 2 * width + head, 2 * width + head]
    torch.manual_seed(0)
    resnet = build_model("resnet10t", 3)
    assert table["trainable"][2] == count_trainable(resnet)
    assert table["backbone_params"][2] == resnet.backbone_param_count()
    assert table["percent"][0] == pytest.approx(100 * table["trainable"][0]
                                                / table["backbone_params"][0])

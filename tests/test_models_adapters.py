"""Per-c adapters on tiny models: round trips, what is stored, and refusing mismatched models."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open

from cptlib.models import build_model, load_adapter, read_adapter_metadata, save_adapter

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")

TINY_VIT = dict(img_size=32, patch_size=8, depth=2, embed_dim=48, num_heads=2)
TINY_BERT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


def vpt(num_classes: int = 3, **options):
    torch.manual_seed(0)
    return build_model("vit_tiny_patch16_224", num_classes, **{**TINY_VIT, **options})


def images() -> torch.Tensor:
    return torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def perturb_trainable(model) -> None:
    """Stand-in for training: move every trainable tensor away from its init."""
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)


def test_file_holds_exactly_the_trainable_parameters(tmp_path):
    model = vpt(prompt_tokens=4)
    path = save_adapter(model, tmp_path / "a.safetensors")
    with safe_open(str(path), framework="pt") as f:
        assert set(f.keys()) == {"prompt.prompts", "head.weight", "head.bias"}
    meta = read_adapter_metadata(path)
    assert meta["params"] == {"prompt.prompts": [2, 4, 48], "head.weight": [3, 48],
                              "head.bias": [3]}
    assert meta["spec"] == model.spec and meta["cptlib_version"]


def test_round_trip_and_user_metadata(tmp_path):
    trained = vpt(prompt_tokens=4).eval()
    perturb_trainable(trained)
    path = save_adapter(trained, tmp_path / "sub" / "c.safetensors",
                        c=torch.tensor([1.0, 4.0]), method="cpt", seed=0)
    fresh = vpt(prompt_tokens=4).eval()
    meta = load_adapter(fresh, path)
    with torch.no_grad():
        assert torch.equal(fresh(images()), trained(images()))
    assert meta["c"] == [1.0, 4.0] and meta["method"] == "cpt" and meta["seed"] == 0


def test_training_only_options_do_not_block_loading(tmp_path):
    path = save_adapter(vpt(prompt_tokens=4, prompt_dropout=0.1), tmp_path / "a.safetensors")
    load_adapter(vpt(prompt_tokens=4, prompt_dropout=0.0), path)


@pytest.mark.parametrize(
    "other, words",
    [
        (lambda: vpt(num_classes=2, prompt_tokens=4), ["num_classes: adapter 3, model 2",
                                                      "tensor head.bias"]),
        (lambda: vpt(prompt_tokens=5), ["prompt_tokens: adapter 4, model 5", "prompt.prompts"]),
        (lambda: vpt(prompt_tokens=4, deep=False), ["deep: adapter True, model False"]),
        (lambda: build_model("lora:vit_tiny_patch16_224", 3, **TINY_VIT), ["name: adapter"]),
    ],
    ids=["num_classes", "prompt_tokens", "deep", "name"],
)
def test_mismatched_model_is_refused_with_what_differs(tmp_path, other, words):
    path = save_adapter(vpt(prompt_tokens=4), tmp_path / "a.safetensors")
    target = other()
    before = {n: p.detach().clone() for n, p in target.named_parameters()}
    with pytest.raises(ValueError, match="does not match this model") as info:
        load_adapter(target, path)
    for word in words:
        assert word in str(info.value)
    assert all(torch.equal(p, before[n]) for n, p in target.named_parameters())  # untouched


def test_bad_metadata_and_foreign_models_are_refused(tmp_path):
    model = vpt(prompt_tokens=1)
    with pytest.raises(ValueError, match="reserved"):
        save_adapter(model, tmp_path / "a.safetensors", spec="mine")
    with pytest.raises(ValueError, match="JSON"):
        save_adapter(model, tmp_path / "a.safetensors", c=object())
    with pytest.raises(ValueError, match="no spec"):
        save_adapter(torch.nn.Linear(2, 2), tmp_path / "a.safetensors")


def test_resnet_adapter_keeps_batchnorm_statistics(tmp_path):
    torch.manual_seed(0)
    trained = build_model("resnet10t", 2).train()
    optimiser = torch.optim.SGD(trained.parameters(), lr=0.1)
    F.cross_entropy(trained(images()), torch.tensor([0, 1, 1, 0])).backward()
    optimiser.step()  # also updates the BatchNorm running statistics
    path = save_adapter(trained.eval(), tmp_path / "r.safetensors")
    with safe_open(str(path), framework="pt") as f:
        assert any(k.endswith("running_mean") for k in f.keys())
    torch.manual_seed(0)
    fresh = build_model("resnet10t", 2).eval()
    load_adapter(fresh, path)
    with torch.no_grad():
        assert torch.equal(fresh(images()), trained(images()))


@pytest.mark.parametrize("family", ["lora", "text"])
def test_peft_models_round_trip(tmp_path, family):
    def make():
        torch.manual_seed(0)
        if family == "lora":
            return build_model("lora:vit_tiny_patch16_224", 2, **TINY_VIT).eval()
        return build_model("bert-base-uncased", 2, prompt_tokens=3, bert_cfg=TINY_BERT).eval()

    x = images() if family == "lora" else ["a bird", "the lake is blue"]
    trained = make()
    perturb_trainable(trained)
    path = save_adapter(trained, tmp_path / "p.safetensors")
    fresh = make()
    with torch.no_grad():
        assert not torch.equal(fresh(x), trained(x))
        load_adapter(fresh, path)
        assert torch.equal(fresh(x), trained(x))


_WRITE_ADAPTER = """
import sys, torch
from cptlib.models import build_model, save_adapter
torch.manual_seed(0)
model = build_model("vit_tiny_patch16_224", 3, img_size=32, patch_size=8, depth=2, embed_dim=48,
                    num_heads=2, prompt_tokens=4)
save_adapter(model, sys.argv[1], c=[1, 1, 4, 1], method="cpt", seed=0, run_id="x")
"""


def test_the_same_adapter_is_byte_identical_across_processes(tmp_path):
    """safetensors orders its metadata by a per-process random hash; the file must not."""
    import os
    import subprocess
    import sys

    paths = []
    for seed in ("1", "2", "3"):
        out = tmp_path / f"a{seed}.safetensors"
        env = {**os.environ, "PYTHONHASHSEED": seed}
        subprocess.run([sys.executable, "-c", _WRITE_ADAPTER, str(out)], env=env, check=True)
        paths.append(out)
    blobs = {p.read_bytes() for p in paths}
    assert len(blobs) == 1
    model = vpt(prompt_tokens=4)
    assert load_adapter(model, paths[0])["c"] == [1, 1, 4, 1]

"""Per-group losses and gradients: "split" and "naive" agree, and applying β is Σ β_k L_k."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from cptlib.grads import (
    combined_direction,
    conflict_fraction,
    expand_supported,
    group_losses,
    per_group_grads,
    resolve_way,
    set_combined_grad,
    trainable_params,
)

K = 4


def tiny_mlp() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 8), nn.GELU(), nn.Linear(8, 3))
    model[0].requires_grad_(False)  # a frozen "backbone" layer: must not be differentiated
    return model.double().eval()


class TinyText(nn.Module):
    """A text model on lists of strings: mean character embedding, then a linear head."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.emb = nn.EmbeddingBag(128, 6, mode="mean")
        self.head = nn.Linear(6, 2)

    def forward(self, texts: list[str]) -> torch.Tensor:
        codes = [torch.tensor([ord(ch) % 128 for ch in t]) for t in texts]
        offsets = torch.tensor([0] + [len(c) for c in codes[:-1]]).cumsum(0)
        return self.head(self.emb(torch.cat(codes), offsets))


def batch(n: int = 24, absent: int | None = None, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (n,), generator=gen)
    g = torch.randint(0, K, (n,), generator=gen)
    if absent is not None:
        g[g == absent] = (absent + 1) % K
    return x, y, g


def reference_grads(model, x, y, g, params) -> torch.Tensor:
    """Per-group gradients the obvious way: a masked mean loss per group, one at a time."""
    rows = []
    for k in range(K):
        mask = g == k
        if not mask.any():
            rows.append(torch.zeros(sum(p.numel() for p in params), dtype=torch.float64))
            continue
        loss = F.cross_entropy(model(x[mask]), y[mask])
        rows.append(torch.cat([gr.reshape(-1) for gr in torch.autograd.grad(loss, params)]))
    return torch.stack(rows)


@pytest.mark.parametrize("absent", [None, 2])
def test_split_and_naive_agree_and_match_reference(absent):
    model = tiny_mlp()
    x, y, g = batch(absent=absent)
    params = trainable_params(model)
    assert sum(p.numel() for p in params) == 8 * 8 + 8 + 8 * 3 + 3  # frozen layer excluded
    split = per_group_grads(model, x, y, g, K, way="split")
    naive = per_group_grads(model, x, y, g, K, way="naive")
    for field in ("losses", "counts", "grads", "gramian"):
        torch.testing.assert_close(getattr(split, field), getattr(naive, field),
                                   rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(split.grads, reference_grads(model, x, y, g, params))
    torch.testing.assert_close(split.counts, torch.bincount(g, minlength=K))
    assert not split.losses.requires_grad
    if absent is not None:
        assert split.counts[absent] == 0 and split.losses[absent] == 0
        assert torch.all(split.grads[absent] == 0) and torch.all(split.gramian[absent] == 0)
    torch.testing.assert_close(split.gramian, split.gramian.T)
    assert torch.linalg.eigvalsh(split.gramian).min() > -1e-10


def test_list_input_text_model():
    model = TinyText().double().eval()
    texts = ["a cat", "the dog sat", "birds", "water bird", "x", "land", "forest", "sea gull"]
    y = torch.tensor([0, 1, 0, 1, 1, 0, 0, 1])
    g = torch.tensor([0, 1, 0, 3, 3, 1, 0, 3])  # group 2 absent
    split = per_group_grads(model, texts, y, g, K, way="split")
    naive = per_group_grads(model, texts, y, g, K, way="naive")
    torch.testing.assert_close(split.grads, naive.grads)
    torch.testing.assert_close(split.losses, naive.losses)
    assert torch.all(split.grads[2] == 0)


def test_tiny_timm_vit_with_frozen_backbone():
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=16, patch_size=8,
                              embed_dim=24, depth=1, num_heads=2, num_classes=2)
    model = model.double().eval()
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith("head") or name == "cls_token")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(10, 3, 16, 16, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 2, (10,), generator=gen)
    g = torch.tensor([0, 1, 1, 3, 0, 3, 1, 0, 3, 3])
    split = per_group_grads(model, x, y, g, K, way="split")
    naive = per_group_grads(model, x, y, g, K, way="naive")
    assert split.grads.shape == (K, 24 + 24 * 2 + 2)
    torch.testing.assert_close(split.gramian, naive.gramian, rtol=1e-9, atol=1e-12)


def test_train_mode_batchnorm_breaks_split_as_documented():
    """Samples interact through batch statistics, so "split" differs from "naive" there."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), nn.Linear(6, 3)).double().train()
    x, y, g = batch()
    split = per_group_grads(model, x, y, g, K, way="split")
    naive = per_group_grads(model, x, y, g, K, way="naive")
    assert not torch.allclose(split.grads, naive.grads, atol=1e-6)


def test_set_combined_grad_equals_gradient_of_weighted_loss():
    model = tiny_mlp()
    x, y, g = batch(absent=1, seed=3)
    params = trainable_params(model)
    gg = per_group_grads(model, x, y, g, K)
    beta = torch.tensor([0.5, 0.0, 0.2, 0.3], dtype=torch.float64)
    set_combined_grad(params, gg.grads, beta)
    combined = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    losses, _ = group_losses(F.cross_entropy(model(x), y, reduction="none"), g, K)
    (beta.detach() @ losses).backward()
    for got, p in zip(combined, params, strict=True):
        torch.testing.assert_close(got, p.grad)
    assert combined_direction(gg.grads, beta).shape == (gg.grads.shape[1],)
    with pytest.raises(ValueError, match="columns"):
        set_combined_grad(params[:1], gg.grads, beta)


def test_group_losses_is_a_scatter_mean():
    gen = torch.Generator().manual_seed(0)
    per_sample = torch.rand(50, generator=gen, dtype=torch.float64, requires_grad=True)
    g = torch.randint(0, 6, (50,), generator=gen)
    g[g == 4] = 0
    losses, counts = group_losses(per_sample, g, 6)
    for k in range(6):
        expected = per_sample[g == k].mean() if (g == k).any() else torch.tensor(0.0)
        torch.testing.assert_close(losses[k], expected.to(losses.dtype))
    assert counts.tolist() == [int((g == k).sum()) for k in range(6)]
    losses.sum().backward()  # differentiable, including through the absent group's 0
    torch.testing.assert_close(per_sample.grad, 1.0 / counts[g].to(torch.float64))


@pytest.mark.parametrize("bad", [torch.tensor([0, 4]), torch.tensor([-1, 0]),
                                 torch.tensor([0.0, 1.0]), torch.tensor([0, 1, 2])])
def test_group_losses_rejects_bad_group_ids(bad):
    with pytest.raises(ValueError):
        group_losses(torch.ones(2), bad, 4)


def test_bad_way_and_mismatched_batch_raise():
    model = tiny_mlp()
    x, y, g = batch()
    with pytest.raises(ValueError, match="way"):
        per_group_grads(model, x, y, g, K, way="batched")
    with pytest.raises(ValueError, match="samples"):
        per_group_grads(model, x, y[:-1], g, K)


def test_conflict_fraction():
    grads = torch.tensor([[1.0, 0.0], [-1.0, 0.1], [0.0, 1.0], [0.0, 0.0]])
    d = torch.tensor([1.0, 0.0])
    assert conflict_fraction(grads, d) == pytest.approx(1 / 3)  # zero row = absent
    assert conflict_fraction(grads, d, counts=torch.tensor([1, 1, 0, 0])) == pytest.approx(0.5)
    assert conflict_fraction(grads, -d, counts=torch.tensor([1, 0, 0, 0])) == 1.0


# ------------------------------------------------------------------ way "expand" (VPT models)

TINY_VPT = {"img_size": 16, "patch_size": 8, "embed_dim": 24, "depth": 3, "num_heads": 2}


def tiny_vpt(deep: bool = True, dropout: float = 0.0, tokens: int = 3, classes: int = 3):
    from cptlib.models import build_model

    torch.manual_seed(0)
    model = build_model("vit_tiny_patch16_224", classes, prompt_tokens=tokens, deep=deep,
                        prompt_dropout=dropout, pretrained=False, **TINY_VPT)
    return model.double().train()


def image_batch(n: int = 14, classes: int = 3, seed: int = 0, absent: int | None = None):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 16, 16, generator=gen, dtype=torch.float64)
    y = torch.randint(0, classes, (n,), generator=gen)
    g = torch.randint(0, K, (n,), generator=gen)
    if absent is not None:
        g[g == absent] = (absent + 1) % K
    return x, y, g


TINY_BERT = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
             "intermediate_size": 64}
TINY_CLIP = {"embed_dim": 32,
             "vision_cfg": {"image_size": 16, "layers": 2, "width": 32, "patch_size": 8,
                            "head_width": 16},
             "text_cfg": {"width": 32, "heads": 2, "layers": 2}}
WORDS = "the a bird sat on lake small grass and trees water everywhere land forest sea".split()


def family_model(family: str, dropout: float = 0.0) -> nn.Module:
    """A tiny float64 model of each family way "expand" serves, in train mode."""
    from cptlib.models import build_model

    torch.manual_seed(0)
    if family in ("vpt-deep", "vpt-shallow"):
        return tiny_vpt(deep=family == "vpt-deep", dropout=dropout)
    if family.startswith("coop"):
        model = build_model("clip:ViT-B-32", 3, class_names=["landbird", "waterbird", "duck"],
                            n_ctx=3, clip_cfg=TINY_CLIP, prompt_dropout=dropout,
                            visual_prompt_tokens=2 if family == "coop+vpt" else 0)
    elif family == "text":
        model = build_model("bert-base-uncased", 3, prompt_tokens=3, bert_cfg=TINY_BERT)
    else:  # LoRA, with B made non-zero so that A's gradients are too
        model = build_model("lora:vit_tiny_patch16_224", 3, lora_r=2, lora_dropout=dropout,
                            **{k: v for k, v in TINY_VPT.items() if k != "depth"}, depth=2)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                nn.init.normal_(p, std=0.5)
    return model.double().train()


def family_batch(family: str, n: int = 14, seed: int = 0, absent: int | None = None):
    x, y, g = image_batch(n=n, seed=seed, absent=absent)
    if family == "text":
        gen = torch.Generator().manual_seed(seed)
        lengths = torch.randint(1, 9, (n,), generator=gen).tolist()
        x = [" ".join(WORDS[int(i)] for i in torch.randint(0, len(WORDS), (m,), generator=gen))
             for m in lengths]
    return x, y, g


EXPAND_FAMILIES = ["vpt-deep", "vpt-shallow", "coop", "coop+vpt", "text", "lora"]


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")
@pytest.mark.parametrize("absent", [None, 1])
@pytest.mark.parametrize("family", EXPAND_FAMILIES)
def test_expand_equals_split_and_naive_on_every_family(family, absent):
    model = family_model(family)
    assert resolve_way(model) == "expand"
    x, y, g = family_batch(family, absent=absent)
    ways = {way: per_group_grads(model, x, y, g, K, way=way)
            for way in ("expand", "split", "naive")}
    assert ways["expand"].grads.shape[1] == sum(p.numel() for p in trainable_params(model))
    for other in ("split", "naive"):
        for field in ("losses", "counts", "grads", "gramian"):
            torch.testing.assert_close(getattr(ways["expand"], field), getattr(ways[other], field),
                                       rtol=1e-9, atol=1e-12)
    if absent is not None:
        assert torch.all(ways["expand"].grads[absent] == 0)
    present = ways["expand"].counts > 0
    # every trainable parameter gets a non-zero gradient in some group (no silent zero block)
    offset = 0
    for p in trainable_params(model):
        block = ways["expand"].grads[present, offset:offset + p.numel()]
        assert block.abs().sum() > 0, f"{family}: zero per-group gradient for {tuple(p.shape)}"
        offset += p.numel()


@pytest.mark.parametrize("frozen", ["prompt.prompts", "head.weight", "head.bias"])
def test_expand_with_a_subset_of_the_parameters(frozen):
    model = tiny_vpt()
    dict(model.named_parameters())[frozen].requires_grad_(False)
    x, y, g = image_batch(seed=1)
    expand = per_group_grads(model, x, y, g, K, way="expand")
    split = per_group_grads(model, x, y, g, K, way="split")
    torch.testing.assert_close(expand.grads, split.grads, rtol=1e-9, atol=1e-12)


def test_expand_is_permutation_equivariant():
    """Reordering the samples (and relabelling the groups) permutes the rows, nothing else."""
    model = tiny_vpt()
    x, y, g = image_batch(n=16, seed=2)
    base = per_group_grads(model, x, y, g, K, way="expand")
    order = torch.randperm(16, generator=torch.Generator().manual_seed(0))
    relabel = torch.tensor([2, 0, 3, 1])
    moved = per_group_grads(model, x[order], y[order], relabel[g[order]], K, way="expand")
    torch.testing.assert_close(moved.grads[relabel], base.grads, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(moved.losses[relabel], base.losses)


@pytest.mark.parametrize("family", ["vpt-deep", "coop+vpt", "lora"])
def test_expand_with_dropout_matches_one_backward_pass(family):
    """With dropout the masks come from one batch forward pass, exactly as ERM's: the group
    rows then sum to the gradient of Σ_k L_k under the same random draws."""
    model = family_model(family, dropout=0.5)
    x, y, g = family_batch(family, seed=3)
    params = trainable_params(model)
    torch.manual_seed(7)
    losses, _ = group_losses(F.cross_entropy(model(x), y, reduction="none"), g, K)
    total = torch.cat([gr.reshape(-1) for gr in torch.autograd.grad(losses.sum(), params)])
    torch.manual_seed(7)
    expand = per_group_grads(model, x, y, g, K, way="expand")
    torch.testing.assert_close(expand.grads.sum(dim=0), total, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(expand.losses, losses.detach())
    torch.manual_seed(8)  # other draws: another gradient, so the masks did matter
    assert not torch.allclose(per_group_grads(model, x, y, g, K, way="expand").grads, expand.grads)


def test_expand_for_coop_without_a_trainable_context():
    """Zero-shot CLIP's context is frozen: nothing is shared, and no trainable parameter is
    left to differentiate."""
    model = family_model("coop+vpt")
    model.ctx.requires_grad_(False)
    x, y, g = family_batch("coop+vpt", seed=4)
    expand = per_group_grads(model, x, y, g, K, way="expand")
    torch.testing.assert_close(expand.grads, per_group_grads(model, x, y, g, K, way="naive").grads,
                               rtol=1e-9, atol=1e-12)


def test_auto_way_and_unsupported_expand():
    assert resolve_way(tiny_vpt()) == "expand"
    assert resolve_way(tiny_mlp()) == "split"
    with pytest.raises(ValueError, match="expand"):
        per_group_grads(tiny_mlp(), *batch(), K, way="expand")
    vpt = tiny_vpt()
    vpt.backbone.blocks[0].norm1.weight.requires_grad_(True)  # a trainable backbone weight
    assert not expand_supported(vpt) and resolve_way(vpt) == "split"
    with pytest.raises(ValueError, match="way must be one of"):
        resolve_way(vpt, "batched")


def test_capture_is_not_reentrant_and_always_released():
    prompt = tiny_vpt().prompt
    with prompt.capture(), pytest.raises(RuntimeError, match="already active"):
        with prompt.capture():
            pass
    assert prompt._taps is None
    text = family_model("text")
    with text.capture() as taps, pytest.raises(RuntimeError, match="already active"):
        text(["a bird", "the lake"])
        with text.capture():
            pass
    assert "get_prompt" not in vars(text.backbone)
    assert len(taps) == 1 and taps[0][1].shape == (2, *text.prompts.shape)


def test_expand_refuses_a_linear_layer_not_run_per_sample():
    """A trainable linear layer on a tensor without one row per sample (here CoOp's text
    projection, run once per class) is not a per-sample computation: a clear error."""
    model = family_model("coop")
    model.clip.transformer.resblocks[0].mlp.c_fc.requires_grad_(True)
    x, y, g = family_batch("coop", n=5)
    with pytest.raises(RuntimeError, match="one row per sample"):
        per_group_grads(model, x, y, g, K, way="expand")


def test_coop_shared_gradients_fall_back_to_one_product_per_group(monkeypatch):
    """Where the batched backward pass is refused (an operator without a batching rule), the
    K vector-Jacobian products run one by one, with the same result."""
    model = family_model("coop")
    x, y, g = family_batch("coop", seed=5, absent=2)
    batched = per_group_grads(model, x, y, g, K, way="expand")
    grad = torch.autograd.grad
    calls = []

    def refuse_batched(*args, **kwargs):
        calls.append(kwargs.get("is_grads_batched", False))
        if kwargs.get("is_grads_batched"):
            raise RuntimeError("Batching rule not implemented")
        return grad(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", refuse_batched)
    one_by_one = per_group_grads(model, x, y, g, K, way="expand")
    assert True in calls and calls.count(False) == 1 + K  # the main pass, then K products
    torch.testing.assert_close(one_by_one.grads, batched.grads, rtol=1e-9, atol=1e-12)

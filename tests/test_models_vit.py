"""VPT on timm ViTs: equivalence with timm at T = 0, prompt placement, init, modes, errors."""

from __future__ import annotations

import math

import pytest
import timm
import torch

from cptlib.models import build_model, count_trainable
from cptlib.models.vit import VPTViT, prompt_init_range

TINY = dict(img_size=32, patch_size=8, depth=2, embed_dim=48, num_heads=2)
VIT = "vit_tiny_patch16_224"


def tiny_vpt(**options) -> VPTViT:
    torch.manual_seed(0)
    return build_model(VIT, 3, **{**TINY, **options})


def images(n: int = 4) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize(
    "extra",
    [{}, {"reg_tokens": 2}, {"no_embed_class": True}, {"pre_norm": True}],
    ids=["plain", "register-tokens", "no-embed-class", "pre-norm"],
)
def test_zero_prompts_equals_timm_forward_with_same_head(extra):
    model = tiny_vpt(prompt_tokens=0, **extra).eval()
    reference = timm.create_model(VIT, num_classes=3, **TINY, **extra).eval()
    state = {**model.backbone.state_dict(), "head.weight": model.head.weight,
             "head.bias": model.head.bias}
    reference.load_state_dict(state)
    x = images()
    assert torch.equal(model(x), reference(x))


def test_prompts_change_the_output_and_sit_after_the_prefix_tokens():
    model = tiny_vpt(prompt_tokens=4, reg_tokens=1).eval()
    x = images(2)
    tokens = model.forward_features(x)
    # CLS + 1 register + 4 prompts + (32/8)^2 patches
    assert tokens.shape == (2, 1 + 1 + 4 + 16, 48)
    zero = tiny_vpt(prompt_tokens=0, reg_tokens=1).eval()
    assert not torch.allclose(model(x), zero(x))


def _block_io(model: VPTViT, x: torch.Tensor, index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input of block ``index``, output of block ``index - 1``) in one forward pass."""
    seen = {}
    blocks = model.backbone.blocks
    hooks = [
        blocks[index].register_forward_pre_hook(lambda m, a: seen.setdefault("in", a[0])),
        blocks[index - 1].register_forward_hook(lambda m, a, o: seen.setdefault("out", o)),
    ]
    model(x)
    for hook in hooks:
        hook.remove()
    return seen["in"], seen["out"]


def test_deep_prompts_replace_the_slots_before_each_later_block():
    tokens = 3
    deep = tiny_vpt(prompt_tokens=tokens, deep=True).eval()
    assert deep.prompt.prompts.shape == (2, tokens, 48)
    block_in, prev_out = _block_io(deep, images(2), 1)
    slots = slice(1, 1 + tokens)  # right after CLS
    assert torch.equal(block_in[:, slots], deep.prompt.prompts[1].expand(2, -1, -1))
    assert torch.equal(block_in[:, 1 + tokens :], prev_out[:, 1 + tokens :])


def test_shallow_prompts_only_enter_at_the_input():
    tokens = 3
    shallow = tiny_vpt(prompt_tokens=tokens, deep=False).eval()
    assert shallow.prompt.prompts.shape == (1, tokens, 48)
    block_in, prev_out = _block_io(shallow, images(2), 1)
    assert torch.equal(block_in, prev_out)


def test_trainable_count_follows_the_vpt_formula():
    depth, tokens, width, classes = TINY["depth"], 4, TINY["embed_dim"], 3
    assert count_trainable(tiny_vpt(prompt_tokens=tokens)) == (
        depth * tokens * width + width * classes + classes
    )
    assert count_trainable(tiny_vpt(prompt_tokens=tokens, deep=False)) == (
        tokens * width + width * classes + classes
    )


def test_prompt_init_range_and_head_bias():
    assert prompt_init_range((16, 16), 768) == pytest.approx(0.0625)
    model = tiny_vpt(prompt_tokens=10)
    bound = math.sqrt(6 / (3 * 8 * 8 + 48))
    prompts = model.prompt.prompts
    assert prompts.abs().max() <= bound and prompts.abs().max() > 0.8 * bound
    assert torch.allclose(model.head.bias, torch.full((3,), -math.log(99.0)))


def test_train_mode_keeps_backbone_in_eval_and_only_prompt_dropout_is_stochastic():
    model = tiny_vpt(prompt_tokens=4, prompt_dropout=0.5)
    model.train()
    assert model.training and model.prompt.dropout.training
    assert not any(m.training for m in model.backbone.modules())
    x = images(2)
    assert not torch.equal(model(x), model(x))  # prompt dropout active
    model.eval()
    assert torch.equal(model(x), model(x))
    no_dropout = tiny_vpt(prompt_tokens=4, prompt_dropout=0.0, drop_rate=0.5,
                          attn_drop_rate=0.5, proj_drop_rate=0.5).train()
    assert torch.equal(no_dropout(x), no_dropout.eval()(x))  # backbone dropout stays off


def test_spec_rebuilds_the_same_model():
    model = tiny_vpt(prompt_tokens=2, deep=False)
    rebuilt = build_model(**model.spec)
    assert rebuilt.spec == model.spec and count_trainable(rebuilt) == count_trainable(model)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"class_token": False, "global_pool": "avg"}, "CLS token"),
        ({"global_pool": "avg"}, "global_pool"),
        ({"prompt_tokens": -1}, "prompt_tokens"),
        ({"prompt_dropout": 1.5}, "prompt_dropout"),
        ({"prompt_tokenz": 3}, "timm.create_model"),
    ],
)
def test_unsupported_options_raise_clear_errors(options, message):
    with pytest.raises(ValueError, match=message):
        tiny_vpt(**options)


def test_bad_name_and_num_classes():
    with pytest.raises(ValueError, match="unknown model name"):
        build_model("not_a_model", 2)
    with pytest.raises(ValueError, match="num_classes"):
        build_model(VIT, 0, **TINY)


def test_quick_backbone_random_weights():
    torch.manual_seed(0)
    model = build_model("quick", 2, pretrained=False)
    vit = model.backbone
    assert model.spec["prompt_tokens"] == 5 and model.method == "vpt-deep"
    assert count_trainable(model) == len(vit.blocks) * 5 * vit.embed_dim + vit.embed_dim * 2 + 2
    assert model(images(2)).shape == (2, 2)


def test_other_timm_vit_subclasses_are_refused_unless_their_forward_is_the_base_one():
    with pytest.raises(ValueError, match="overrides _pos_embed"):
        build_model("deit_tiny_distilled_patch16_224", 2, img_size=32, depth=1)
    with pytest.raises(ValueError, match="unknown model name"):
        build_model("efficientnet_b0", 2)

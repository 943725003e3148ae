"""CoOp on open_clip (tiny random CLIP): logits by hand, context init, counts, zero-shot, errors."""

from __future__ import annotations

import open_clip
import pytest
import torch
import torch.nn.functional as F

from cptlib.models import build_model, count_trainable
from cptlib.models.clip import CoOpCLIP, _visual_prompts

CLASSES = ["landbird", "waterbird", "duck"]
TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"width": 32, "heads": 2, "layers": 2},
}


def tiny_clip(**options) -> CoOpCLIP:
    torch.manual_seed(0)
    opts = {"class_names": CLASSES, "clip_cfg": TINY_CLIP, **options}
    return build_model("clip:ViT-B-32", len(opts["class_names"]), **opts).eval()


def images(n: int = 4) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def tokenize(texts: list[str]) -> torch.Tensor:
    return open_clip.get_tokenizer("ViT-B-32")(texts)


def hand_logits(model: CoOpCLIP, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    clip = model.clip
    image = F.normalize(clip.encode_image(x), dim=-1)
    return clip.logit_scale.exp() * image @ F.normalize(text, dim=-1).T


def test_context_initialised_from_a_prompt_reproduces_clip_on_that_prompt():
    # 4 context tokens initialised from "a photo of a" (4 BPE tokens): the learned prompt is
    # then exactly "a photo of a <class>.", which open_clip's own encode_text computes.
    model = tiny_clip(n_ctx=4, ctx_init="a photo of a")
    x = images()
    with torch.no_grad():
        text = model.clip.encode_text(tokenize([f"a photo of a {c}." for c in CLASSES]))
        assert torch.allclose(model.text_features(), F.normalize(text, dim=-1), atol=1e-6)
        assert torch.allclose(model(x), hand_logits(model, x, text), atol=1e-5)
        assert torch.allclose(model.zero_shot_logits(x), hand_logits(model, x, text), atol=1e-5)


def test_logits_are_scaled_cosines_with_the_learned_context():
    model = tiny_clip()  # 16 random context tokens
    x = images()
    with torch.no_grad():
        image = F.normalize(model.clip.encode_image(x), dim=-1)
        expected = model.clip.logit_scale.exp() * image @ model.text_features().T
        assert torch.allclose(model(x), expected, atol=1e-5)
        before = model(x)
        model.ctx.add_(torch.randn_like(model.ctx))  # a constant shift would be normalised away
        assert not torch.allclose(model(x), before)


def test_ctx_init_sets_the_last_context_tokens():
    model = tiny_clip(n_ctx=8, ctx_init="a photo of a")
    ids = model.clip.token_embedding.weight[tokenize(["a photo of a"])[0, 1:5]]
    assert torch.equal(model.ctx[4:], ids)
    assert not torch.allclose(model.ctx[:4], ids)
    assert model.ctx[:4].std().item() == pytest.approx(0.02, rel=0.5)
    with pytest.raises(ValueError, match="more than n_ctx"):
        tiny_clip(n_ctx=2, ctx_init="a photo of a")


def test_vit_l14_context_count_is_16_times_its_text_width():
    # The context count depends only on the text width (768 for ViT-L-14); shrink the rest.
    small = {"vision_cfg": {"layers": 1, "width": 64, "image_size": 28, "head_width": 32},
             "text_cfg": {"layers": 1}}
    model = build_model("clip:ViT-L-14", 2, class_names=["a", "b"], clip_cfg=small)
    assert model.clip.token_embedding.weight.shape[1] == 768
    assert count_trainable(model) == 16 * 768 == 12_288
    assert model.method == "coop"


def test_zero_shot_mode_trains_nothing_and_uses_the_hand_written_prompt():
    model = tiny_clip(zero_shot=True)
    x = images()
    assert count_trainable(model) == 0 and model.method == "zero-shot"
    with torch.no_grad():
        text = model.clip.encode_text(tokenize([f"a photo of a {c}." for c in CLASSES]))
        assert torch.allclose(model(x), hand_logits(model, x, text), atol=1e-5)


def test_visual_prompts_rerun_the_image_tower_exactly_and_add_their_count():
    model = tiny_clip(visual_prompt_tokens=2)
    assert count_trainable(model) == 16 * 32 + 2 * 2 * 64  # context + deep prompts (2 layers)
    x = images()
    with torch.no_grad():
        plain = F.normalize(model.clip.encode_image(x), dim=-1)
        assert not torch.allclose(model.forward_features(x), plain)
        model.visual_prompt = _visual_prompts(model.clip.visual, 0, True, 0.0)  # T = 0
        assert torch.allclose(model.forward_features(x), plain, atol=1e-6)


def test_train_mode_keeps_clip_in_eval():
    model = tiny_clip(visual_prompt_tokens=2).train()
    assert model.visual_prompt.dropout.training
    assert not any(m.training for m in model.clip.modules())


@pytest.mark.parametrize(
    "options, message",
    [
        ({"class_names": None}, "class_names"),
        ({"class_names": ["a", "b"], "num_classes": 3}, "num_classes"),
        ({"class_names": [" ".join(["bird"] * 80), "b"]}, "longer than"),
        ({"pretrained": True}, "clip_cfg"),
    ],
)
def test_bad_options_raise(options, message):
    opts = {"class_names": CLASSES, "clip_cfg": TINY_CLIP, **options}
    num_classes = opts.pop("num_classes", len(opts["class_names"] or CLASSES))
    with pytest.raises(ValueError, match=message):
        build_model("clip:ViT-B-32", num_classes, **opts)


def test_visual_prompts_on_a_resnet_tower_are_refused():
    cfg = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8},
           "text_cfg": {"width": 32, "heads": 2, "layers": 1}}
    with pytest.raises(ValueError, match="VisionTransformer image tower"):
        build_model("clip:RN50", 2, class_names=["a", "b"], clip_cfg=cfg, visual_prompt_tokens=2)
    model = build_model("clip:RN50", 2, class_names=["a", "b"], clip_cfg=cfg)  # CoOp alone works
    assert model(images(1)).shape == (1, 2)

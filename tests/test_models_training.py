"""Every family: only the intended parameters get gradients and change; frozen parts stay put."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from cptlib.models import build_model, count_trainable

TINY_VIT = dict(img_size=32, patch_size=8, depth=2, embed_dim=48, num_heads=2)
TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"width": 32, "heads": 2, "layers": 2},
}
TINY_BERT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
# peft calls a transformers API that transformers 5 deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")

TEXTS = ["the bird sat on the lake", "a small bird", "grass and trees", "water everywhere"]

# name, options, rule saying which parameter names must be trainable
CASES: dict[str, tuple[str, dict, Callable[[str], bool]]] = {
    "vpt-deep": ("vit_tiny_patch16_224", {**TINY_VIT, "prompt_tokens": 3},
                 lambda n: n in {"prompt.prompts", "head.weight", "head.bias"}),
    "vpt-shallow": ("vit_tiny_patch16_224", {**TINY_VIT, "prompt_tokens": 3, "deep": False},
                    lambda n: n in {"prompt.prompts", "head.weight", "head.bias"}),
    "quick": ("quick", {"backbone_cfg": {"width": 24, "depth": 2, "heads": 2}},
              lambda n: n in {"prompt.prompts", "head.weight", "head.bias"}),
    "coop+vpt": ("clip:ViT-B-32", {"class_names": ["a", "b"], "clip_cfg": TINY_CLIP,
                                   "visual_prompt_tokens": 2},
                 lambda n: n in {"ctx", "visual_prompt.prompts"}),
    "lora": ("lora:vit_tiny_patch16_224", TINY_VIT,
             lambda n: ".lora_A." in n or ".lora_B." in n or n.startswith("head.")),
    "resnet": ("resnet10t", {}, lambda n: True),
    "minilm": ("minilm", {"prompt_tokens": 4},
               lambda n: "prompt_encoder" in n or "modules_to_save" in n),
    "bert": ("bert-base-uncased", {"prompt_tokens": 4, "bert_cfg": TINY_BERT},
             lambda n: "prompt_encoder" in n or "modules_to_save" in n),
}


def build(case: str):
    name, options, _ = CASES[case]
    torch.manual_seed(0)
    return build_model(name, 2, **options)


def batch(case: str):
    if case in ("minilm", "bert"):
        return TEXTS
    return torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("case", sorted(CASES))
def test_only_intended_parameters_receive_gradients_and_change(case):
    model = build(case).train()
    expected = CASES[case][2]
    params = dict(model.named_parameters())
    trainable = {n for n, p in params.items() if p.requires_grad}
    assert trainable == {n for n in params if expected(n)}
    assert count_trainable(model) == sum(params[n].numel() for n in trainable) > 0
    before = {n: p.detach().clone() for n, p in params.items()}
    optimiser = torch.optim.SGD([params[n] for n in sorted(trainable)], lr=0.5)
    x, y = batch(case), torch.tensor([0, 1, 1, 0])
    for _ in range(2):  # two steps: LoRA's A only gets a gradient once B ≠ 0
        optimiser.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimiser.step()
    for name, p in params.items():
        if name in trainable:
            assert p.grad is not None and not torch.equal(p, before[name]), name
        else:
            assert p.grad is None and torch.equal(p, before[name]), name


@pytest.mark.parametrize("case", sorted(CASES))
def test_train_mode_keeps_the_frozen_backbone_in_eval_mode(case):
    model = build(case).train()
    assert model.training
    if case == "resnet":  # full fine-tune: BatchNorm trains, and samples interact
        assert model.batch_interacts and all(m.training for m in model.modules())
        return
    assert not model.batch_interacts
    for attr in model.frozen_modules:
        stochastic = [n for n, m in getattr(model, attr).named_modules()
                      if m.training and "lora_dropout" not in n]
        assert stochastic == []


@pytest.mark.parametrize("case", sorted(CASES))
def test_logits_shape_and_spec_rebuild(case):
    model = build(case).eval()
    x = batch(case)
    with torch.no_grad():
        assert model(x).shape == (4, 2)
    torch.manual_seed(0)
    rebuilt = build_model(**model.spec)
    assert type(rebuilt) is type(model) and rebuilt.spec == model.spec
    assert count_trainable(rebuilt) == count_trainable(model)


def test_lora_starts_at_the_backbone_and_counts_r_times_4d_per_block():
    model = build("lora").eval()
    width, depth, r = TINY_VIT["embed_dim"], TINY_VIT["depth"], 8
    assert count_trainable(model) == depth * r * 4 * width + width * 2 + 2
    x = batch("lora")
    with torch.no_grad():
        with model.backbone.disable_adapter():
            plain = model.head(model.vit(x))
        assert torch.allclose(model(x), plain)  # B = 0 at init


def test_text_model_needs_a_list_of_strings():
    model = build("bert")
    with pytest.raises(ValueError, match="list of strings"):
        model("one string")
    assert count_trainable(model) == 4 * 32 + 32 * 2 + 2  # prompts + classifier copy


def test_sample_vocab_prompts_start_as_vocabulary_embeddings_drawn_from_the_seed():
    """The quick text profile's init: each prompt row is a row of the frozen word-embedding
    table, drawn from the run's seed (so paired runs share it), and at the vocabulary's scale,
    not the unit-variance scale of ``random`` (which, through BERT's embedding LayerNorm,
    shrinks the prompts' effective learning rate by the squared norm ratio)."""
    def prompts(init: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(seed)
        model = build_model("bert-base-uncased", 2, prompt_tokens=4, bert_cfg=TINY_BERT,
                            prompt_init=init)
        vocab = model.backbone.get_input_embeddings().weight
        return model.prompts.detach().clone(), vocab.detach()

    sampled, vocab = prompts("sample_vocab", 0)
    assert (sampled[:, None, :] == vocab[None]).all(-1).any(-1).all()  # vocabulary rows
    assert torch.equal(prompts("sample_vocab", 0)[0], sampled)
    assert not torch.equal(prompts("sample_vocab", 1)[0], sampled)
    random_rows, _ = prompts("random", 0)
    assert random_rows.norm(dim=1).min() > 10 * vocab.norm(dim=1).max()

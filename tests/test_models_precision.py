"""The forward pass at reduced precision (``cptlib.models.precision``) and what a run at bf16
keeps exact: float32 logits and parameters, the split's order of predictions, a model left as
it was."""

from __future__ import annotations

import pytest
import torch

from cptlib.config import TrainConfig
from cptlib.models import build_model
from cptlib.models.precision import precision
from cptlib.train import predict, train

TINY_BERT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")


def _tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 3))


def test_bf16_precision_runs_the_forward_in_bf16_and_returns_float32_logits():
    model, x = _tiny(), torch.randn(8, 16)
    plain = model(x)
    with precision(model, "bf16"):
        low = model(x)
    assert low.dtype == torch.float32
    assert not torch.equal(low, plain)  # really computed in bf16
    assert torch.allclose(low, plain, atol=0.05)
    assert torch.equal(model(x), plain)  # the plain forward is back on exit
    assert "forward" not in vars(model)


def test_fp32_precision_changes_nothing_and_a_bad_name_is_refused():
    model, x = _tiny(), torch.randn(4, 16)
    with precision(model, "fp32"):
        assert torch.equal(model(x), _tiny()(x))
    with pytest.raises(ValueError, match="precision must be one of"):
        with precision(model, "fp16"):
            pass


def test_bf16_gradients_reach_float32_parameters():
    model, x = _tiny(), torch.randn(8, 16)
    with precision(model, "bf16"):
        model(x).sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters())


def test_frozen_weights_are_held_in_bf16_once_with_exactly_autocast_s_values():
    model, x = _tiny(), torch.randn(8, 16)
    first, last = model[0], model[2]
    first.requires_grad_(False)  # frozen: held in bf16; the trained layer stays float32
    frozen = first.weight.detach().clone()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        reference = model(x).float()  # autocast casting the weights at every call
    with precision(model, "bf16"):
        assert first.weight.dtype == first.bias.dtype == torch.bfloat16
        assert last.weight.dtype == torch.float32
        assert torch.equal(model(x), reference)
    assert first.weight.dtype == torch.float32 and torch.equal(first.weight, frozen)


def test_blocks_nest_and_the_outer_one_still_holds_after_the_inner_ends():
    model, x = _tiny(), torch.randn(8, 16)
    plain = model(x)
    with precision(model, "bf16"):
        outer = vars(model)["forward"]
        with precision(model, "bf16"):
            pass
        assert vars(model)["forward"] is outer
        assert not torch.equal(model(x), plain)
    assert "forward" not in vars(model)


def test_timm_attention_is_unfused_under_bf16_and_fused_again_after():
    model = build_model("quick", 2, pretrained=False,
                        backbone_cfg={"width": 24, "depth": 2, "heads": 2})
    attentions = [m for m in model.modules() if hasattr(m, "fused_attn")]
    assert attentions
    before = [m.fused_attn for m in attentions]
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    plain = model.eval()(x)
    with precision(model, "bf16"):
        assert not any(m.fused_attn for m in attentions)
        low = model(x)
    assert [m.fused_attn for m in attentions] == before
    assert low.dtype == torch.float32 and torch.allclose(low, plain, atol=0.1)


def test_hugging_face_attention_is_eager_under_bf16_and_restored_after():
    model = build_model("bert-base-uncased", 2, prompt_tokens=4, bert_cfg=TINY_BERT).eval()
    configs = [m.config for m in model.modules() if hasattr(m, "set_attn_implementation")]
    before = {c._attn_implementation for c in configs}
    texts = ["the bird sat on the lake", "grass"]
    plain = model(texts)
    with precision(model, "bf16"):
        assert {c._attn_implementation for c in configs} == {"eager"}
        low = model(texts)
    assert {c._attn_implementation for c in configs} == before
    assert torch.allclose(low, plain, atol=0.1)


def test_text_predictions_come_back_in_the_split_s_order_whatever_the_batching():
    model = build_model("bert-base-uncased", 2, prompt_tokens=4, bert_cfg=TINY_BERT)
    words = ["bird", "lake", "water", "tree", "grass", "sky"]
    split = [(" ".join(words[: 1 + (7 * i) % 6]), i % 2, i % 4) for i in range(11)]
    logits, y, g = predict(model, split, batch_size=4)  # batched by length, 3 batches
    one_by_one = torch.cat([predict(model, [item], batch_size=1)[0] for item in split])
    assert torch.allclose(logits, one_by_one, atol=1e-5)
    assert y.tolist() == [i % 2 for i in range(11)] and g.tolist() == [i % 4 for i in range(11)]


def test_a_bf16_run_trains_float32_parameters_and_leaves_the_model_as_it_was():
    from tests.test_train import SETS, make_model

    cfg = dict(method="cpt", alpha=1.0, steps=12, eval_every=6, batch_size=16, lr=0.1)
    model = make_model()
    out = train(model, SETS["train"], SETS["val"], SETS["test"],
                TrainConfig(**cfg, precision="bf16"), progress=False)
    ref = train(make_model(), SETS["train"], SETS["val"], SETS["test"], TrainConfig(**cfg),
                progress=False)
    assert "forward" not in vars(model)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert out["finished"] and len(out["history"]) == 2
    # Same batches, same balancer: bf16 moves the losses by rounding, not by a different run.
    for a, b in zip(out["history"], ref["history"], strict=True):
        assert a["val"]["avg_acc"] == pytest.approx(b["val"]["avg_acc"], abs=0.1)

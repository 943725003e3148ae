"""Metrics on cases small enough to compute by hand (the expected values are worked out in the
comments, not read off the implementation)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from cptlib import metrics

# 6 samples, 4 groups, group 3 empty:
#   group 0: samples 0, 1 -> correct, wrong      -> 1/2
#   group 1: sample 2     -> correct             -> 1
#   group 2: samples 3-5  -> wrong, right, right -> 2/3
PRED = [1, 0, 1, 1, 0, 0]
Y = [1, 1, 1, 0, 0, 0]
G = [0, 0, 1, 2, 2, 2]


def test_per_group_accuracy_hand_case_with_empty_group():
    acc = metrics.per_group_accuracy(torch.tensor(PRED), torch.tensor(Y), torch.tensor(G), 4)
    assert acc.shape == (4,)
    assert acc[:3].tolist() == pytest.approx([0.5, 1.0, 2 / 3])
    assert math.isnan(acc[3])


def test_numpy_and_list_inputs_match_torch():
    from_torch = metrics.per_group_accuracy(torch.tensor(PRED), torch.tensor(Y), torch.tensor(G), 4)
    from_numpy = metrics.per_group_accuracy(np.array(PRED), np.array(Y), np.array(G), 4)
    from_list = metrics.per_group_accuracy(PRED, Y, G, 4)
    torch.testing.assert_close(from_numpy, from_torch, equal_nan=True)
    torch.testing.assert_close(from_list, from_torch, equal_nan=True)


def test_per_group_loss_is_the_group_mean():
    # group 0: (1 + 3) / 2 = 2; group 1: 2; group 2: (4 + 5 + 6) / 3 = 5; group 3: empty
    loss = metrics.per_group_loss(torch.tensor([1.0, 3.0, 2.0, 4.0, 5.0, 6.0]), G, 4)
    assert loss[:3].tolist() == pytest.approx([2.0, 2.0, 5.0])
    assert math.isnan(loss[3])


def test_worst_group_ignores_empty_groups():
    assert metrics.worst_group_accuracy([0.5, 1.0, 2 / 3, math.nan]) == 0.5
    assert metrics.worst_group_accuracy([None, 0.9, 0.8]) == pytest.approx(0.8)
    with pytest.raises(ValueError, match="no group has samples"):
        metrics.worst_group_accuracy([math.nan, math.nan])


def test_average_accuracy_uses_training_proportions():
    # present groups 0, 1, 2 with training counts 10, 20, 30 (group 3's 40 is dropped):
    # (0.5 * 10 + 1 * 20 + 2/3 * 30) / 60 = 45 / 60
    avg = metrics.average_accuracy([0.5, 1.0, 2 / 3, math.nan], [10, 20, 30, 40])
    assert avg == pytest.approx(0.75)
    # with every group present, the weights are the training proportions themselves
    assert metrics.average_accuracy([1.0, 0.0], [3, 1]) == pytest.approx(0.75)


def test_average_accuracy_rejects_bad_counts():
    with pytest.raises(ValueError, match="2 group accuracies but 3"):
        metrics.average_accuracy([0.5, 0.5], [1, 2, 3])
    with pytest.raises(ValueError, match="non-negative"):
        metrics.average_accuracy([0.5, 0.5], [1, -2])


def test_average_accuracy_is_undefined_when_no_evaluated_group_was_trained_on():
    # MetaShift: validation and test hold contexts that never occur in training.
    assert math.isnan(metrics.average_accuracy([0.5, math.nan], [0, 3]))


def test_mean_accuracy():
    assert metrics.mean_accuracy(PRED, Y) == pytest.approx(4 / 6)


def test_auroc_hand_case():
    # positives 0.35, 0.8; negatives 0.1, 0.4: of the 4 (pos, neg) pairs only (0.35, 0.4) is
    # ordered wrongly -> 3/4
    assert metrics.auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)


def test_auroc_single_class_is_nan_with_reason():
    with pytest.warns(RuntimeWarning, match="only class"):
        assert math.isnan(metrics.auroc([0.2, 0.7], [1, 1]))
    with pytest.raises(ValueError, match="binary"):
        metrics.auroc([0.2, 0.7], [0, 2])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: metrics.per_group_accuracy([1, 0], [1, 0, 1], [0, 0, 1], 2), "same length"),
        (lambda: metrics.per_group_accuracy([1, 0], [1, 0], [0, 2], 2), "0..1"),
        (lambda: metrics.per_group_accuracy([1, 0], [1, 0], [0, -1], 2), "0..1"),
        (lambda: metrics.per_group_loss([1.0], [0], 0), "positive"),
        (lambda: metrics.per_group_accuracy([[1, 0]], [1], [0], 2), "dimension"),
        (lambda: metrics.per_group_accuracy([0.5, 1.0], [1, 0], [0, 1], 2), "integers"),
    ],
)
def test_bad_inputs_raise_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


LN3 = math.log(3.0)


def test_evaluate_logits_hand_case():
    # p(class 1) = 1/4 for [ln3, 0] and 3/4 for [0, ln3]
    #   s0: [ln3, 0], y 0, g 0 -> right, CE = ln(4/3)
    #   s1: [0, ln3], y 0, g 0 -> wrong, CE = ln 4
    #   s2: [0, ln3], y 1, g 1 -> right, CE = ln(4/3)
    #   s3: [0, ln3], y 1, g 3 -> right, CE = ln(4/3)      (group 2 empty)
    logits = torch.tensor([[LN3, 0.0], [0.0, LN3], [0.0, LN3], [0.0, LN3]])
    out = metrics.evaluate_logits(logits, [0, 0, 1, 1], [0, 0, 1, 3], 4, [3, 1, 1, 3])
    lo, hi = math.log(4 / 3), math.log(4)
    assert out["per_group_acc"] == [0.5, 1.0, None, 1.0]
    assert out["worst_group_acc"] == 0.5
    # groups 0, 1, 3 weighted 3, 1, 3: (0.5 * 3 + 1 + 3) / 7
    assert out["avg_acc"] == pytest.approx(5.5 / 7)
    assert out["mean_acc"] == pytest.approx(0.75)
    assert out["per_group_loss"][0] == pytest.approx((lo + hi) / 2)
    assert out["per_group_loss"][1] == pytest.approx(lo)
    assert out["per_group_loss"][2] is None
    assert out["per_group_loss"][3] == pytest.approx(lo)
    assert out["per_group_n"] == [2, 1, 0, 1]
    assert out["loss"] == pytest.approx((3 * lo + hi) / 4)
    # scores 1/4, 3/4 (negatives), 3/4, 3/4 (positives): 2 pairs right, 2 ties -> (2 + 1) / 4
    assert out["auroc"] == pytest.approx(0.75)
    json.dumps(out, allow_nan=False)  # plain Python values only
    assert all(isinstance(out[k], float) for k in ("worst_group_acc", "avg_acc", "loss"))


def test_evaluate_logits_more_classes_has_no_auroc():
    torch.manual_seed(0)
    logits = torch.randn(12, 3)
    y = torch.arange(12) % 3
    out = metrics.evaluate_logits(logits, y, y, 3, [4, 4, 4])
    assert "auroc" not in out
    pred = logits.argmax(1)
    assert out["mean_acc"] == pytest.approx((pred == y).double().mean().item())
    # one group per class, equal training counts: the weighted average is the mean of the groups
    assert out["avg_acc"] == pytest.approx(sum(out["per_group_acc"]) / 3)
    assert out["worst_group_acc"] == min(out["per_group_acc"])
    for value in (out["worst_group_acc"], out["avg_acc"], out["mean_acc"]):
        assert 0.0 <= value <= 1.0


def test_evaluate_logits_rejects_bad_labels_and_empty_input():
    with pytest.raises(ValueError, match="labels must lie in 0..1"):
        metrics.evaluate_logits(torch.zeros(2, 2), [0, 2], [0, 1], 2, [1, 1])
    with pytest.raises(ValueError, match="no samples"):
        metrics.evaluate_logits(torch.zeros(0, 2), [], [], 2, [1, 1])

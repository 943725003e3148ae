"""CoOp's text tower runs only on the positions up to the last end-of-text token, exactly."""

from __future__ import annotations

import torch

from cptlib.models import build_model

TINY_CLIP = {"embed_dim": 16,
             "vision_cfg": {"image_size": 16, "layers": 1, "width": 32, "patch_size": 8,
                            "head_width": 16},
             "text_cfg": {"width": 32, "heads": 2, "layers": 2}}


def test_truncated_text_tower_equals_the_full_77_positions():
    torch.manual_seed(0)
    names = ["landbird", "a very long water bird name", "duck"]
    model = build_model("clip:ViT-B-32", 3, class_names=names, n_ctx=5, clip_cfg=TINY_CLIP)
    model = model.double()
    ends = model.prompt_ids.argmax(dim=-1)  # the end-of-text token has the largest id
    assert model.text_length == int(ends.max()) + 1 < model.prompt_ids.shape[1]
    short = model.text_features()
    model.text_length = model.prompt_ids.shape[1]  # what open_clip's encode_text computes
    full = model.text_features()
    torch.testing.assert_close(short, full, rtol=1e-12, atol=1e-12)
    model.text_length = int(ends.max())  # one position too few: the longest prompt changes
    assert not torch.allclose(model.text_features()[1], full[1], atol=1e-6)

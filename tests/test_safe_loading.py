"""No file the study reads can run code: a crafted resume checkpoint or adapter is refused
before its payload runs, with a one-line error that names the file to delete."""

from __future__ import annotations

import os
import pickle
import subprocess
from pathlib import Path

import pytest
import torch
from test_train import run

from cptlib.models import build_model, load_adapter
from cptlib.train import TrainConfig


class Payload:
    """Unpickling this object writes ``marker``: what a hostile checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


def crafted_checkpoint(path: Path, marker: Path) -> Path:
    """A checkpoint that looks like ours but carries the payload among its entries."""
    torch.save({"fingerprint": "x", "model": {}, "opt": Payload(marker), "sched": {},
                "balancer": {}, "rng": torch.get_rng_state(), "state": {}}, path)
    return path


def test_the_payload_runs_under_a_plain_unpickler(tmp_path):
    """The control: the payload is real, so the next test's absence of effect means something."""
    marker = tmp_path / "marker"
    pickle.loads(pickle.dumps(Payload(marker)))  # noqa: S301 - the point of the control
    assert marker.read_text() == "code ran"


def test_a_crafted_resume_checkpoint_runs_no_code_and_names_the_file(tmp_path):
    marker = tmp_path / "marker"
    ckpt = crafted_checkpoint(tmp_path / "run.pt", marker)
    with pytest.raises(ValueError, match=rf"delete {ckpt}") as err:
        run(TrainConfig(steps=10, eval_every=5), checkpoint=ckpt)
    assert not marker.exists()
    assert "\n" not in str(err.value) and "cannot be loaded safely" in str(err.value)


@pytest.mark.parametrize("content", [b"", b"\x00" * 64, os.urandom(512)], ids=["empty", "zeros",
                                                                                "random"])
def test_a_damaged_resume_checkpoint_is_a_value_error_naming_it(tmp_path, content):
    ckpt = tmp_path / "run.pt"
    ckpt.write_bytes(content)
    with pytest.raises(ValueError, match=rf"delete {ckpt}"):
        run(TrainConfig(steps=10, eval_every=5), checkpoint=ckpt)


def test_a_safe_pickle_of_something_else_is_refused(tmp_path):
    ckpt = tmp_path / "run.pt"
    torch.save([1, 2, 3], ckpt)
    with pytest.raises(ValueError, match="not a training checkpoint"):
        run(TrainConfig(steps=10, eval_every=5), checkpoint=ckpt)


def test_a_real_checkpoint_still_loads_safely(tmp_path):
    ckpt = tmp_path / "run.pt"
    run(TrainConfig(method="groupdro", steps=10, eval_every=5), checkpoint=ckpt, stop_after=5)
    saved = torch.load(ckpt, weights_only=True)
    assert saved["state"]["step"] == 5
    assert run(TrainConfig(method="groupdro", steps=10, eval_every=5), checkpoint=ckpt)["finished"]


@pytest.mark.parametrize("kind", ["pickle", "random", "foreign-safetensors"])
def test_a_crafted_adapter_file_is_refused_without_running_code(tmp_path, kind):
    marker, path = tmp_path / "marker", tmp_path / "a.safetensors"
    if kind == "pickle":
        torch.save({"head.weight": Payload(marker)}, path)
    elif kind == "random":
        path.write_bytes(os.urandom(256))
    else:
        from safetensors.torch import save_file

        save_file({"head.weight": torch.zeros(2)}, str(path), metadata={"format": "other"})
    torch.manual_seed(0)
    model = build_model("vit_tiny_patch16_224", 3, img_size=32, patch_size=8, depth=2,
                        embed_dim=48, num_heads=2, prompt_tokens=4)
    with pytest.raises(ValueError, match=str(path)):
        load_adapter(model, path)
    assert not marker.exists()


def test_no_unsafe_load_anywhere_in_the_project():
    """Grepping the project's tracked files for an unsafe torch.load finds nothing."""
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(["git", "grep", "-n", "weights_only" + "=False"], cwd=root,
                         capture_output=True, text=True, check=False)
    assert out.returncode == 1 and out.stdout == "", out.stdout

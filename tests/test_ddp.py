"""Several processes for one run (gloo on the CPU): a 2-process run of the synthetic experiment
at smoke scale ends where the 1-process run with the same global batch ends, for CPT (every way
of computing per-group gradients), ERM and GroupDRO, and the balancer's β is the same on every
rank at every step.

Prompt dropout is off here (``prompt_dropout=0``): its random masks are drawn per process, so
with it a sharded batch gets other masks than the single-process batch.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cptlib import distributed as D
from cptlib.runs.inputs import build_model, load_data
from cptlib.runs.spec import RunSpec
from cptlib.train import train

CASES = {  # name: overrides of the smoke synthetic run
    "cpt-expand": {"method": "cpt", "grad_way": "expand"},
    "cpt-split": {"method": "cpt", "grad_way": "split"},
    "cpt-naive": {"method": "cpt", "grad_way": "naive", "c": [1, 1, 4, 1]},
    "erm": {"method": "erm", "alpha": 0.0},
    "groupdro": {"method": "groupdro"},
}


def run_case(name: str) -> dict:
    """Train one case (in whatever process group is active) and keep what must agree."""
    spec = RunSpec.build("synthetic", "smoke", {
        **CASES[name], "steps": 6, "eval_every": 3, "batch_size": 16, "seed": 1,
        "model_options": {"pretrained": False, "prompt_tokens": 2, "deep": True,
                          "prompt_dropout": 0.0}})
    cfg = spec.train_config()
    data = load_data(spec)
    model = build_model(spec, data.train.n_classes)
    betas: list[tuple[int, torch.Tensor]] = []
    out = train(model, data.train, data.val, data.test, cfg, progress=False,
                on_beta=lambda step, beta: betas.append((step, beta)))
    return {"out": out, "betas": betas,
            "params": {n: p.detach().clone() for n, p in model.named_parameters()
                       if p.requires_grad}}


def _rank_main(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    try:
        assert D.world_size() == world and D.rank() == rank
        torch.save({name: run_case(name) for name in CASES}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    single = {name: run_case(name) for name in CASES}
    mp.spawn(_rank_main, args=(2, str(tmp / "pg"), str(tmp)), nprocs=2, join=True)
    ranks = [torch.load(tmp / f"rank{r}.pt", weights_only=True) for r in range(2)]
    return single, ranks


def assert_close(a, b, where: str = "") -> None:
    """Nested dicts/lists of numbers equal up to rounding (rel 1e-5); None/NaN where the other
    has None/NaN; other values equal."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_close(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_close(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=where)
    elif isinstance(a, float) and not isinstance(a, bool):
        assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-5, abs=1e-6), \
            f"{where}: {a} != {b}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


@pytest.mark.parametrize("name", list(CASES))
def test_two_processes_end_where_one_process_ends(runs, name):
    single, ranks = runs
    one = single[name]
    for rank in ranks:
        two = rank[name]
        assert_close(two["params"], one["params"], f"{name} parameters")
        assert_close(two["out"]["history"], one["out"]["history"], f"{name} history")
        assert two["out"]["selected_step"] == one["out"]["selected_step"]
        assert_close(two["out"]["val"], one["out"]["val"], f"{name} val")
        assert_close(two["out"]["test"], one["out"]["test"], f"{name} test")
    # the two ranks hold the very same parameters (the same update was applied)
    for key, value in ranks[0][name]["params"].items():
        assert torch.equal(ranks[1][name]["params"][key], value), key


@pytest.mark.parametrize("name", list(CASES))
def test_balancer_weights_are_identical_on_every_rank_at_every_step(runs, name):
    single, ranks = runs
    steps = [s for s, _ in single[name]["betas"]]
    assert steps == list(range(6))
    for r in ranks:
        assert [s for s, _ in r[name]["betas"]] == steps
    for (_, b0), (_, b1), (_, b) in zip(ranks[0][name]["betas"], ranks[1][name]["betas"],
                                        single[name]["betas"], strict=True):
        assert torch.equal(b0, b1)  # computed on each rank from the same global sums
        torch.testing.assert_close(b0, b, rtol=1e-5, atol=1e-6)


def test_one_process_functions_are_the_identity():
    t = torch.arange(6.0)
    assert D.world_size() == 1 and D.rank() == 0 and D.is_main()
    assert D.shard(t) is t and D.broadcast(t) is t
    losses, counts = torch.tensor([1.0, 2.0]), torch.tensor([3, 0])
    assert D.global_group_stats(losses, counts) == (losses, counts, None)

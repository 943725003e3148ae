"""Tests of ``cpt bench``: the pure parts (schedule, statistics, rows, ratios, memory replay),
one measured step per method on a tiny model, and ``main --quick`` end to end."""

from __future__ import annotations

import argparse
import json
import math

import pytest
import torch

from cptlib import bench
from cptlib.bench import (
    BALANCER_ONLY,
    METHODS,
    ROW_KEYS,
    TINY_CLIP,
    TINY_TEXT,
    TINY_VIT,
    TINY_VIT_OPTIONS,
    StepCase,
    StepSuite,
    add_ratios,
    device_slug,
    group_ids,
    interleave,
    make_row,
    peak_live_bytes,
    round_robin,
    step_peak_mb,
    summarize,
)


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: these tests check behaviour, not speed, and the CI machine is shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------------- pure parts


def test_round_robin_runs_every_case_once_per_round_with_rotating_start():
    order = round_robin(4, 6)
    assert len(order) == 6
    for r, rnd in enumerate(order):
        assert sorted(rnd) == [0, 1, 2, 3]
        assert rnd[0] == r % 4
    # over a full cycle of rounds every case takes every position once
    for position in range(4):
        assert sorted(rnd[position] for rnd in order[:4]) == [0, 1, 2, 3]


@pytest.mark.parametrize("n, rounds", [(0, 3), (2, -1)])
def test_round_robin_rejects_bad_sizes(n, rounds):
    with pytest.raises(ValueError):
        round_robin(n, rounds)


def test_summarize_gives_median_and_iqr():
    median, iqr = summarize([5.0, 1.0, 3.0, 2.0, 4.0])
    assert median == 3.0
    assert iqr == pytest.approx(2.0)  # inclusive quartiles 2 and 4
    assert summarize([0.25]) == (0.25, 0.0)
    with pytest.raises(ValueError, match="no samples"):
        summarize([])


def test_group_ids_make_every_group_present_with_balanced_sizes():
    gen = torch.Generator().manual_seed(0)
    for batch, k in [(64, 4), (64, 16), (10, 3), (8, 8)]:
        g = group_ids(batch, k, gen)
        counts = torch.bincount(g, minlength=k)
        assert g.shape == (batch,) and int(g.max()) < k
        assert bool((counts > 0).all()) and int(counts.max() - counts.min()) <= 1
    with pytest.raises(ValueError, match="cannot all be present"):
        group_ids(4, 8, gen)


def test_peak_live_bytes_replays_events_in_time_order():
    events = [(3.0, -100), (1.0, 100), (2.0, 50), (4.0, -50), (5.0, 10)]
    assert peak_live_bytes(events) == 150
    assert peak_live_bytes([(0.0, -5), (1.0, -5)]) == 0  # frees of earlier tensors only
    assert peak_live_bytes([]) == 0


def _row(model, method, k, batch, median):
    return make_row(model, method, k, batch, [median, median], None)


def test_make_row_has_the_documented_keys():
    row = make_row("quick", "cpt-split", 4, 64, [0.1, 0.3, 0.2], 12.34567)
    assert tuple(row) == ROW_KEYS
    assert row["median_s"] == pytest.approx(0.2) and row["repeats"] == 3
    assert row["peak_mem_mb"] == 12.346 and row["ratio_to_erm"] is None


def test_add_ratios_divides_by_erm_of_same_model_batch_and_k():
    rows = [
        _row("quick", "erm", 4, 64, 0.10),
        _row("quick", "cpt-split", 4, 64, 0.12),
        _row("quick", "cpt-naive", 4, 64, 0.30),
        _row("quick", "erm", 16, 64, 0.20),
        _row("quick", "cpt-split", 16, 64, 0.30),
        _row("vit", "cpt-split", 4, 8, 1.0),  # no ERM row for this model: no ratio
        _row("none", BALANCER_ONLY, 4, None, 0.001),
    ]
    ratios = [r["ratio_to_erm"] for r in add_ratios(rows)]
    assert ratios[:5] == pytest.approx([1.0, 1.2, 3.0, 1.0, 1.5])
    assert ratios[5:] == [None, None]
    assert rows[1]["ratio_to_erm"] is None  # the input rows are not modified


def test_table_shows_every_row_and_device_slug_is_file_safe():
    rows = add_ratios([_row("quick", "erm", 2, 64, 0.1), _row("none", BALANCER_ONLY, 2, None,
                                                             0.002)])
    text = bench.table(rows)
    assert "balancer-only" in text and "erm" in text and len(text.splitlines()) == 3
    assert device_slug("NVIDIA H200 (MIG 1g.18gb)") == "nvidia-h200-mig-1g-18gb"
    assert device_slug("cpu") == "cpu"


def test_suite_validation_names_the_problem():
    with pytest.raises(ValueError, match="cannot all be present"):
        StepSuite("quick", 8, 32, (16,), repeats=2).validate()
    with pytest.raises(ValueError, match="unknown methods"):
        StepSuite("quick", 8, 32, (2,), repeats=2, methods=("sgd",)).validate()
    with pytest.raises(ValueError, match="warmup"):
        StepSuite("quick", 8, 32, (2,), repeats=2, warmup=0).validate()


# ------------------------------------------------------------------------------- measuring


def test_interleave_times_repeats_and_measures_memory_in_last_warmup_round():
    log: list[int] = []
    cases = [lambda i=i: log.append(i) for i in range(3)]
    samples, peaks = interleave(cases, repeats=4, warmup=2, device="cpu")
    assert log == [i for rnd in round_robin(3, 6) for i in rnd]
    assert [len(s) for s in samples] == [4, 4, 4]
    assert all(t >= 0 for s in samples for t in s)
    assert all(p is not None and p >= 0 for p in peaks)
    _, peaks = interleave(cases, repeats=1, warmup=1, device="cpu", memory=False)
    assert peaks == [None, None, None]


def test_step_peak_mb_sees_tensors_allocated_during_the_step():
    def case() -> None:
        a = torch.ones(2**20)  # 4 MiB
        b = a * 2  # 4 MiB more while a is alive
        del a, b

    peak = step_peak_mb(case, "cpu")
    assert 7.9 < peak < 9.0


@pytest.fixture(scope="module")
def tiny_model():
    from cptlib.models import build_model

    torch.manual_seed(0)
    model = build_model(TINY_VIT, 2, deep=True, pretrained=False, prompt_dropout=0.0,
                        **TINY_VIT_OPTIONS)
    return model.train()


@pytest.mark.parametrize("method", METHODS)
def test_step_case_runs_one_optimiser_step_of_that_method(tiny_model, method):
    params = [p for p in tiny_model.parameters() if p.requires_grad]
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(8, 3, 32, 32, generator=gen)
    y, g = torch.randint(0, 2, (8,), generator=gen), group_ids(8, 4, gen)
    case = StepCase(tiny_model, params, method, 4, x, y, g)
    assert case.cfg.method == method.split("-")[0]
    assert case.way == (method.partition("-")[2] or "auto")
    assert case.balancer.needs_gramian == method.startswith("cpt")
    before = [p.detach().clone() for p in params]
    case()
    assert case.step == 1 and case.window.steps == 1
    assert all(p.grad is None for p in params)  # zero_grad(set_to_none=True) ran
    assert any(not torch.equal(b, p) for b, p in zip(before, params, strict=True))


# ----------------------------------------------------------------------------- end to end


def _reject(constant: str) -> None:
    raise AssertionError(f"non-standard JSON constant {constant}")


def test_main_quick_writes_valid_json_rows_for_every_method(tmp_path, capsys):
    path = tmp_path / "bench.json"
    assert bench.main(argparse.Namespace(json=str(path), quick=True)) == 0
    result = json.loads(path.read_text(), parse_constant=_reject)  # strict JSON: no NaN
    assert set(result) == {"machine", "rows"}
    machine = result["machine"]
    for key in ("cpu", "cores", "torch_threads", "torch", "device", "date", "memory", "spread",
                "wall_s", "cpu_time_s"):
        assert machine[key] not in (None, "")
    rows = result["rows"]
    assert {r["method"] for r in rows} == {*METHODS, BALANCER_ONLY}
    assert {r["model"] for r in rows} == {"quick", TINY_VIT, TINY_CLIP, TINY_TEXT, "none"}
    # every family of the plan has a one-pass way, and its row is there at every K
    assert {(r["model"], r["groups"]) for r in rows if r["method"] == "cpt-expand"} == {
        (m, k) for m in ("quick", TINY_VIT, TINY_CLIP, TINY_TEXT) for k in (2, 4)}
    for row in rows:
        assert tuple(row) == ROW_KEYS
        assert row["median_s"] > 0 and row["spread_s"] >= 0 and row["repeats"] >= 3
        if row["method"] == BALANCER_ONLY:
            assert row["ratio_to_erm"] is None and row["batch"] is None
        else:
            assert row["groups"] in (2, 4) and row["peak_mem_mb"] >= 0
            assert math.isfinite(row["ratio_to_erm"]) and row["ratio_to_erm"] > 0
        if row["method"] == "erm":
            assert row["ratio_to_erm"] == 1.0
    out = capsys.readouterr().out
    assert "cpt-naive" in out and "wrote" in out


def test_gpu_main_fails_clearly_without_cuda(capsys):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert bench.gpu_main([]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_gpu_main_logic_runs_on_cpu_with_tiny_models(tmp_path, capsys):
    argv = ["--device", "cpu", "--tiny", "--groups", "2", "4", "--repeats", "2", "--warmup", "1",
            "--out", str(tmp_path)]
    assert bench.gpu_main(argv) == 0
    result = json.loads((tmp_path / "gpu-cpu.json").read_text(), parse_constant=_reject)
    rows = result["rows"]
    expected = {(m, method, k) for m in (TINY_VIT, TINY_CLIP) for method in METHODS
                for k in (2, 4)}
    assert {(r["model"], r["method"], r["groups"]) for r in rows} == expected
    for row in rows:
        assert tuple(row) == ROW_KEYS and row["batch"] == 8 and row["repeats"] == 2
        assert row["median_s"] > 0 and row["peak_mem_mb"] >= 0 and row["ratio_to_erm"] > 0
    assert [s["img_size"] for s in result["machine"]["plan"]["steps"]] == [32, 32]
    assert "img_per_s" in capsys.readouterr().out


def test_gpu_plan_has_the_paper_shapes():
    vit, clip = bench.gpu_plan().steps
    assert (vit.model, vit.batch, vit.img_size, vit.options["prompt_tokens"]) == (
        bench.VIT_B16, 64, 224, 10)
    assert (clip.model, clip.batch, clip.img_size, clip.options["n_ctx"]) == (
        bench.CLIP_L14, 32, 224, 16)
    assert vit.groups == clip.groups == (4, 16)


def test_text_suite_feeds_strings_and_skips_expand_where_it_does_not_apply():
    from cptlib.models import build_model

    suite = StepSuite(TINY_TEXT, 4, 0, (2,), repeats=1, words=5,
                      options=bench.TINY_TEXT_OPTIONS)
    model = build_model(TINY_TEXT, 2, pretrained=False, **bench.TINY_TEXT_OPTIONS)
    x = bench.suite_inputs(suite, model, torch.Generator().manual_seed(0))
    assert len(x) == 4 and all(len(t.split()) == 5 for t in x)
    assert bench.suite_methods(suite, model) == METHODS
    resnet = build_model("resnet10t", 2, pretrained=False)
    assert "cpt-expand" not in bench.suite_methods(suite, resnet)

"""The study's statistics and computed sentences (``cptlib.analysis``), without matplotlib.

Fake records (``fake_records``: made-up numbers in the exact record layout) stand in for runs;
every expected number is recomputed here from the records, never typed in.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cptlib import analysis, records
from cptlib.analysis import bench as bench_stats
from cptlib.analysis import dynamics, efficiency, groups, labels, text

sys.path.insert(0, str(Path(__file__).parent))
from fake_records import (  # noqa: E402
    FAKE_TRAINABLE,
    GROUPS,
    fake_record,
    fake_runs,
    write_fake_bench,
    write_fake_results,
)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> pd.DataFrame:
    return fake_runs(tmp_path_factory.mktemp("results"))


@pytest.fixture(scope="module")
def results(runs) -> Path:
    return runs.attrs["results"]


@pytest.fixture(scope="module")
def every_run(results) -> pd.DataFrame:
    return analysis.load_runs(results, "smoke")


def test_analysis_imports_without_matplotlib_seaborn_or_torch():
    code = (
        "import sys, pkgutil, importlib\n"
        "import cptlib.analysis as a\n"
        "for m in pkgutil.iter_modules(a.__path__):\n"
        "    importlib.import_module(f'cptlib.analysis.{m.name}')\n"
        "heavy = [n for n in ('matplotlib', 'seaborn', 'torch') if n in sys.modules]\n"
        "assert not heavy, f'cptlib.analysis imported {heavy}'\n"
        "print(sorted(m.name for m in pkgutil.iter_modules(a.__path__)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "summaries" in done.stdout and "controllability" in done.stdout


def test_labels_follow_method_alpha_and_c():
    assert analysis.run_label("erm", 0.0) == "ERM"
    assert analysis.run_label("erm", 1.0) == "ERM (group-balanced)"
    assert analysis.run_label("groupdro", 1.0) == "GroupDRO"
    assert analysis.run_label("cpt", 1.0, [2, 2, 2, 2]) == "CPT(c=1)"
    assert analysis.run_label("cpt", 1.0, None) == "CPT(c=1)"
    assert analysis.run_label("scalarized", 1.0, [1, 1, 8, 1]) == "Scalarized(c=1,1,8,1)"
    assert analysis.run_label("cpt", 2.0, [1, 1, 1, 1]) == "CPT(c=1) (α=2)"
    for method, alpha, c in (("cpt", 2.0, [1, 4]), ("scalarized", 1.0, [1, 4]), ("erm", 1.0, None)):
        label = analysis.run_label(method, alpha, c)
        assert labels.label_family(label) == analysis.method_family(method, alpha)


def test_main_table_is_mean_and_se_of_the_records(runs):
    table = analysis.main_table(runs)
    assert list(table.index) == list(analysis.MAIN_LABELS)
    assert (table[("", "seeds")] == 3).all()
    cpt = runs[runs["label"] == "CPT(c=1)"]["test.worst_group_acc"]
    se = cpt.std(ddof=1) / math.sqrt(len(cpt))
    cell = table.loc["CPT(c=1)", ("test (%)", "worst-group")]
    assert cell.replace("\u00a0", " ") == records.format_mean_se(cpt.mean(), se)
    last = runs[runs["label"] == "ERM"]["last_val.worst_group_acc"]
    cell = analysis.main_table(runs, "last_test").loc["ERM", ("validation, last step (%)",
                                                             "worst-group")]
    assert cell.startswith(f"{100 * last.mean():.1f}")
    assert records.format_mean_se(cpt.mean(), se) in str(analysis.comparison_text(runs))


def test_controllability_pairs_runs_with_their_c1_seed(runs):
    deltas = analysis.controllability_deltas(runs)
    assert len(deltas) == 8  # CPT and Scalarized, each of the four groups raised once
    row = deltas[(deltas["method"] == "CPT") & (deltas["c"] == "1,1,4,1")].iloc[0]
    assert row["group"] == GROUPS[2]
    run = runs[(runs["label"] == "CPT(c=1,1,4,1)")].iloc[0]
    base = runs[(runs["label"] == "CPT(c=1)") & (runs["seed"] == run["seed"])].iloc[0]
    expected = 100 * (run["last_test.per_group_acc.2"] - base["last_test.per_group_acc.2"])
    assert row["Δ acc. last (points)"] == pytest.approx(expected)
    assert "of 4 paired runs" in str(analysis.controllability_text(runs, "smoke", "synthetic"))


def _hist(curves: dict[int, list[float]], selected: dict[int, int]) -> pd.DataFrame:
    """A minority group's test curves, one per seed, at steps 10, 20, 30."""
    rows = [{"run_id": f"r{seed}", "label": "ERM", "seed": seed, "step": 10 * (i + 1),
             "split": "test", "group": "rare", "group_index": 0, "train_count": 5, "acc": acc,
             "loss": 0.0, "selected_step": selected[seed]}
            for seed, curve in curves.items() for i, acc in enumerate(curve)]
    return pd.DataFrame(rows)


def test_minority_statistics_are_per_seed_so_selected_never_exceeds_peak():
    # Seeds that peak at different steps: the mean curve peaks at 60, each seed at 80. The
    # selected steps are each seed's peak, so "selected" is 80 and the peak must be too.
    hist = _hist({0: [50, 80, 40], 1: [50, 40, 80]}, {0: 20, 1: 30})
    row = dynamics.minority_summary(hist, ["ERM"]).loc["ERM"]
    assert row["peak acc. (%)"] == 80 and row["acc. at selected steps (%)"] == 80
    assert row["peak steps"] == "steps 20–30"
    assert row["acc. at last step (%)"] == 60 and row["peak − last (points)"] == 20
    assert "never above the peak" in str(dynamics.minority_text(hist, ["ERM"]))


def test_minority_rows_are_consistent_on_fake_records(runs):
    table = dynamics.minority_summary(analysis.history_frame(runs))
    assert len(table) == 3
    for _, r in table.iterrows():
        assert r["acc. at selected steps (%)"] <= r["peak acc. (%)"]
        assert r["acc. at last step (%)"] <= r["peak acc. (%)"]
        assert r["acc. at first evaluation (%)"] <= r["peak acc. (%)"]


def test_empty_records_give_notes_not_empty_tables():
    empty = analysis.label_runs(records.load_records(Path("/nonexistent")))
    hist, diag = analysis.history_frame(empty), analysis.diagnostics_frame(empty)
    for shown in (analysis.main_table(empty), analysis.controllability_table(empty),
                  analysis.minority_table(hist), analysis.balancer_table(diag),
                  analysis.minority_text(hist), analysis.adapter_table(empty),
                  analysis.run_time_table(empty), analysis.runs_group_counts(empty)):
        assert isinstance(shown, analysis.Note)
    assert "No runs of this kind at profile `quick` yet" in str(
        analysis.status_text(empty, "quick", "synthetic"))


class _Split:
    """The attributes ``group_counts`` reads from a dataset split."""

    def __init__(self, counts: list[int]) -> None:
        self.group_names, self.group_counts = ["a", "b"], np.asarray(counts)


def test_group_counts_from_data_and_from_the_record(runs):
    data = type("Data", (), {"train": _Split([5, 1]), "val": _Split([2, 2]),
                             "test": _Split([3, 3])})()
    table = analysis.group_counts(data)
    assert table.loc["a", "train"] == 5 and table.loc["total", "test"] == 6
    with pytest.raises(ValueError, match="missing"):
        analysis.group_counts(type("Half", (), {"train": _Split([1, 1])})())
    record = analysis.read_run(runs["path"].iloc[0])
    counts = analysis.runs_group_counts(runs)
    assert list(counts.columns) == ["train", "val", "test"]
    assert counts["val"].tolist()[:-1] == record["split_group_counts"]["val"]
    assert analysis.counts_caveat(counts) is None
    old = {k: v for k, v in record.items() if k != "split_group_counts"}  # an older record
    table = groups.record_group_counts(old)
    assert list(table.columns) == ["train"] and table.loc["total", "train"] == sum(
        record["train_group_counts"])
    assert "cptlib-run/1" in str(analysis.counts_caveat(table))


def test_per_group_table_of_one_record(runs):
    record = analysis.read_run(runs["path"].iloc[0])
    table = analysis.per_group_table(record)
    assert list(table.index) == GROUPS
    last = record["metrics"]["last_test"]["per_group_acc"]
    assert table["test acc. (%), last"].tolist() == [f"{100 * v:.1f}" for v in last]


def test_bench_targets_compare_each_model_and_way_with_its_limit():
    rows = pd.DataFrame([
        {"model": "quick", "method": "cpt-expand", "groups": 16, "median_s": 0.1,
         "ratio_to_erm": 1.02},
        {"model": "quick", "method": "cpt-split", "groups": 16, "median_s": 0.2,
         "ratio_to_erm": 1.76},
        {"model": "quick", "method": "cpt-split", "groups": 4, "median_s": 0.1,
         "ratio_to_erm": 1.1},  # at the limit: met
        {"model": "minilm", "method": "cpt-expand", "groups": 4, "median_s": 0.1, "batch": 32,
         "ratio_to_erm": 1.05},  # the text model's quick batch is 32
        {"model": "vit_base_patch16_224", "method": "cpt-split", "groups": 4, "median_s": 2.0,
         "batch": 4, "ratio_to_erm": 9.0},  # not at a quick shape: not a target row
        {"model": "quick", "method": "cpt-naive", "groups": 4, "median_s": 0.1, "batch": 32,
         "ratio_to_erm": 2.0},  # a smoke bench's batch: the targets are for batch 64
        {"model": "none", "method": "balancer-only", "groups": 16, "median_s": 0.0025,
         "ratio_to_erm": None},
        {"model": "none", "method": "balancer-only", "groups": 64, "median_s": 0.0004,
         "ratio_to_erm": None},
    ])
    rows["batch"] = rows["batch"].fillna(64)
    table = analysis.bench_targets(rows)
    assert table.loc[("CPT step / ERM step", 16, "quick: cpt-expand"), "met"] == "yes"
    assert table.loc[("CPT step / ERM step", 16, "quick: cpt-split"), "met"] == "no"
    assert table.loc[("CPT step / ERM step", 4, "quick: cpt-split"), "met"] == "yes"
    assert table.loc[("CPT step / ERM step", 4, "minilm: cpt-expand"), "met"] == "yes"
    assert table.loc[("balancer time per step (ms)", 16, "balancer-only"), "measured"] == 2.5
    assert table.loc[("balancer time per step (ms)", 16, "balancer-only"), "met"] == "no"
    assert table.loc[("balancer time per step (ms)", 64, "balancer-only"), "met"] == "yes"
    assert len(table) == 6
    assert isinstance(analysis.bench_targets(rows.iloc[4:6]), analysis.Note)


def test_bench_section_says_where_it_was_measured_or_how_to_measure(tmp_path):
    rows, note = analysis.bench_section(tmp_path / "bench", gpu=True)
    assert rows.empty and "Ready and unmeasured" in str(note)
    rows, note = analysis.bench_section(tmp_path / "bench")
    assert rows.empty and "cpt bench --json" in str(note)
    write_fake_bench(tmp_path / "bench")
    rows, note = analysis.bench_section(tmp_path / "bench", gpu=True)
    assert set(rows["file"]) == {"gpu-h200.json"} and "fake GPU" in str(note)


def _cells(table: pd.DataFrame) -> list:
    return [v for col in table.columns for v in table[col]] + list(table.index)


def test_efficiency_tables_have_no_nan_and_explain_their_dashes(results, every_run):
    rows, _ = analysis.bench_section(results / "bench")
    for table in (analysis.bench_table(rows), analysis.run_time_table(every_run),
                  analysis.adapter_table(every_run),
                  analysis.trainable_table(analysis.load_trainable(results, "smoke"), "smoke")):
        cells = [str(v) for v in _cells(table)]
        assert not [v for v in cells if v.lower() in ("nan", "none", "<na>")], table
    assert text.DASH in [str(v) for v in _cells(analysis.bench_table(rows))]
    explained = str(analysis.bench_table_text(rows))
    assert "balancer-only" in explained and "no ERM step" in explained
    assert analysis.bench_table_text(rows[rows["method"] != "balancer-only"]) is None
    assert set(bench_stats.figure_rows(rows)["model"]) == {"quick"}  # no "none" panel


def test_adapter_table_skips_runs_without_an_adapter(tmp_path):
    write_fake_results(tmp_path, "smoke", text=False)
    toy = {"experiment": "toy", "profile": "smoke", "run_id": "toy000000000",
           "params": {"steps": 10, "cs": [[1, 1]]}, "metrics": {"final": []}}
    records.write_record(toy, tmp_path / "smoke" / "toy" / "toy000000000.json")
    every = analysis.load_runs(tmp_path, "smoke")
    assert "toy" in set(every["experiment"])
    assert list(analysis.adapter_table(every).index) == ["synthetic (smoke)"]
    only_toy = every[every["experiment"] == "toy"]
    assert "trained an adapter" in str(analysis.adapter_table(only_toy))


def test_trainable_counts_come_from_the_book_file_or_say_how_to_make_it(tmp_path, results):
    counts = analysis.load_trainable(results, "smoke")
    table = analysis.trainable_table(counts, "smoke")
    assert table["trainable"].tolist() == [f"{r['trainable']:,}" for r in FAKE_TRAINABLE]
    missing = analysis.trainable_table(analysis.load_trainable(tmp_path, "quick"), "quick")
    assert isinstance(missing, analysis.Note) and "cpt book --profile quick" in str(missing)
    (tmp_path / "quick").mkdir()
    (tmp_path / "quick" / efficiency.TRAINABLE_FILE).write_text(json.dumps([{"model": "x"}]))
    with pytest.raises(ValueError, match="lack the column"):
        analysis.load_trainable(tmp_path, "quick")


def test_trainable_text_says_why_the_runs_count_differs(results, every_run):
    counts = analysis.load_trainable(results, "smoke")
    note = str(analysis.trainable_text(counts, every_run))
    # MiniLM: 20 default prompt tokens × 384 + head 770 = 8,450; the runs' 8 tokens give 3,842.
    assert "8,450" in note and "3,842" in note and "`prompt_tokens: 8`" in note
    assert "include the classification head" in note
    assert "embedded ViT" not in note  # its count agrees between the two tables
    assert analysis.trainable_text(counts.iloc[0:0], every_run) is None


def test_run_time_text_puts_the_recorded_ratio_next_to_the_bench(results, every_run):
    bench, _ = analysis.bench_section(results / "bench")
    note = str(analysis.run_time_text(every_run, bench))
    rows = efficiency.adapter_rows(every_run[(every_run["experiment"] == "synthetic")
                                            & every_run["uniform_c"]])
    per_step = (rows["train_time_s"] / rows["steps"]).groupby(rows["label"]).mean()
    assert f"{per_step['CPT(c=1)'] / per_step['ERM']:.2f}× ERM's time per step" in note
    expected = bench_stats.bench_ratio(bench, "quick", "cpt-split", 4)
    assert f"measured {expected:.2f}× for `cpt-split`" in note
    assert "1 torch thread of a 2-core machine, with about 2 runs side by side" in note
    assert "not a comparison of the methods" in note


def test_paper_title_and_dataset_need_no_sweep():
    params = {"model": "vit_base_patch16_224.orig_in21k"}
    assert analysis.paper_dataset("waterbirds_clip", {}) == "waterbirds"
    assert analysis.paper_dataset("x", {"dataset": "celeba"}) == "celeba"
    with pytest.raises(ValueError, match="dataset"):
        analysis.paper_dataset("unknown_thing", {})
    assert analysis.paper_title("waterbirds", params) == "Waterbirds, ViT-B/16 (ImageNet-21k)"


def test_conditioned_runs_stay_out_of_the_ordinary_tables(tmp_path):
    write_fake_results(tmp_path, "smoke", text=False, conditioned=False)
    record, rel = fake_record("synthetic", "smoke", "cpt", 1.0, None, 0)
    record["params"]["conditioned"] = True
    records.write_record(record, tmp_path / rel)
    ordinary = analysis.load_runs(tmp_path, "smoke", "synthetic")
    conditioned = analysis.load_runs(tmp_path, "smoke", "synthetic", conditioned=True)
    assert list(conditioned["run_id"]) == [rel.stem]
    assert rel.stem not in set(ordinary["run_id"]) and len(ordinary) > 0


def _learned_runs(accuracies: list[float]) -> pd.DataFrame:
    rows = [{"label": "ERM (group-balanced)", "seed": s, "test.mean_acc": a}
            for s, a in enumerate(accuracies)]
    return pd.DataFrame(rows + [{"label": "ERM", "seed": 0, "test.mean_acc": 0.99}])


def test_learned_text_states_the_criterion_and_reads_the_interval_not_the_mean():
    from cptlib.analysis.summaries import LEARNED_LEVEL, learned_text

    assert LEARNED_LEVEL == 0.80
    learned = str(learned_text(_learned_runs([0.90, 0.92, 0.91])))
    assert "lower end of its 95 % interval" in learned and "80 %" in learned
    assert "**learned**" in learned and "91.0 %" in learned
    # the same mean with a wide spread: its interval reaches below 80 %, so not learned
    wide = str(learned_text(_learned_runs([0.99, 0.95, 0.79])))
    assert "**not learned**" in wide and "The task failed" in wide
    # below the level at every seed; one seed cannot show it; no reference runs: not checked
    assert "**not learned**" in str(learned_text(_learned_runs([0.62, 0.66, 0.64])))
    assert "cannot show it" in str(learned_text(_learned_runs([0.95])))
    assert "not checked" in str(learned_text(_learned_runs([]).iloc[1:]))
    # another reference and level
    assert "**learned**" in str(learned_text(_learned_runs([0.62, 0.66, 0.64]), level=0.5))

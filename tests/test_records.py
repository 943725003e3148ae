"""Run records: stable ids, atomic writes, provenance, loading a folder into pandas, mean ± SE."""

from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cptlib import records

PARAMS = {"method": "cpt", "c": [1, 1, 4, 1], "seed": 0, "alpha": 2.0, "lr": 0.1, "steps": 300}


# ----------------------------------------------------------------------------- run ids


def test_run_id_is_sha256_of_sorted_compact_json():
    expected = hashlib.sha256(b'{"a":1,"c":[1,0.5]}').hexdigest()[:12]
    assert records.run_id({"c": (1.0, 0.5), "a": 1}) == expected


def test_run_id_ignores_key_order_and_number_spelling():
    same = {"steps": 300, "lr": 0.1, "alpha": 2, "seed": 0.0, "c": (1.0, 1.0, 4.0, 1.0),
            "method": "cpt"}
    assert records.run_id(same) == records.run_id(PARAMS)
    assert records.run_id({**PARAMS, "c": np.array([1, 1, 4, 1])}) == records.run_id(PARAMS)


@pytest.mark.parametrize(
    ("key", "value"),
    [("method", "scalarized"), ("c", [1, 1, 4, 2]), ("c", None), ("seed", 1), ("alpha", 1.0),
     ("lr", 0.10000001), ("steps", 301), ("extra", 0)],
)
def test_run_id_changes_with_any_parameter(key, value):
    assert records.run_id({**PARAMS, key: value}) != records.run_id(PARAMS)


def test_run_id_keeps_bools_apart_from_numbers_and_rejects_nan():
    assert records.run_id({"x": True}) != records.run_id({"x": 1})
    with pytest.raises(ValueError, match="finite"):
        records.run_id({"lr": math.nan})
    with pytest.raises(ValueError, match="cannot hash"):
        records.run_id({"x": {1, 2}})


def test_record_path_layout_and_bad_names(tmp_path):
    path = records.record_path(tmp_path, "quick", "synthetic", PARAMS)
    assert path == tmp_path / "quick" / "synthetic" / f"{records.run_id(PARAMS)}.json"
    with pytest.raises(ValueError, match="experiment"):
        records.record_path(tmp_path, "quick", "../x", PARAMS)


# ----------------------------------------------------------------------------- code version


def test_code_version_follows_content_and_names(tmp_path):
    src = tmp_path / "pkg"
    (src / "sub").mkdir(parents=True)
    (src / "a.py").write_text("x = 1\n")
    (src / "sub" / "b.py").write_text("y = 2\n")
    (src / "notes.txt").write_text("not code")
    v1 = records.code_version([src])
    assert len(v1) == 12 and int(v1, 16) >= 0

    (src / "notes.txt").write_text("changed, but not a .py file")
    (src / "__pycache__").mkdir()
    (src / "__pycache__" / "a.py").write_text("cache")
    assert records.code_version([src]) == v1

    (src / "sub" / "b.py").write_text("y = 3\n")
    v2 = records.code_version([src])
    assert v2 != v1
    (src / "sub" / "b.py").write_text("y = 2\r\n")  # line endings do not matter
    assert records.code_version([src]) == v1

    (src / "sub" / "b.py").rename(src / "sub" / "c.py")
    assert records.code_version([src]) != v1


def test_code_version_of_explicit_files_is_order_free(tmp_path):
    a, nb = tmp_path / "a.py", tmp_path / "run.ipynb"
    a.write_text("x = 1\n")
    nb.write_text("{}")
    assert records.code_version([a, nb]) == records.code_version([nb, a])
    assert records.code_version([a, nb]) != records.code_version([a])
    with pytest.raises(ValueError, match="neither a file nor a folder"):
        records.code_version([tmp_path / "missing.py"])


def test_default_code_version_hashes_the_package():
    import cptlib

    package = Path(cptlib.__file__).parent
    assert records.code_version() == records.code_version([package])


# ----------------------------------------------------------------------------- provenance


def _strings(value):
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    return [value] if isinstance(value, str) else []


def test_provenance_has_versions_hardware_time_and_no_hostname():
    prov = records.provenance()
    assert set(prov) == {"versions", "git", "hardware", "timestamp_utc"}
    assert prov["versions"]["python"].count(".") == 2
    assert prov["versions"]["torch"] and prov["versions"]["numpy"]
    assert {"open_clip", "peft", "transformers", "timm", "scipy", "cptlib"} <= set(prov["versions"])
    assert prov["hardware"]["cpu_count"] >= 1 and prov["hardware"]["torch_threads"] >= 1
    assert prov["timestamp_utc"].endswith("+00:00")
    assert socket.gethostname() not in _strings(prov)
    assert "hostname" not in json.dumps(prov) and "node" not in prov["hardware"]
    json.dumps(prov, allow_nan=False)


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=repo, check=True, capture_output=True,
    )


def test_git_state_outside_and_inside_a_repository(tmp_path):
    assert records.git_state(tmp_path) == {"commit": None, "dirty": None}
    _git(tmp_path, "init", "-q")
    tracked = tmp_path / "f.py"
    tracked.write_text("1")
    _git(tmp_path, "add", "f.py")
    _git(tmp_path, "commit", "-q", "-m", "x")
    state = records.git_state(tmp_path)
    assert len(state["commit"]) == 40 and state["dirty"] is False
    (tmp_path / "untracked.json").write_text("{}")
    assert records.git_state(tmp_path)["dirty"] is False
    tracked.write_text("2")
    assert records.git_state(tmp_path)["dirty"] is True


# ----------------------------------------------------------------------------- writing


def test_write_record_is_valid_json_with_nan_as_null(tmp_path):
    path = tmp_path / "deep" / "folder" / "r.json"
    record = {"experiment": "x", "profile": "smoke", "run_id": "r", "params": {"c": None},
              "metrics": {"test": {"auroc": math.nan, "x": np.float64(1.5),
                                   "acc": [0.5, float("inf")]}}}
    assert records.write_record(record, path) == path

    def no_constants(name):
        raise AssertionError(f"non-standard JSON constant {name}")

    loaded = json.loads(path.read_text(), parse_constant=no_constants)
    assert loaded["metrics"]["test"] == {"auroc": None, "x": 1.5, "acc": [0.5, None]}
    assert records.read_record(path) == loaded


def test_failed_write_leaves_old_record_and_no_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    base = {"experiment": "x", "profile": "smoke", "run_id": "r", "params": {}, "metrics": {}}
    records.write_record({**base, "notebook": "1"}, path)
    old = path.read_bytes()

    def crash(*_args, **_kwargs):
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        records.write_record({**base, "notebook": "2"}, path)
    monkeypatch.undo()
    assert path.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]

    with pytest.raises(TypeError):  # a value JSON cannot hold fails before touching the file
        records.write_record({**base, "notebook": object()}, path)
    assert path.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_read_record_rejects_non_records(tmp_path):
    path = tmp_path / "x.json"
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a run record"):
        records.read_record(path)


# ----------------------------------------------------------------------------- loading


def _metrics(wga: float, groups: list[float]) -> dict:
    return {"worst_group_acc": wga, "avg_acc": wga + 0.1, "mean_acc": wga + 0.05,
            "per_group_acc": groups, "loss": 0.3}


def _write_run(results: Path, method: str, c, seed: int, wga: float, *, last: bool = True,
               profile: str = "quick", experiment: str = "synthetic") -> Path:
    params = {"method": method, "c": c, "seed": seed, "alpha": 2, "lr": 0.1}
    metrics = {"val": _metrics(wga - 0.02, [wga, 0.9]), "test": _metrics(wga, [wga, 0.95, None]),
               "selected_step": 100 * (seed + 1)}
    if last:
        metrics["last_test"] = _metrics(wga - 0.1, [wga - 0.1, 0.99, None])
    record = {"experiment": experiment, "profile": profile, "run_id": records.run_id(params),
              "params": params, "metrics": metrics, "history": [{"step": 0}],
              "trainable_params": 1234, "wall_time_s": 10.0 + seed, "code_version": "abc",
              "provenance": {"git": {"commit": "f" * 40, "dirty": False}}, "notebook": "nb.ipynb"}
    return records.write_record(record, records.record_path(results, profile, experiment, params))


@pytest.fixture
def results(tmp_path: Path) -> Path:
    for seed, wga in enumerate([0.6, 0.7, 0.8]):
        _write_run(tmp_path, "cpt", [1, 1, 4, 1], seed, wga)
    _write_run(tmp_path, "erm", None, 0, 0.3, last=False)
    _write_run(tmp_path, "erm", None, 0, 0.5, experiment="text")
    _write_run(tmp_path, "erm", None, 0, 0.5, profile="smoke")
    return tmp_path


def test_load_records_flattens_params_and_metrics(results):
    df = records.load_records(results, "quick", "synthetic")
    assert len(df) == 4
    cpt = df[df["method"] == "cpt"].sort_values("seed")
    assert list(cpt["seed"]) == [0, 1, 2]
    assert set(cpt["c_str"]) == {"1,1,4,1"} and cpt["c"].iloc[0] == [1, 1, 4, 1]
    assert list(cpt["test.worst_group_acc"]) == pytest.approx([0.6, 0.7, 0.8])
    assert list(cpt["test.per_group_acc.1"]) == pytest.approx([0.95] * 3)
    assert cpt["test.per_group_acc.2"].isna().all()  # empty group: None -> NaN
    assert list(cpt["last_test.worst_group_acc"]) == pytest.approx([0.5, 0.6, 0.7])
    assert list(cpt["selected_step"]) == [100, 200, 300]
    assert list(cpt["val.per_group_acc.0"]) == pytest.approx([0.6, 0.7, 0.8])
    erm = df[df["method"] == "erm"].iloc[0]
    assert erm["c_str"] == "none" and math.isnan(erm["last_test.worst_group_acc"])
    row = cpt.iloc[0]
    assert row["experiment"] == "synthetic" and row["profile"] == "quick"
    assert row["trainable_params"] == 1234 and row["wall_time_s"] == 10.0
    assert row["alpha"] == 2 and row["lr"] == 0.1 and row["git_commit"] == "f" * 40
    assert Path(row["path"]).name == f"{row['run_id']}.json"
    assert "history" not in df.columns


def test_load_records_filters_by_profile_and_experiment(results):
    assert len(records.load_records(results)) == 6
    quick = records.load_records(results, profile="quick")
    assert set(quick["experiment"]) == {"synthetic", "text"}
    assert len(records.load_records(results, experiment="synthetic")) == 5
    empty = records.load_records(results, profile="paper")
    assert empty.empty and "run_id" in empty.columns


def test_load_records_skips_corrupt_and_temporary_files(results):
    folder = results / "quick" / "synthetic"
    (folder / "broken.json").write_text('{"params": {"method": "cpt", "se')
    (folder / ".abc.json.x1.tmp").write_text("{")
    with pytest.warns(UserWarning, match="broken.json"):
        df = records.load_records(results, "quick", "synthetic")
    assert len(df) == 4


def test_aggregate_mean_and_standard_error_over_seeds(results):
    df = records.load_records(results, "quick", "synthetic")
    agg = records.aggregate(df, ["method", "c_str"], ["test.worst_group_acc",
                                                      "last_test.worst_group_acc"])
    assert list(agg.columns) == ["method", "c_str", "n", "test.worst_group_acc",
                                 "test.worst_group_acc_se", "last_test.worst_group_acc",
                                 "last_test.worst_group_acc_se"]
    cpt = agg[agg["method"] == "cpt"].iloc[0]
    # values 0.6, 0.7, 0.8: mean 0.7; sample std 0.1; SE = 0.1 / sqrt(3)
    assert cpt["n"] == 3
    assert cpt["test.worst_group_acc"] == pytest.approx(0.7)
    assert cpt["test.worst_group_acc_se"] == pytest.approx(0.1 / math.sqrt(3))
    assert cpt["last_test.worst_group_acc"] == pytest.approx(0.6)
    erm = agg[agg["method"] == "erm"].iloc[0]
    assert erm["n"] == 1 and erm["test.worst_group_acc"] == pytest.approx(0.3)
    assert math.isnan(erm["test.worst_group_acc_se"])
    assert math.isnan(erm["last_test.worst_group_acc"])


def test_aggregate_keeps_missing_keys_and_rejects_bad_columns():
    df = pd.DataFrame({"k": [None, None, "a"], "m": [1.0, 3.0, 5.0]})
    agg = records.aggregate(df, ["k"], ["m"])
    assert len(agg) == 2
    missing = agg[agg["k"].isna()].iloc[0]
    assert missing["n"] == 2 and missing["m"] == 2.0
    assert missing["m_se"] == pytest.approx(np.std([1.0, 3.0], ddof=1) / math.sqrt(2))
    with pytest.raises(ValueError, match="no column"):
        records.aggregate(df, ["k"], ["nope"])
    with pytest.raises(ValueError, match="c_str"):
        records.aggregate(pd.DataFrame({"c": [[1, 1]], "m": [1.0]}), ["c"], ["m"])


def test_format_mean_se():
    assert records.format_mean_se(0.8134, 0.0123) == "81.3 ± 1.2"
    assert records.format_mean_se(0.8134, math.nan) == "81.3"
    assert records.format_mean_se(0.8134, None, digits=2) == "81.34"
    assert records.format_mean_se(12.5, 0.26, scale=1) == "12.5 ± 0.3"
    assert records.format_mean_se(math.nan, 0.1) == "—"


def test_vector_str():
    assert records.vector_str([1.0, 1, 4.0, 0.5]) == "1,1,4,0.5"
    assert records.vector_str(None) == "none"


# ----------------------------------------------------------------------------- schema


def test_records_carry_their_schema_and_older_ones_are_upgraded(tmp_path):
    base = {"experiment": "x", "profile": "smoke", "run_id": "r", "params": {}, "metrics": {}}
    path = records.write_record(base, tmp_path / "r.json")
    assert json.loads(path.read_text())["schema"] == records.SCHEMA
    assert next(iter(json.loads(path.read_text()))) == "schema"  # first, for a reader's eye
    old = tmp_path / "old.json"
    old.write_text(json.dumps(base))  # the unnamed shape of the first round
    upgraded = records.read_record(old)
    assert upgraded["schema"] == records.SCHEMA and "split_group_counts" not in upgraded
    assert records.load_record(old).split_group_counts is None


@pytest.mark.parametrize(("change", "message"), [
    ({"schema": "cptlib-run/9"}, "schema 'cptlib-run/9'.*does not read"),
    ({"colour": "red"}, r"unknown field\(s\) \['colour'\]"),
    ({"run_id": None, "experiment": None}, None),
])
def test_a_record_of_another_shape_is_refused_with_its_reason(tmp_path, change, message):
    base = {"experiment": "x", "profile": "smoke", "run_id": "r", "params": {}, "metrics": {}}
    path = tmp_path / "r.json"
    data = {**base, **change}
    for key in [k for k, v in change.items() if v is None]:
        del data[key]
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=message or r"lacks field\(s\)"):
        records.read_record(path)

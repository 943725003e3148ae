"""The run profiler (``cptlib.run_profile``) and its chapter table (``analysis.run_profile``)."""

from __future__ import annotations

import json
import math

import pytest

from cptlib import analysis
from cptlib.run_profile import main, profile_run


@pytest.fixture(scope="module")
def smoke_profile():
    return profile_run("synthetic", "smoke", steps=1)


def test_profile_of_a_smoke_run_projects_the_run_from_its_phases(smoke_profile):
    from cptlib.runs.spec import RunSpec

    p = smoke_profile
    cfg = RunSpec.build("synthetic", "smoke", {"method": "cpt", "seed": 0}).train_config()
    assert p["run_steps"] == cfg.steps
    assert p["run_evals"] == math.ceil(cfg.steps / cfg.eval_every)
    assert set(p["precisions"]) == {"fp32", "bf16"}
    for entry in p["precisions"].values():
        assert entry["step_s"] > 0 and entry["eval_val_s"] > 0 and entry["eval_test_s"] > 0
        assert entry["train_s"] == pytest.approx(entry["step_s"] * p["run_steps"])
        assert entry["eval_s"] == pytest.approx(
            (entry["eval_val_s"] + entry["eval_test_s"]) * p["run_evals"])
        assert entry["run_s"] == pytest.approx(
            p["data_s"] + p["model_s"] + entry["train_s"] + entry["eval_s"])
    bf16 = p["precisions"]["bf16"]
    assert 0.0 <= bf16["same_prediction"] <= 1.0 and bf16["max_logit_diff"] >= 0.0


def test_the_profile_renders_as_the_chapter_table_and_text(smoke_profile, tmp_path):
    path = tmp_path / "quick.json"
    path.write_text(json.dumps({"imports_s": 3.0, "runs": [smoke_profile]}))
    data = analysis.load_run_profile(path)
    table = analysis.run_profile_table(data)
    assert len(table) == len(analysis.run_profile.PHASES)
    run = table.loc[("synthetic", "the run (projected)")]
    fp32, bf16 = smoke_profile["precisions"]["fp32"], smoke_profile["precisions"]["bf16"]
    assert run["float32 (s)"] == pytest.approx(fp32["run_s"], abs=0.01)
    assert run["float32 / bf16"] == pytest.approx(fp32["run_s"] / bf16["run_s"], abs=0.01)
    text = analysis.run_profile_text(data).text
    assert "3.0 s" in text and "smoke **synthetic** run" in text
    assert f"{1 - bf16['same_prediction']:.1%}" in text


def test_a_missing_profile_is_none_and_a_foreign_file_is_refused(tmp_path):
    assert analysis.load_run_profile(tmp_path / "absent.json") is None
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a run profile"):
        analysis.load_run_profile(bad)


@pytest.mark.parametrize("argv, message", [
    (["nonsense"], "experiment 'nonsense'"),
    (["toy"], "experiment 'toy'"),
    (["synthetic", "--steps", "0"], "--steps must be ≥ 1"),
])
def test_bad_arguments_give_one_line_and_exit_2_before_any_work(argv, message, capsys, tmp_path):
    out = tmp_path / "p.json"
    assert main([*argv, "--profile", "smoke", "--json", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()

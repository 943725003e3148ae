"""Sweeps: profile expansion, skipping runs whose record exists for the same parameters and
code, and going on past a failing run (its partial notebook kept, the failure listed)."""

from __future__ import annotations

import json

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from cptlib import sweep as S
from cptlib.cli import main as cli_main

FAKE_RUN = """
from cptlib.experiment import notebook_params, resolve, result_code_version
from cptlib.records import write_record

_, _, recorded, path = resolve(notebook_params(globals()))
if lr < 0:
    raise RuntimeError("boom: negative lr")
write_record({"experiment": experiment, "profile": profile, "params": recorded,
              "code_version": result_code_version()}, path)
print(path)
"""

PROFILES = """
smoke:
  experiments: {fake: {lr: 0.5}}
  runs:
    - {experiment: fake, method: erm, seeds: [0, 1]}
    - {experiment: fake, method: cpt, lr: -1.0, seeds: [0]}
    - {experiment: fake, method: cpt, cs: [[1, 1], [1, 4]], seeds: [2]}
quick: {runs: []}
paper: {runs: []}
"""


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project with one fast fake experiment notebook and its own profiles.yaml."""
    (tmp_path / "notebooks").mkdir()
    params = new_code_cell(
        'experiment = "fake"\nprofile = "smoke"\nmethod = "erm"\nc = None\nseed = 0\n'
        'lr = 0.1\nresults_dir = "results"\nnotebook = None'
    )
    params.metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=[params, new_code_cell(FAKE_RUN)])
    nb.metadata["kernelspec"] = {
        "name": "python3", "display_name": "Python 3", "language": "python"
    }
    nbformat.write(nb, tmp_path / "notebooks" / "fake.ipynb")
    (tmp_path / "profiles.yaml").write_text(PROFILES)
    monkeypatch.setenv("CPT_PROJECT", str(tmp_path))
    return tmp_path


def test_entries_expand_over_seeds_and_control_vectors():
    entry = {"experiment": "x", "method": "cpt", "seeds": [0, 1], "cs": [[1, 1], [4, 1]]}
    runs = S.expand(entry)
    assert len(runs) == 4
    assert {(r["seed"], tuple(r["c"])) for r in runs} == {(0, (1, 1)), (0, (4, 1)),
                                                        (1, (1, 1)), (1, (4, 1))}
    assert S.expand({"experiment": "x", "c": [1, 1]}) == [{"experiment": "x", "c": [1, 1]}]


def test_overrides_parse_as_yaml_and_reject_malformed_pairs():
    assert S.parse_overrides(["c=[1,1,4,1]", "seed=3", "method=cpt"]) == {
        "c": [1, 1, 4, 1], "seed": 3, "method": "cpt"}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        S.parse_overrides(["seed"])


def test_profile_parameters_layer_over_notebook_defaults(project):
    spec = S.make_spec("fake", "smoke", {"seed": 5})
    assert spec.params["lr"] == 0.5 and spec.params["seed"] == 5
    assert spec.params["method"] == "erm"
    with pytest.raises(ValueError, match="unknown parameter"):
        S.make_spec("fake", "smoke", {"nope": 1})
    with pytest.raises(ValueError, match="unknown experiment"):
        S.make_spec("missing", "smoke", {})


def test_sweep_isolates_failures_then_skips_what_is_done(project, monkeypatch):
    first = S.sweep("smoke", progress=False)
    assert len(first.done) == 4 and len(first.failed) == 1
    failed_spec, message = first.failed[0]
    assert "boom" in message or "RuntimeError" in message
    assert failed_spec.notebook_out.exists(), "the partial notebook is kept"
    assert not failed_spec.record_path.exists()
    for spec in first.done:
        record = json.loads(spec.record_path.read_text())
        assert record["params"]["seed"] == spec.params["seed"]

    second = S.sweep("smoke", progress=False)
    assert len(second.skipped) == 4 and not second.done and len(second.failed) == 1

    # Other code: every record is out of date.
    monkeypatch.setattr("cptlib.experiment.result_code_version", lambda: "other")
    third = S.sweep("smoke", only="fake", progress=False)
    assert len(third.done) == 4


def test_cli_run_prints_the_record_path_last_and_sweep_exits_nonzero_on_failure(project, capsys):
    assert cli_main(["run", "fake", "--profile", "smoke", "-p", "seed=9", "-p", "c=[2, 1]"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    record = json.loads(open(last).read())
    assert record["params"]["seed"] == 9 and record["params"]["c"] == [2.0, 1.0]
    assert cli_main(["sweep", "--profile", "smoke"]) == 1
    assert cli_main(["run", "fake", "--profile", "smoke", "-p", "bogus=1"]) == 2

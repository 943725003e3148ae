"""Contracts of the experiment registry: its group counts match the loaders, and every
experiment notebook is a thin template whose only parameters are the run's identity."""

from __future__ import annotations

import ast

import nbformat
import pytest

from cptlib.data import load
from cptlib.paths import project_root
from cptlib.runs import experiments
from cptlib.runs.inputs import dataset_root
from cptlib.runs.spec import RunSpec

NOTEBOOK_PARAMETERS = {"experiment", "profile", "overrides", "run_id", "notebook"}


def _smoke_spec_of(dataset: str) -> RunSpec:
    exp = next(e for e in experiments.EXPERIMENTS.values() if e.dataset == dataset)
    return RunSpec.build(exp.name, "smoke")


@pytest.mark.parametrize("dataset", sorted(experiments.DATASET_GROUPS))
def test_group_counts_match_the_loaders(dataset, isolated_cache):
    root = dataset_root(_smoke_spec_of(dataset))
    train = load(dataset, root, "train")
    assert train.n_groups == experiments.DATASET_GROUPS[dataset]


def test_every_experiment_notebook_is_registered_and_vice_versa():
    found = {p.stem for p in (project_root() / "notebooks").glob("*.ipynb")
             if not p.stem.startswith("summary")}
    assert found == set(experiments.EXPERIMENTS)


@pytest.mark.parametrize("name", sorted(experiments.EXPERIMENTS))
def test_notebook_parameters_are_the_run_identity_only(name):
    nb = nbformat.read(project_root() / "notebooks" / f"{name}.ipynb", as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1
    assigned = {t.id for node in ast.parse(cells[0].source).body if isinstance(node, ast.Assign)
                for t in node.targets}
    assert assigned == NOTEBOOK_PARAMETERS
    assert f"experiment = {name!r}" in cells[0].source.replace('"', "'")
    # stored outputs are checked by nbval in more than one cell
    checked = [c for c in nb.cells if "nbval-check-output" in c.metadata.get("tags", [])]
    if experiments.get(name).runner == "train":
        assert len(checked) >= 2


def test_get_names_the_known_experiments():
    with pytest.raises(ValueError, match="unknown experiment 'x'; known: toy, synthetic, text"):
        experiments.get("x")

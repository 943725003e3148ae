"""The commands of the book's "Reproduce and extend" chapter, executed.

Every `$ ` line of book/reproduce.md must be listed in HOW below, which says how this file
exercises it; quick-profile commands run at the smoke profile (same code path, seconds), in a
throw-away copy of the project so the real results/ folder is untouched. Commands that need a
GPU, conda or the network are exercised as far as this machine allows, and the reason is said.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "book" / "reproduce.md"
CPT = str(Path(sys.executable).with_name("cpt"))

HOW = {
    "make book": "test_make_book_target_is_the_quick_book_build (make test builds it at smoke)",
    "make test": "CI runs it (.ci/run); test_ci_runs_the_readme_test_command",
    "source .venv/bin/activate": "test_activate_puts_cpt_on_the_path",
    'cpt run synthetic --profile quick -p method=cpt -p alpha=1.0 -p "c=[1,1,16,1]" -p seed=0':
        "test_rerun_with_a_new_c_appears_in_the_controllability_chapter",
    "conda env create -f environment.yml": "no conda here: tests/test_environment.py checks pins",
    "conda activate cpt": "no conda here: see above",
    "pip install --no-deps -e .": "the Makefile's env target runs it for .venv",
    "cpt data waterbirds": "test_cpt_data_waterbirds_offline_then_from_a_local_copy",
    "HF_HUB_OFFLINE=0 cpt sweep --profile paper --only waterbirds":
        "test_paper_sweep_lists_the_authors_runs (no GPU, data or hub here)",
    "cpt sweep --profile paper": "test_paper_sweep_lists_the_authors_runs",
    "cpt run synthetic --profile quick -p conditioned=true":
        "tests/test_conditioned.py::test_conditioned_training_runs_for_every_prompt_family "
        "(the same run at smoke scale)",
    'cpt eval results/quick/synthetic/<run-id>.json --c "[1, 1, 4, 1]"':
        "tests/test_conditioned.py::test_cpt_eval_dials_c_on_a_conditioned_record_and_refuses_"
        "a_bad_c",
}


def page_commands() -> list[str]:
    """The `$ ` lines of the page's console/bash blocks."""
    blocks = re.findall(r"```(?:console|bash)\n(.*?)```", PAGE.read_text(), flags=re.S)
    return [line[2:].strip() for block in blocks for line in block.splitlines()
            if line.startswith("$ ")]


def test_every_command_on_the_page_is_exercised_here():
    assert set(page_commands()) == set(HOW), "update HOW (and a test) when the page changes"


def test_make_book_target_is_the_quick_book_build():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^book: .*\n\t\$\(BIN\)/cpt book --profile quick$", makefile, re.M)
    assert re.search(r"^test: .*\n(\t.*\n)*\t\$\(BIN\)/cpt book --profile smoke", makefile, re.M)


def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    assert "make test" in (ROOT / "README.md").read_text().split("\n## ")[0]


def test_activate_puts_cpt_on_the_path():
    venv = Path(sys.executable).parent.parent
    if not (venv / "bin" / "activate").exists():
        pytest.skip("not running inside a virtual environment")
    out = subprocess.run(["bash", "-c", f"source {venv}/bin/activate && command -v cpt"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == CPT


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A copy of the project's notebooks, profiles and book sources with its own results/."""
    for name in ("notebooks", "book"):
        shutil.copytree(ROOT / name, tmp_path / name,
                        ignore=shutil.ignore_patterns("_build", "runs"))
    shutil.copy(ROOT / "profiles.yaml", tmp_path)
    monkeypatch.setenv("CPT_PROJECT", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


def run_cli(command: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    args = shlex.split(command)
    assert args[0] == "cpt"
    return subprocess.run([CPT, *args[1:]], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=600)


def test_rerun_with_a_new_c_appears_in_the_controllability_chapter(project):
    import papermill as pm

    documented = next(c for c in HOW if c.startswith("cpt run synthetic"))
    out = run_cli(documented.replace("--profile quick", "--profile smoke"), project)
    assert out.returncode == 0, out.stderr[-2000:]
    record_path = Path(out.stdout.strip().splitlines()[-1])
    assert record_path.parent == project / "results" / "smoke" / "synthetic"
    record = json.loads(record_path.read_text())
    assert record["params"]["c"] == [1.0, 1.0, 16.0, 1.0]
    assert record["resolved"]["grad_way"] == "expand"  # "auto" on a VPT model
    assert record["resolved"]["steps"] == record["params"]["steps"]  # no epochs given
    assert record_path.with_suffix(".ipynb").exists()
    assert record_path.with_suffix(".safetensors").exists()

    chapter = project / "controllability.ipynb"
    pm.execute_notebook(str(project / "notebooks" / "summary_controllability.ipynb"),
                        str(chapter), parameters={"profile": "smoke",
                                                  "results_dir": str(project / "results")},
                        kernel_name="python3", progress_bar=False, cwd=str(project))
    assert "1,1,16,1" in chapter.read_text()
    fronts = project / "fronts.ipynb"  # and joins CPT's front and the precision table
    pm.execute_notebook(str(project / "notebooks" / "summary_fronts.ipynb"),
                        str(fronts), parameters={"profile": "smoke",
                                                 "results_dir": str(project / "results")},
                        kernel_name="python3", progress_bar=False, cwd=str(project))
    assert "c=1,1,16,1" in fronts.read_text()  # a label of the front figure's point
    assert "1,1,16,1" in fronts.read_text().split("angle, last")[1]  # a precision table row


def test_cpt_data_waterbirds_offline_then_from_a_local_copy(tmp_path):
    from cptlib.data import load
    from cptlib.data.fakes import fake_archive

    env = {"CPT_DATA": str(tmp_path / "data")}
    offline = run_cli("cpt data waterbirds", tmp_path, **env)
    assert offline.returncode != 0
    assert "waterbird_complete95_forest2water2.tar.gz" in offline.stderr
    assert "--source" in offline.stderr
    assert not (tmp_path / "data" / "waterbirds" / ".cpt-complete.json").exists()

    archive = fake_archive("waterbirds", tmp_path / "waterbird_complete95_forest2water2.tar.gz")
    ok = run_cli(f"cpt data waterbirds --source {archive}", tmp_path, **env)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert len(load("waterbirds", tmp_path / "data" / "waterbirds", "test")) > 0


def test_paper_sweep_lists_the_authors_runs():
    from cptlib.runs.profiles import profile_runs

    runs = profile_runs("paper", "waterbirds")
    assert runs and all(r.params["model"] == "vit_base_patch16_224.orig_in21k" for r in runs)
    cpt = [r for r in runs if r.params["method"] == "cpt"]
    assert {(r.params["lr"], r.params["batch_size"], r.params["alpha"], r.params["epochs"])
            for r in cpt} == {(0.1, 64, 2.0, 100)}
    assert len(profile_runs("paper")) > len(runs)

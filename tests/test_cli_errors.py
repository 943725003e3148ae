"""Bad run parameters on the command line: one line naming the problem, exit code 2, within a
second or two, before torch, papermill or a kernel start, and nothing written."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cptlib.paths import project_root

PROBE = """
import sys
from cptlib.cli import main
rc = main(sys.argv[1:])
heavy = sorted(m for m in ("torch", "papermill", "jupyter_client") if m in sys.modules)
print("HEAVY=" + ",".join(heavy), file=sys.stderr)
sys.exit(rc)
"""

CASES = [
    (["run", "synthetic", "-p", "c=[1,1,0,1]"], r"c[2] must be a finite number > 0"),
    (["run", "synthetic", "-p", "sedd=3"], "unknown parameter sedd"),
    (["run", "synthetic", "-p", "steps=-1"], "steps must be >= 1"),
    (["run", "nosuch"], "unknown experiment 'nosuch'"),
    (["run", "synthetic", "-p", "method=sgd"], "method must be one of"),
    (["run", "synthetic", "-p", "c=1141"], "c must be a non-empty list"),
    (["run", "synthetic", "-p", "c=abcd"], "c must be a non-empty list"),
    (["run", "synthetic", "-p", "c=[[1,1],[1,1]]"], "c[0] must be a number"),
    (["run", "synthetic", "-p", "c=[]"], "c must be a non-empty list"),
    (["run", "synthetic", "-p", "c=[1,1,1]"], "c has 3 entries but the dataset has 4 groups"),
    (["run", "synthetic", "-p", "lr=nan"], "lr must be a number, got 'nan'"),
    (["run", "synthetic", "-p", "lr=.nan"], "lr must be a finite number"),
    (["run", "synthetic", "-p", "alpha=-1"], "alpha must be >= 0"),
    (["run", "synthetic", "-p", "batch_size=0"], "batch_size must be >= 1"),
    (["run", "synthetic", "-p", "c=[1,2"], "not a valid YAML value"),
    (["run", "synthetic", "-p", "seed"], "-p expects KEY=VALUE"),
    (["run", "toy", "-p", "cs=[[1,1,1]]"], "cs[0] has 3 entries"),
    (["run", "synthetic", "--profile", "huge"], "invalid choice: 'huge'"),
    (["sweep", "--only", "nosuch"], "unknown experiment 'nosuch'"),
    (["sweep", "--jobs", "0"], "--jobs must be >= 1"),
]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("project")
    shutil.copytree(project_root() / "notebooks", root / "notebooks")
    shutil.copy(project_root() / "profiles.yaml", root)
    return root


def _tree(root: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime for p in root.rglob("*")}


@pytest.mark.parametrize(("argv", "message"), CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_input_is_one_line_exit_2_before_any_work(argv, message, project, tmp_path):
    env = {**os.environ, "CPT_PROJECT": str(project), "CPT_CACHE": str(tmp_path / "cache"),
           "CPT_DATA": str(tmp_path / "data")}
    before = _tree(project)
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True,
                         env=env, cwd=tmp_path, timeout=120)
    seconds = time.perf_counter() - start
    lines = [line for line in out.stderr.splitlines() if not line.startswith("HEAVY=")]
    assert out.returncode == 2, out.stderr
    assert len(lines) == 1 and message in lines[0], out.stderr
    assert "Traceback" not in out.stderr
    heavy = [line for line in out.stderr.splitlines() if line.startswith("HEAVY=")]
    assert heavy in ([], ["HEAVY="]), f"imported {heavy} before rejecting the input"
    assert _tree(project) == before and not list(tmp_path.rglob("*"))
    assert seconds < 15, "generous bound: a bad parameter must not start any work"


def test_debug_shows_the_traceback(project, tmp_path):
    env = {**os.environ, "CPT_PROJECT": str(project), "CPT_DEBUG": "1"}
    out = subprocess.run([sys.executable, "-m", "cptlib.cli", "run", "synthetic", "-p",
                          "steps=-1"], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode != 0 and "Traceback" in out.stderr


@pytest.mark.parametrize(("argv", "message"), [
    (["run", "synthetic", "--launcher", "slurm", "--cpus-per-run", "0"],
     "cpus_per_run must be an integer >= 1"),
    (["sweep", "--profile", "smoke", "--launcher", "slurm", "--time-min", "0"],
     "time_min must be an integer >= 1"),
    (["sweep", "--launcher", "pbs"], "invalid choice: 'pbs'"),
])
def test_bad_launcher_options_are_one_line_before_anything_is_submitted(argv, message, project,
                                                                       tmp_path):
    env = {**os.environ, "CPT_PROJECT": str(project), "CPT_CACHE": str(tmp_path / "cache")}
    before = _tree(project)
    out = subprocess.run([sys.executable, "-m", "cptlib.cli", *argv], capture_output=True,
                         text=True, env=env, cwd=tmp_path, timeout=120)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and message in out.stderr, \
        out.stderr
    assert _tree(project) == before

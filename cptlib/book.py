"""Building the book: sweep, featured run pages, summary chapters, then jupyter-book.

Chapters are notebooks executed here with papermill (jupyter-book only renders them), and each
is re-executed only when its inputs changed: the notebook, the library code or the records.
"""

from __future__ import annotations

import filecmp
import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat

from cptlib import _io, analysis, records
from cptlib._env import provenance
from cptlib.analysis import verdicts
from cptlib.models import trainable_table
from cptlib.paths import project_root, results_root
from cptlib.runs import experiments
from cptlib.runs.profiles import pages
from cptlib.runs.sweep import sweep

# Summary chapters: page name in book/runs/ → (notebook in notebooks/, extra parameters).
SUMMARIES: dict[str, tuple[str, dict]] = {
    "benchmark": ("summary_benchmark", {}),
    "controllability": ("summary_controllability", {}),
    "fronts": ("summary_fronts", {}),
    "every_c": ("summary_every_c", {}),
    "dynamics": ("summary_dynamics", {}),
    "efficiency": ("summary_efficiency", {}),
    "text": ("summary_text", {}),
}
SUMMARIES.update({
    f"paper_{e.name}": ("summary_paper", {"experiment": e.name, "dataset": e.dataset,
                                          "title": e.title, "data_note": e.data_note})
    for e in experiments.paper_experiments()
})
BOOK_SOURCES = ("_config.yml", "_toc.yml", "*.md", "*.bib", "images")


def book_dir() -> Path:
    return project_root() / "book"


def stage_sources(out: Path) -> Path:
    """Copy the book's hand-written sources into ``out`` (for a build that must not touch
    ``book/``, such as the smoke build of the tests)."""
    out.mkdir(parents=True, exist_ok=True)
    for pattern in BOOK_SOURCES:
        for src in book_dir().glob(pattern):
            dst = out / src.name
            if src.is_dir():
                shutil.copytree(src, dst, dirs_exist_ok=True)
            elif not dst.exists() or not filecmp.cmp(src, dst, shallow=False):
                shutil.copy2(src, dst)
    return out


def _inputs_hash(notebook: Path, params: dict, profile: str, results: Path) -> str:
    """What a summary chapter depends on: its notebook, its parameters, the code, the records."""
    h = hashlib.sha256()
    h.update(notebook.read_bytes())
    h.update(json.dumps(params, sort_keys=True, default=str).encode())
    h.update(records.code_version().encode())  # all of cptlib: plots change the pages too
    for folder in (results / profile, results / "bench", results / "profile", results / "paper"):
        for path in sorted(folder.rglob("*.json")) if folder.exists() else []:
            h.update(str(path.relative_to(results)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def execute_summaries(
    stage: Path, profile: str, results: Path, *, force: bool = False
) -> list[str]:
    """Execute each summary notebook into ``stage/runs`` unless its inputs are unchanged."""
    import papermill as pm

    runs = stage / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    hashes_file = runs / ".inputs.json"
    hashes = json.loads(hashes_file.read_text()) if hashes_file.exists() else {}
    executed = []
    for page, (name, extra) in SUMMARIES.items():
        notebook = project_root() / "notebooks" / f"{name}.ipynb"
        params = {"profile": profile, "results_dir": str(results), **extra}
        digest = _inputs_hash(notebook, params, profile, results)
        out = runs / f"{page}.ipynb"
        if not force and out.exists() and hashes.get(page) == digest:
            continue
        print(f"book: executing {name} → runs/{page}.ipynb", flush=True)
        pm.execute_notebook(
            str(notebook), str(out), parameters=params, kernel_name="python3",
            progress_bar=False, cwd=str(project_root()),
        )
        hashes[page] = digest
        hashes_file.write_text(json.dumps(hashes, indent=1, sort_keys=True))
        executed.append(page)
    return executed


def copy_featured_runs(stage: Path, profile: str) -> None:
    """Pages that show one run's own notebook (the toy chapter, an example training run).

    The page hides the parameter cells (the run says in prose which run it is)."""
    runs = stage / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    for page, spec in pages(profile).items():
        src, dst = spec.notebook_out, runs / f"{page}.ipynb"
        if not src.exists():
            raise FileNotFoundError(
                f"page {page!r} shows run {spec.label()}, whose notebook {src} does not exist; "
                f"did that run fail? Run it with: cpt run {spec.experiment} --profile {profile}"
            )
        text = nbformat.writes(featured_page(nbformat.read(src, as_version=4)))
        if not dst.exists() or dst.read_text(encoding="utf-8") != text:
            _io.atomic_write(dst, text)


def featured_page(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A run's executed notebook as a book page: parameter cells removed from the page."""
    for cell in nb.cells:
        tags = cell.metadata.setdefault("tags", [])
        if {"parameters", "injected-parameters"} & set(tags) and "remove-cell" not in tags:
            tags.append("remove-cell")
    return nb


def write_trainable_table(results: Path, profile: str) -> Path:
    """The efficiency chapter's table of trainable parameters per model, written here (the
    top floor) so that no chapter builds a model."""
    path = results / profile / "trainable_params.json"
    stamp = path.with_name(".trainable_params.version")
    version = records.code_version([Path(__file__).resolve().parent / "models"])
    if not path.exists() or not stamp.exists() or stamp.read_text() != version:
        _io.write_json(path, trainable_table().to_dict(orient="records"))
        _io.atomic_write(stamp, version)
    return path


def provenance_text(profile: str, results: Path, seconds: float,
                    prov: dict | None = None) -> str:
    """The book's provenance: commit, date, hardware, and what this build and its runs cost."""
    prov = prov or provenance()
    git, hw = prov["git"], prov["hardware"]
    commit = f"`{git['commit'][:12]}`" if git.get("commit") else "an unknown commit"
    dirty = " with uncommitted changes" if git.get("dirty") else ""
    runs = records.load_records(results, profile)
    compute = runs["wall_time_s"].dropna().sum() / 60 if "wall_time_s" in runs else 0.0
    device = hw.get("cuda_device") or hw.get("processor") or hw.get("machine")
    return (
        f"This book was built at the **{profile}** profile from commit {commit}{dirty} on "
        f"{prov['timestamp_utc'].replace('T', ' ').replace('+00:00', ' UTC')}, on {device} "
        f"({hw.get('cpu_count')} cores; torch {prov['versions'].get('torch')}, cptlib "
        f"{prov['versions'].get('cptlib')}). Its {len(runs)} run records hold "
        f"{compute:.0f} min of training runs in all (each record keeps its own provenance); "
        f"this build's sweep and chapters took {seconds / 60:.1f} min, which includes only the "
        "runs that were not up to date. The README gives the measured time of a build from a "
        "fresh clone.\n"
    )


def write_verdicts(stage: Path, profile: str, results: Path) -> Path:
    """``runs/verdicts.md``: the claims and their verdicts, included by the landing page."""
    text = verdicts.landing_text(
        lambda e: analysis.load_runs(results, profile, e), profile,
        lambda e: analysis.load_runs(results, profile, e, conditioned=True))
    return _io.atomic_write(stage / "runs" / "verdicts.md", text)


def write_provenance(stage: Path, profile: str, results: Path, seconds: float) -> Path:
    """``runs/provenance.md``, included by the landing and reproduce pages."""
    path = stage / "runs" / "provenance.md"
    text = provenance_text(profile, results, seconds)
    return _io.atomic_write(path, text)


def build_html(stage: Path, *, strict: bool = True) -> Path:
    """jupyter-book 1.x, offline; strict means every warning fails the build."""
    exe = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(exe), "build", str(stage), "--builder", "html"]
    if strict:
        cmd += ["-W", "--keep-going"]
    subprocess.run(cmd, check=True)
    return stage / "_build" / "html" / "index.html"


def build_book(
    profile: str = "quick", *, out: Path | None = None, strict: bool = True, force: bool = False
) -> Path:
    """Everything ``make book`` does after the environment exists; returns index.html.

    Runs that fail are listed and make the build fail at the end, after the other chapters
    were built, so one broken run never hides the rest.
    """
    started = time.perf_counter()
    result = sweep(profile)
    print(result.summary(), flush=True)
    stage = book_dir() if out is None else stage_sources(Path(out))
    results = results_root()
    copy_featured_runs(stage, profile)
    write_trainable_table(results, profile)
    execute_summaries(stage, profile, results, force=force)
    write_verdicts(stage, profile, results)
    write_provenance(stage, profile, results, time.perf_counter() - started)
    index = build_html(stage, strict=strict)
    if not result.ok:
        raise RuntimeError(f"the book was built, but some runs failed:\n{result.summary()}")
    return index

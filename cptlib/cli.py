"""The ``cpt`` command: prepare data, run one experiment, sweep a profile, build the book, bench.

The command only parses and calls downwards. Every error a user can cause (a parameter, a
file, an archive) ends as one line on stderr naming the input and the problem, exit code 2,
before any work starts; ``--debug`` (or ``CPT_DEBUG=1``) shows the traceback instead. Run
parameters are validated by the run spec without importing torch or starting a kernel.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import yaml

from cptlib import records
from cptlib.config import check_c
from cptlib.runs import experiments
from cptlib.runs.spec import PROFILES, RunSpec, parse_overrides, results_root

EXIT_USER_ERROR = 2
EXIT_RUN_FAILED = 1


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the usage is one ``--help`` away)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _data(args: argparse.Namespace) -> int:
    if args.name == "backbone":  # a model, not data: cptlib.data never imports cptlib.models
        from cptlib.models.quick_backbone import prepare_backbone  # lazy: each command
        # imports only what it uses
        print(prepare_backbone(args.root, args.source))
        return 0
    from cptlib.data.prepare import prepare  # lazy: see above

    path = prepare(args.name, Path(args.root) if args.root else None, args.source, args.seed,
                   verify=not args.no_verify)
    print(path)
    return 0


def _slurm_resources(args: argparse.Namespace):
    from cptlib.launch.slurm import SlurmResources  # lazy: submitit, for Slurm users only

    return SlurmResources(partition=args.partition, gpus_per_run=args.gpus_per_run,
                          cpus_per_run=args.cpus_per_run, mem_gb=args.mem_gb,
                          time_min=args.time_min, array_parallelism=args.array_parallelism)


def _slurm_folder(spec: RunSpec) -> Path:
    """submitit's pickles, logs and ``jobs.json``, beside the profile's records."""
    return spec.results_dir / spec.profile / "slurm"


def _on_slurm(specs: list[RunSpec], args: argparse.Namespace) -> int:
    from cptlib.launch import slurm  # lazy: see _slurm_resources

    resources = _slurm_resources(args)  # a bad value is one line, before anything is submitted
    if not specs:
        print("nothing to run")
        return 0
    result = slurm.sweep(specs, _slurm_folder(specs[0]), resources)
    print(result.summary())
    return 0 if result.ok else EXIT_RUN_FAILED


def _run(args: argparse.Namespace) -> int:
    spec = RunSpec.build(args.experiment, args.profile, parse_overrides(args.param))
    if args.launcher == "slurm":
        return _on_slurm([spec], args)
    from cptlib.runs.execute import execute  # lazy: papermill, only once the spec is valid

    print(f"running {spec.label()} at profile {args.profile} [{spec.run_id}] …",
          file=sys.stderr, flush=True)
    print(execute(spec, log_output=args.verbose))
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from cptlib.runs import sweep as local  # lazy: see _data
    from cptlib.runs.profiles import profile_runs

    if args.status or args.launcher == "slurm":
        specs = profile_runs(args.profile, args.only)
        if args.status:
            from cptlib.launch import slurm  # lazy: see _slurm_resources

            folder = _slurm_folder(specs[0]) if specs else Path(".")
            print(slurm.format_status(slurm.status(specs, folder)))
            return 0
        todo = [s for s in specs if args.force or not local.is_done(s)]
        return _on_slurm(todo, args)
    result = local.sweep(args.profile, args.only, force=args.force, jobs=args.jobs)
    print(result.summary())
    return 0 if result.ok else EXIT_RUN_FAILED


def _book(args: argparse.Namespace) -> int:
    from cptlib.book import build_book  # lazy: see _data

    index = build_book(
        args.profile, out=Path(args.out) if args.out else None, strict=not args.no_strict,
        force=args.force,
    )
    print(index)
    return 0


def _clean(args: argparse.Namespace) -> int:
    from cptlib.runs.clean import clean  # lazy: see _data

    removed = clean(results_root(args.results), dry_run=args.dry_run)
    for path in removed:
        print(f"{'would remove' if args.dry_run else 'removed'} {path}")
    print(f"{len(removed)} leftover(s) {'found' if args.dry_run else 'removed'}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    """Checks the record and c without torch (one line, exit 2), then evaluates."""
    record = records.read_record(args.record)
    params = record["params"]
    if record.get("experiment") not in experiments.EXPERIMENTS or "dataset" not in params:
        raise ValueError(f"{args.record}: not the record of a training run")
    c = None
    if args.c is not None:
        try:
            value = yaml.safe_load(args.c)
        except yaml.YAMLError:
            raise ValueError(f"--c {args.c!r} is not a list such as [1, 1, 4, 1]") from None
        c = check_c(value, experiments.DATASET_GROUPS[params["dataset"]], name="--c")
        if not params.get("conditioned") and c != params.get("c"):
            raise ValueError(f"--c: run {record['run_id']} is not conditioned; its adapter "
                             f"holds one c ({params.get('c')}); train with -p conditioned=true")
    from cptlib.runs.worker import evaluate_record  # lazy: torch only after the checks

    print(json.dumps(evaluate_record(args.record, c), indent=1))
    return 0


def _bench(args: argparse.Namespace) -> int:
    from cptlib.bench import main as bench_main  # lazy: see _data

    return bench_main(args)


def _launcher_options(p: argparse.ArgumentParser) -> None:
    """Where the runs execute: here (``local``) or as one Slurm job array (``slurm``)."""
    g = p.add_argument_group("launcher (see the book's 'Running on a cluster' page)")
    g.add_argument("--launcher", choices=("local", "slurm"), default="local")
    g.add_argument("--partition", help="Slurm partition")
    g.add_argument("--gpus-per-run", type=int, default=0)
    g.add_argument("--cpus-per-run", type=int, default=1)
    g.add_argument("--mem-gb", type=float, help="memory per run (GB)")
    g.add_argument("--time-min", type=int, default=240, help="time limit per run (minutes)")
    g.add_argument("--array-parallelism", type=int, default=32,
                   help="at most this many runs of the array at once")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="cpt", description=__doc__)
    p.add_argument("--debug", action="store_true",
                   help="show Python tracebacks instead of one-line errors (or CPT_DEBUG=1)")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    d = sub.add_parser(
        "data", help="prepare a dataset (download + verify, or generate)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Download, verify and prepare a dataset, or generate an embedded one.",
        epilog="Verification: every file is checked BEFORE extraction; a mismatch stops with the "
        "file kept for\ninspection. Published digests are on record for CelebA (SHA-256 + size "
        "from TensorFlow Datasets,\nMD5 from torchvision) and MultiNLI 1.0 (SHA-256 + size from "
        "TensorFlow Datasets and ParlAI).\nFor Waterbirds, MetaShift, ISIC, CivilComments, the "
        "WILDS bundles and group_DRO's\nmetadata_random.csv no digest is published: the first "
        "successful preparation records the SHA-256\nit saw in ROOT.cpt-digests.json beside the "
        "dataset and prints it (trust on first use; compare\nit with a copy you trust); later "
        "preparations of that ROOT are held to it. --source files are\nheld to the same digests; "
        "a file under an unpublished name cannot be verified and needs\n--no-verify, which is "
        "printed and recorded in the dataset's .cpt-complete.json.")
    d.add_argument("name", help="waterbirds, celeba, metashift, isic, multinli, civilcomments, "
                   "synthetic, synthetic-text, or backbone (the embedded backbone)")
    d.add_argument("--root", help="target folder (default: $CPT_DATA/NAME)")
    d.add_argument("--source", help="mirror URL or local archive to use instead of the default")
    d.add_argument("--seed", type=int, default=0, help="seed of generated datasets")
    d.add_argument("--no-verify", action="store_true",
                   help="install files whose digests differ from the record or cannot be "
                   "checked (printed, and recorded in the marker)")
    d.set_defaults(func=_data)

    r = sub.add_parser("run", help="execute one experiment notebook with papermill")
    r.add_argument("experiment", help="an experiment of the registry, e.g. synthetic, toy, text")
    r.add_argument("--profile", default="quick", choices=PROFILES)
    r.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                   help="parameter override, value parsed as YAML (e.g. -p c=[1,1,4,1])")
    r.add_argument("-v", "--verbose", action="store_true", help="stream the notebook's output")
    _launcher_options(r)
    r.set_defaults(func=_run)

    s = sub.add_parser("sweep", help="every run a profile lists, skipping up-to-date ones")
    s.add_argument("--profile", default="quick", choices=PROFILES)
    s.add_argument("--only", metavar="EXPERIMENT", help="only this experiment's runs")
    s.add_argument("--force", action="store_true", help="rerun runs whose record exists")
    s.add_argument("--jobs", type=int, help="runs side by side (default: one per core)")
    s.add_argument("--status", action="store_true",
                   help="per run: done / queued / running / failed (Slurm sweeps), then exit")
    _launcher_options(s)
    s.set_defaults(func=_sweep)

    b = sub.add_parser("book", help="sweep, summaries, then the jupyter-book build")
    b.add_argument("--profile", default="quick", choices=PROFILES)
    b.add_argument("--out", help="build a copy of the book there instead of in book/")
    b.add_argument("--no-strict", action="store_true", help="do not turn warnings into errors")
    b.add_argument("--force", action="store_true", help="re-execute every summary chapter")
    b.set_defaults(func=_book)

    c = sub.add_parser("clean", help="remove what killed or failed work left behind")
    c.add_argument("--results", default="results", help="results folder (default: results)")
    c.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    c.set_defaults(func=_clean)

    e = sub.add_parser("eval", help="a run's adapter at a control vector c: per-group accuracy")
    e.add_argument("record", help="a run record (results/<profile>/<experiment>/<id>.json)")
    e.add_argument("--c", help='the control vector, e.g. "[1, 1, 4, 1]" (conditioned runs; '
                   "default: the run's own c)")
    e.set_defaults(func=_eval)

    bench = sub.add_parser("bench", help="per-step cost of the balancers against ERM")
    bench.add_argument("--json", help="also write the rows to this JSON file")
    bench.add_argument("--quick", action="store_true", help="fewer repeats and sizes (a smoke run)")
    bench.set_defaults(func=_bench)
    return p


def _check_args(args: argparse.Namespace) -> None:
    """Values argparse cannot check, checked before any work."""
    if getattr(args, "jobs", None) is not None and args.jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {args.jobs}")
    if getattr(args, "only", None) is not None:
        experiments.get(args.only)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = parser().parse_args(argv)
    debug = args.debug or os.environ.get("CPT_DEBUG", "") not in ("", "0")
    try:
        _check_args(args)
        return args.func(args)
    except (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
            PermissionError) as exc:
        if debug:
            raise
        print(f"cpt {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except RuntimeError as exc:  # a run that failed inside its notebook (RunFailed), a build
        if debug:
            raise
        print(f"cpt {args.command}: {_one_line(exc)}", file=sys.stderr)
        return EXIT_RUN_FAILED
    except KeyboardInterrupt:
        print(f"cpt {args.command}: interrupted", file=sys.stderr)
        return 130


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text


if __name__ == "__main__":
    sys.exit(main())

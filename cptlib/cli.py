"""The ``cpt`` command: prepare data, run one experiment, sweep a profile, build the book, bench."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _data(args: argparse.Namespace) -> int:
    if args.name == "backbone":  # a model, not data: cptlib.data never imports cptlib.models
        from cptlib.models.quick_backbone import prepare_backbone

        print(prepare_backbone(args.root, args.source))
        return 0
    from cptlib.data.prepare import prepare

    path = prepare(args.name, Path(args.root) if args.root else None, args.source, args.seed,
                   verify=not args.no_verify)
    print(path)
    return 0


def _run(args: argparse.Namespace) -> int:
    from cptlib.sweep import execute, make_spec, parse_overrides

    spec = make_spec(args.experiment, args.profile, parse_overrides(args.param))
    print(f"running {spec.label()} at profile {args.profile} …", file=sys.stderr, flush=True)
    path = execute(spec, log_output=args.verbose)
    print(path)
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from cptlib.sweep import sweep

    result = sweep(args.profile, args.only, force=args.force, jobs=args.jobs)
    print(result.summary())
    return 0 if result.ok else 1


def _book(args: argparse.Namespace) -> int:
    from cptlib.book import build_book

    index = build_book(
        args.profile, out=Path(args.out) if args.out else None, strict=not args.no_strict,
        force=args.force,
    )
    print(index)
    return 0


def _bench(args: argparse.Namespace) -> int:
    from cptlib.bench import main as bench_main

    return bench_main(args)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cpt", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

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
    r.add_argument("experiment", help="notebook name in notebooks/, e.g. synthetic, toy, text")
    r.add_argument("--profile", default="quick", choices=["smoke", "quick", "paper"])
    r.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                   help="parameter override, value parsed as YAML (e.g. -p c=[1,1,4,1])")
    r.add_argument("-v", "--verbose", action="store_true", help="stream the notebook's output")
    r.set_defaults(func=_run)

    s = sub.add_parser("sweep", help="every run a profile lists, skipping up-to-date ones")
    s.add_argument("--profile", default="quick", choices=["smoke", "quick", "paper"])
    s.add_argument("--only", metavar="EXPERIMENT", help="only this experiment's runs")
    s.add_argument("--force", action="store_true", help="rerun runs whose record exists")
    s.add_argument("--jobs", type=int, help="runs side by side (default: 2 on 2+ cores)")
    s.set_defaults(func=_sweep)

    b = sub.add_parser("book", help="sweep, summaries, then the jupyter-book build")
    b.add_argument("--profile", default="quick", choices=["smoke", "quick", "paper"])
    b.add_argument("--out", help="build a copy of the book there instead of in book/")
    b.add_argument("--no-strict", action="store_true", help="do not turn warnings into errors")
    b.add_argument("--force", action="store_true", help="re-execute every summary chapter")
    b.set_defaults(func=_book)

    bench = sub.add_parser("bench", help="per-step cost of the balancers against ERM")
    bench.add_argument("--json", help="also write the rows to this JSON file")
    bench.add_argument("--quick", action="store_true", help="fewer repeats and sizes (a smoke run)")
    bench.set_defaults(func=_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"cpt {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

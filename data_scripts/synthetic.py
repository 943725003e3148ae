#!/usr/bin/env python
"""Generate the embedded image benchmark ``synthetic`` (a synthetic Waterbirds) from a seed.

Writes the Waterbirds layout (PNG images + metadata.csv) and a completion marker; the same seed
gives the same bytes. ``--smoke`` writes the tiny CI-sized version.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from cptlib.data import synthetic


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=None,
                        help="output folder (default: $CPT_DATA/synthetic)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--img-size", type=int, default=32)
    parser.add_argument("--smoke", action="store_true", help="tiny version for CI (~90 images)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.root is None:
        from cptlib.paths import data_root

        args.root = data_root() / "synthetic"
    sizes = synthetic.SMOKE if args.smoke else {}
    start = time.perf_counter()
    root = synthetic.generate(args.root, seed=args.seed, img_size=args.img_size,
                              progress=not args.no_progress, **sizes)
    print(f"generated in {time.perf_counter() - start:.1f} s")
    print(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Generate the embedded text task ``synthetic-text`` (reviews with a spurious topic) from a seed.

Writes metadata.csv (text, y, attribute, split) and a completion marker; the same seed gives
the same bytes. ``--smoke`` writes the tiny CI-sized version.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from cptlib.data import synthetic_text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=None,
                        help="output folder (default: $CPT_DATA/synthetic-text)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="tiny version for CI")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.root is None:
        from cptlib.paths import data_root

        args.root = data_root() / "synthetic-text"
    sizes = synthetic_text.SMOKE if args.smoke else {}
    start = time.perf_counter()
    root = synthetic_text.generate(args.root, seed=args.seed, progress=not args.no_progress,
                                   **sizes)
    print(f"generated in {time.perf_counter() - start:.1f} s")
    print(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())

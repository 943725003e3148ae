#!/usr/bin/env python
"""ERM vs CPT step cost at the paper profile's shapes on a GPU (ViT-B/16, 224 px, batch 64).

Prints images per second and peak memory per method and K, and writes
``results/bench/gpu-<device>.json`` in the format of ``cpt bench --json``. Random weights (no
download). The logic lives in ``cptlib.bench.gpu_main``; ``--help`` lists the options.
Exits with status 2 and a message when no CUDA device is available.
"""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from cptlib.bench import gpu_main

    sys.exit(gpu_main(sys.argv[1:]))

#!/usr/bin/env python
"""ERM, GroupDRO and CPT step cost at the paper profile's shapes on a GPU.

VPT-deep on ViT-B/16 (224 px, batch 64, 10 prompts) and CoOp on CLIP ViT-L/14 (224 px, batch
32, 16 context tokens), K = 4 and 16, every applicable per-group-gradient way. Prints images
per second and peak memory per method and K, and writes
``results/bench/gpu-<device>.json`` in the format of ``cpt bench --json``. Random weights (no
download). The logic lives in ``cptlib.bench.gpu_main``; ``--help`` lists the options.
Exits with status 2 and a message when no CUDA device is available. ``--tiny --device cpu``
runs the same code on tiny models (what the tests do).
"""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from cptlib.bench import gpu_main

    sys.exit(gpu_main(sys.argv[1:]))

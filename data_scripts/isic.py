#!/usr/bin/env python
"""Download, verify and prepare ISIC with hair annotations (DISC's release of the trap sets).

Same options as `cpt data isic`: --root DIR, --source URL-or-FILE-or-FOLDER, --seed N,
--no-progress. See data_scripts/README.md.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runs from a checkout too

from cptlib.data.prepare import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(name="isic"))

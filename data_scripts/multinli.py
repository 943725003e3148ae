#!/usr/bin/env python
"""Download, verify and prepare MultiNLI with negation groups (group_DRO's metadata +
the MultiNLI 1.0 corpus).

Same options as `cpt data multinli`: --root DIR, --source URL-or-FILE-or-FOLDER, --seed N,
--no-progress. See data_scripts/README.md.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runs from a checkout too

from cptlib.data.prepare import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(name="multinli"))

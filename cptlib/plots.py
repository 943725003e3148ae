"""The names the experiment notebooks use, kept for them (statistics live in
``cptlib.analysis``, figures in ``cptlib.report``; new code imports from those).

Importing this module applies the book's style (``report.style.apply()``), as it always did for
those notebooks; ``cptlib.report`` itself never changes the style at import.
"""

from __future__ import annotations

import warnings

from tqdm import TqdmWarning

from cptlib.analysis.groups import group_counts, per_group_table
from cptlib.analysis.text import Note
from cptlib.report import style
from cptlib.report.runs import example_grid, group_curves
from cptlib.report.toy import toy_endpoints, toy_trajectories

__all__ = ["Note", "example_grid", "group_counts", "group_curves", "per_group_table",
           "toy_endpoints", "toy_trajectories"]

style.apply()
# tqdm.auto (imported by cptlib.train) warns in a kernel without ipywidgets; the book never
# shows a progress bar, so the warning says nothing to its readers.
warnings.filterwarnings("ignore", message="IProgress not found", category=TqdmWarning)

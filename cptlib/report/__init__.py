"""The book's figures, one module per chapter or family; statistics come from
``cptlib.analysis``. Call ``style.apply()`` once before drawing (nothing is set at import).

Modules: ``style`` (theme, one colour per method family, figure helpers), ``runs`` (one run's
figures), ``toy``, ``benchmark``, ``controllability``, ``dynamics``, ``efficiency``,
``every_c`` (one adapter for every c), ``dial`` (the figure where the reader dials c),
``fronts`` (the trade-offs chapter: every family's front, the loss plane, control over training).
"""

from cptlib.report import style
from cptlib.report.benchmark import per_group_bars
from cptlib.report.controllability import c_effect_figure, c_sweep_figure, tradeoff_figure
from cptlib.report.dynamics import conflict_figure, dynamics_figure, modes_figure
from cptlib.report.efficiency import bench_figure
from cptlib.report.runs import example_grid, group_curves
from cptlib.report.toy import toy_endpoints, toy_trajectories

__all__ = ["bench_figure", "c_effect_figure", "c_sweep_figure", "conflict_figure",
           "dynamics_figure", "example_grid", "group_curves", "modes_figure", "per_group_bars",
           "style", "toy_endpoints", "toy_trajectories", "tradeoff_figure"]

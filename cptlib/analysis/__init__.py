"""The study's statistics and computed sentences, from run records (pandas and NumPy only).

Nothing here draws or trains: it imports without matplotlib, seaborn or torch, so every
number and sentence of the book can be tested on its own. Figures are in ``cptlib.report``.

Modules: ``text`` (``Note``, shared sentence pieces), ``labels`` (run, family, model names),
``frames`` (records → DataFrames), ``groups`` (group counts, one run's per-group table),
``summaries`` (main table, comparisons), ``controllability`` (pairs of c runs),
``dynamics`` (minority group, balancer diagnostics), ``bench`` (``cpt bench`` files),
``efficiency`` (parameters, adapters, run times), ``run_profile`` (a run's phases),
``paper`` (paper pages), ``toy``,
``every_c`` (one adapter for every c against the dedicated runs), ``verdicts``,
``fronts`` (Pareto fronts and hypervolumes), ``families`` (every method swept over its knob:
the trade-offs chapter), ``control`` (precision of control), ``paired`` (paired tests).
"""

from cptlib.analysis.bench import (
    BENCH_TARGETS,
    bench_section,
    bench_table,
    bench_table_text,
    bench_targets,
    load_bench,
)
from cptlib.analysis.controllability import (
    controllability_deltas,
    controllability_table,
    controllability_text,
    pairs,
)
from cptlib.analysis.dynamics import balancer_table, minority_summary, minority_table, minority_text
from cptlib.analysis.efficiency import (
    adapter_table,
    load_trainable,
    run_time_table,
    run_time_text,
    trainable_table,
    trainable_text,
)
from cptlib.analysis.frames import (
    diagnostics_frame,
    group_names,
    history_frame,
    label_runs,
    load_runs,
    read_run,
    results_path,
)
from cptlib.analysis.groups import (
    counts_caveat,
    group_counts,
    per_group_table,
    record_group_counts,
    runs_group_counts,
)
from cptlib.analysis.labels import (
    CONTROLLED,
    DYNAMICS_LABELS,
    FAMILIES,
    MAIN_LABELS,
    METHOD_NAMES,
    method_family,
    model_title,
    ordered,
    run_label,
)
from cptlib.analysis.paper import paper_dataset, paper_title, params_table, profile_runs_table
from cptlib.analysis.run_profile import (
    PROFILE_MISSING,
    load_run_profile,
    run_profile_table,
    run_profile_text,
)
from cptlib.analysis.summaries import (
    comparison_text,
    learned_text,
    main_table,
    method_summary,
    status_text,
)
from cptlib.analysis.text import Note, no_runs_text

__all__ = [
    "BENCH_TARGETS", "CONTROLLED", "DYNAMICS_LABELS", "FAMILIES", "MAIN_LABELS", "METHOD_NAMES",
    "Note", "adapter_table", "balancer_table", "bench_section", "bench_table",
    "bench_table_text", "bench_targets", "comparison_text", "controllability_deltas",
    "controllability_table", "controllability_text", "counts_caveat", "diagnostics_frame",
    "group_counts", "group_names", "history_frame", "label_runs", "load_bench",
    "learned_text", "load_runs", "load_trainable", "main_table", "method_family", "method_summary",
    "minority_summary", "minority_table", "minority_text", "model_title", "no_runs_text",
    "PROFILE_MISSING", "load_run_profile", "run_profile_table", "run_profile_text",
    "ordered", "pairs", "paper_dataset", "paper_title", "params_table", "per_group_table",
    "profile_runs_table", "read_run", "record_group_counts", "results_path", "run_label",
    "run_time_table", "run_time_text", "runs_group_counts", "status_text", "trainable_table",
    "trainable_text",
]

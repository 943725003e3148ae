"""Runs of the study: the experiment registry, run specs, profiles, execution and sweeps.

``experiments`` (registry) → ``spec`` (RunSpec: every parameter, validated) → ``profiles``
(the runs a profile lists) → ``execute`` (one spec's notebook, papermill) and ``sweep`` (many,
through a launcher). ``inputs`` and ``worker`` are what the notebook's kernel runs.
"""

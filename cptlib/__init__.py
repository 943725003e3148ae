"""cptlib: Controllable Prompt Tuning (CPT) for group robustness, as a small reproducible library.

Modules: ``balancers`` (CPT and baselines), ``grads`` (per-group gradients), ``models``
(prompt-tuned backbones), ``data`` (group-aware datasets), ``train`` (the training loop),
``metrics``, ``records`` (run records), ``runs`` (registry, run specs, sweeps), ``launch``
(Slurm), ``analysis`` (statistics, pandas only), ``report`` (figures), ``cli`` (the ``cpt``
command). ARCHITECTURE.md draws the layers.
"""

__version__ = "0.1.0"

"""cptlib: Controllable Prompt Tuning (CPT) for group robustness, as a small reproducible library.

Modules: ``balancers`` (CPT and baselines), ``grads`` (per-group gradients), ``models``
(prompt-tuned backbones), ``data`` (group-aware datasets), ``train`` (the training loop),
``metrics``, ``records`` (run records), ``plots``, ``cli`` (the ``cpt`` command).
"""

__version__ = "0.1.0"

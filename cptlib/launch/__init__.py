"""Launchers: where a list of run specs executes (``slurm``: one job array through submitit)."""

"""Hyperparameter searches over a trainable with DeepHyper: search spaces, the method registry,
the search driver (process or MPI evaluators), raw CSV/JSON logs, Slurm templates.

Entry points::

    python -m experiments.search --method asha --scale smoke --seed 0 --workers 2
    python -m experiments.campaign --backend live --scale smoke --methods "random asha"
"""

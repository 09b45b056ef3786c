"""Backends: what opens an evaluator for the driver (:mod:`experiments.driver`).

- :mod:`experiments.backends.live`: trials train on local processes, in the manager (serial),
  on MPI ranks or Ray; :mod:`experiments.backends.worker` is their run-function.
- :mod:`experiments.backends.replay`: trials replay a learning-curve table on a simulated clock.

A backend never imports the driver or the search command; the per-epoch logic of a trial is
:mod:`experiments.trial`'s.
"""

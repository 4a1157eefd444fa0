"""Ray Tune sweeps over expert count, top-k, learning rates and any model/train field.

- :mod:`~steermoe.sweep.space`: search-space expansion (grid, Tune domains, Optuna).
- :mod:`~steermoe.sweep.tuner`: Tune wiring, ``train_driver_fn`` (one trial) and the
  ``Tuner``; :func:`run_sweep` runs a sweep under an MLflow parent run.
- :mod:`~steermoe.sweep.bookkeeping`: trial outcomes read back, child runs closed in MLflow.
- :mod:`~steermoe.sweep.promote`: :func:`finalize` evaluates the best trial and registers it.
- :mod:`~steermoe.sweep.report`: a sweep's trials read back from MLflow.
"""

from steermoe.sweep.bookkeeping import (
    STOPPED_TAG,
    SweepResult,
    TrialOutcome,
    collect,
    pick_best,
)
from steermoe.sweep.promote import finalize
from steermoe.sweep.report import latest_parent, summary_rows
from steermoe.sweep.space import (
    EXPERTS,
    TOP_K,
    OptunaSpace,
    TopKFitting,
    Trial,
    expand,
    random_space,
    search_space,
    tune_domain,
)
from steermoe.sweep.tuner import build_tuner, run_sweep, storage_path, train_driver_fn, trainable

__all__ = [
    "EXPERTS",
    "STOPPED_TAG",
    "TOP_K",
    "OptunaSpace",
    "SweepResult",
    "TopKFitting",
    "Trial",
    "TrialOutcome",
    "build_tuner",
    "collect",
    "expand",
    "finalize",
    "latest_parent",
    "pick_best",
    "random_space",
    "run_sweep",
    "search_space",
    "storage_path",
    "summary_rows",
    "train_driver_fn",
    "trainable",
    "tune_domain",
]

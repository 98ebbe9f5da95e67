"""mfm-tracker-mlflow: the experiment tracker ``mlflow`` for mfm, as a separate plugin.

mfm finds it through the ``mfm.plugins`` entry point, which names ``mfm_tracker_mlflow.plugin``;
a config turns it on with ``train.trackers = [{ name = "mlflow" }]``.
"""

from mfm_tracker_mlflow.tracker import RUN_FILE, MlflowTracker

__all__ = ["RUN_FILE", "MlflowTracker"]

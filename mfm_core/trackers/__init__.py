"""The built-in experiment trackers (``train.trackers``); MLflow and W&B come as plugins of
their own under ``plugins/``."""

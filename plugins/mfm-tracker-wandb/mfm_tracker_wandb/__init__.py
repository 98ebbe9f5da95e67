"""mfm-tracker-wandb: the experiment tracker ``wandb`` for mfm, as a separate plugin.

mfm finds it through the ``mfm.plugins`` entry point, which names ``mfm_tracker_wandb.plugin``;
a config turns it on with ``train.trackers = [{ name = "wandb" }]``.
"""

from mfm_tracker_wandb.tracker import RUN_FILE, WandbTracker

__all__ = ["RUN_FILE", "WandbTracker"]

"""Vector-field networks."""

from mfm_core.models.mlp import MLP
from mfm_core.models.unet import UNet

__all__ = ["MLP", "UNet"]

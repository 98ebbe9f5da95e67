"""Vector-field networks."""

from mfm_core.models.mlp import MLP

__all__ = ["MLP"]

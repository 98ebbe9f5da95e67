"""Conditional probability paths between coupled samples."""

from mfm_core.paths.cond_ot import CondOTPath
from mfm_core.paths.vp import VPPath

__all__ = ["CondOTPath", "VPPath"]

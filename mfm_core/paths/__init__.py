"""Conditional probability paths between coupled samples."""

from mfm_core.paths.cond_ot import CondOTPath

__all__ = ["CondOTPath"]

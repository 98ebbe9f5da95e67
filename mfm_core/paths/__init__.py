"""Conditional probability paths between coupled samples: affine paths over a schedule."""

from mfm_core.paths.affine import AffinePath, Schedule, ScheduleValues
from mfm_core.paths.cond_ot import CondOTPath, CondOTSchedule
from mfm_core.paths.vp import VPPath, VPSchedule

__all__ = [
    "AffinePath",
    "CondOTPath",
    "CondOTSchedule",
    "Schedule",
    "ScheduleValues",
    "VPPath",
    "VPSchedule",
]

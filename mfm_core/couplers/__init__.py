"""Couplers: how noise and data samples are paired inside a minibatch."""

from mfm_core.couplers.base import PairCoupler
from mfm_core.couplers.costs import COSTS, Cost, cost_matrix
from mfm_core.couplers.exact import ExactCoupler
from mfm_core.couplers.independent import IndependentCoupler

__all__ = ["COSTS", "Cost", "ExactCoupler", "IndependentCoupler", "PairCoupler", "cost_matrix"]

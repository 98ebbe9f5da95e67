"""Couplers: how noise and data samples are paired inside a minibatch."""

from mfm_core.couplers.base import PairCoupler
from mfm_core.couplers.costs import cost_matrix, resolve_cost
from mfm_core.couplers.exact import ExactCoupler
from mfm_core.couplers.heuristic import HeuristicCoupler
from mfm_core.couplers.independent import IndependentCoupler
from mfm_core.couplers.reflow import ReflowCoupler
from mfm_core.couplers.semidiscrete import SemiDiscreteCoupler
from mfm_core.couplers.stable import StableCoupler

__all__ = [
    "ExactCoupler",
    "HeuristicCoupler",
    "IndependentCoupler",
    "PairCoupler",
    "ReflowCoupler",
    "SemiDiscreteCoupler",
    "StableCoupler",
    "cost_matrix",
    "resolve_cost",
]

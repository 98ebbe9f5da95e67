"""Built-in components expose what the registry needs: keyword parameters with real hints."""

import inspect
import typing

import pytest

from mfm_core.couplers import (
    ExactCoupler,
    HeuristicCoupler,
    IndependentCoupler,
    ReflowCoupler,
    StableCoupler,
)
from mfm_core.datasets import (
    Checkerboard,
    Cifar10Dataset,
    Circles,
    EightGaussians,
    FileDataset,
    Gaussian,
    ImageFolderDataset,
    ImageNetNpzDataset,
    Moons,
    Spirals,
)
from mfm_core.metrics import BPDMetric, FIDMetric, InceptionFeatures, NLLMetric, W2Metric
from mfm_core.models import MLP, UNet
from mfm_core.paths import CondOTPath, VPPath
from mfm_core.solvers import Dopri5Solver, EulerSolver, HeunSolver, MidpointSolver, RK4Solver

COMPONENTS = [
    IndependentCoupler,
    ExactCoupler,
    StableCoupler,
    HeuristicCoupler,
    ReflowCoupler,
    CondOTPath,
    VPPath,
    MLP,
    UNet,
    EulerSolver,
    MidpointSolver,
    HeunSolver,
    RK4Solver,
    Dopri5Solver,
    Gaussian,
    EightGaussians,
    Moons,
    Checkerboard,
    Circles,
    Spirals,
    FileDataset,
    ImageNetNpzDataset,
    Cifar10Dataset,
    ImageFolderDataset,
    W2Metric,
    FIDMetric,
    InceptionFeatures,
    NLLMetric,
    BPDMetric,
]


@pytest.mark.parametrize("component", COMPONENTS, ids=lambda c: c.__name__)
def test_parameters_are_keyword_only_with_evaluable_hints(component: type) -> None:
    hints = typing.get_type_hints(component.__init__)
    parameters = list(inspect.signature(component.__init__).parameters.values())[1:]
    for parameter in parameters:
        assert parameter.kind is inspect.Parameter.KEYWORD_ONLY, parameter.name
        assert parameter.name in hints, parameter.name


def test_literal_hints_list_the_accepted_values() -> None:
    hints = typing.get_type_hints(MLP.__init__)
    assert typing.get_args(hints["activation"]) == ("silu", "relu", "gelu", "tanh")
    hints = typing.get_type_hints(ExactCoupler.__init__)
    assert typing.get_args(hints["scope"]) == ("local", "global")

"""The built-in components, registered through the same hooks as any third-party plugin.

The core distribution declares this module under the ``mfm.plugins`` entry point group, so
it is discovered exactly like an installed plugin: read it as the first example of one.
"""

from __future__ import annotations

from mfm_core.couplers import (
    ExactCoupler,
    HeuristicCoupler,
    IndependentCoupler,
    ReflowCoupler,
    SemiDiscreteCoupler,
    StableCoupler,
    costs,
)
from mfm_core.datasets.file import FileDataset
from mfm_core.datasets.images import (
    Cifar10Dataset,
    DigitsDataset,
    ImageFolderDataset,
    ImageNetNpzDataset,
)
from mfm_core.datasets.toy2d import (
    Checkerboard,
    Circles,
    EightGaussians,
    Gaussian,
    Moons,
    Spirals,
)
from mfm_core.hookspecs import Register, hookimpl
from mfm_core.metrics.coupling import CouplingGap
from mfm_core.metrics.digits import DigitsMetric
from mfm_core.metrics.features import PixelFeatures
from mfm_core.metrics.fid import FIDMetric
from mfm_core.metrics.flow import Consistency, GradVariance, Straightness, TransportCost
from mfm_core.metrics.inception import InceptionFeatures
from mfm_core.metrics.likelihood import BPDMetric, NLLMetric
from mfm_core.metrics.w2 import W2Metric
from mfm_core.models.mlp import MLP
from mfm_core.models.unet import UNet
from mfm_core.paths.cond_ot import CondOTPath
from mfm_core.paths.vp import VPPath
from mfm_core.solvers.adaptive import Dopri5Solver
from mfm_core.solvers.fixed_step import EulerSolver, HeunSolver, MidpointSolver, RK4Solver
from mfm_core.trackers.tensorboard import TensorBoardTracker


@hookimpl
def register_couplers(register: Register) -> None:
    register("independent", IndependentCoupler)
    register("exact", ExactCoupler)
    register("stable", StableCoupler)
    register("heuristic", HeuristicCoupler)
    register("reflow", ReflowCoupler)
    register("semidiscrete", SemiDiscreteCoupler)


@hookimpl
def register_costs(register: Register) -> None:
    register("sqeuclidean", costs.sqeuclidean)
    register("l1", costs.l1)
    register("cosine", costs.cosine)


@hookimpl
def register_paths(register: Register) -> None:
    register("cond-ot", CondOTPath)
    register("vp", VPPath)


@hookimpl
def register_vector_fields(register: Register) -> None:
    register("mlp", MLP)
    register("unet", UNet)


@hookimpl
def register_solvers(register: Register) -> None:
    register("euler", EulerSolver)
    register("midpoint", MidpointSolver)
    register("heun", HeunSolver)
    register("rk4", RK4Solver)
    register("dopri5", Dopri5Solver)


@hookimpl
def register_datasets(register: Register) -> None:
    register("gaussian", Gaussian)
    register("8gaussians", EightGaussians)
    register("moons", Moons)
    register("checkerboard", Checkerboard)
    register("circles", Circles)
    register("spirals", Spirals)
    register("file", FileDataset)
    register("imagenet-npz", ImageNetNpzDataset)
    register("cifar10", Cifar10Dataset)
    register("image-folder", ImageFolderDataset)
    register("digits", DigitsDataset)


@hookimpl
def register_metrics(register: Register) -> None:
    register("w2", W2Metric)
    register("straightness", Straightness)
    register("transport_cost", TransportCost)
    register("grad_variance", GradVariance)
    register("consistency", Consistency)
    register("fid", FIDMetric)
    register("nll", NLLMetric)
    register("bpd", BPDMetric)
    register("digits", DigitsMetric)
    register("coupling_gap", CouplingGap)


@hookimpl
def register_feature_maps(register: Register) -> None:
    register("pixels", PixelFeatures)
    register("inception", InceptionFeatures)


@hookimpl
def register_trackers(register: Register) -> None:
    register("tensorboard", TensorBoardTracker)

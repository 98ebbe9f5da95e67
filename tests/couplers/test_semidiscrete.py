from __future__ import annotations

import logging
from pathlib import Path

import attrs
import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from mfm_core.adapters import adapt
from mfm_core.couplers import SemiDiscreteCoupler, cost_matrix
from mfm_core.couplers.semidiscrete import ALL
from mfm_core.datasets.file import Points
from mfm_core.datasets.toy2d import Checkerboard, Gaussian
from mfm_core.errors import ConfigError, PluginError
from mfm_core.protocols import Coupling, PrepareContext
from mfm_core.runner.run import resume_run, start_run
from mfm_core.runner.rundir.checkpoint import list_checkpoints, load_checkpoint
from mfm_core.runner.rundir.layout import read_log
from mfm_core.testing import write_tiny_config
from tests.couplers.helpers import LabelledPoints


def prepared(target, seed: int = 0, **params) -> SemiDiscreteCoupler:
    coupler = SemiDiscreteCoupler(**params)
    source = Gaussian(shape=target.shape)
    generator = torch.Generator().manual_seed(seed)
    coupler.prepare(PrepareContext(source=source, target=target, generator=generator))
    return coupler


def noise(n: int, seed: int, d: int = 2, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_fitted_map_matches_exact_ot_on_a_replicated_sample() -> None:
    # Six points: the semi-discrete map x0 -> y_j* is the limit of the exact assignment of
    # many noise samples to the points repeated equally often.
    points = torch.tensor(
        [[2.0, 0.0], [-1.0, 1.5], [0.5, -2.0], [3.0, 3.0], [-2.5, -1.0], [0.0, 0.5]]
    )
    coupler = prepared(Points(points), iterations=400, batch=512, step=0.01, check_draws=30000)
    x0 = noise(1200, seed=7)
    coupling = coupler(x0, x0)
    report = coupler.report
    assert report.tv < 2 * report.tv_floor + 0.01
    assert report.max_deviation < 0.1

    replicated = points.repeat(200, 1)
    costs = cost_matrix(x0, replicated).double().numpy()
    rows, cols = linear_sum_assignment(costs)
    exact_cost = costs[rows, cols].mean()
    exact_j = cols % len(points)
    # The exact cost of one sample is biased low (it adapts to the sample's fluctuations):
    # compare it with the map's expected cost, and the map's choices with exact's on the sample.
    many = noise(30_000, seed=8)
    assert coupler(many, many).cost == pytest.approx(exact_cost, rel=0.02)
    assert (coupling.j.numpy() == exact_j).mean() > 0.95
    independent_cost = cost_matrix(x0, points).double().mean().item()
    assert coupling.cost < 0.8 * independent_cost
    frequency = np.bincount(coupling.j.numpy(), minlength=len(points)) / len(x0)
    assert np.abs(frequency * len(points) - 1).max() < 0.15


def test_entropic_fit_converges_too() -> None:
    points = torch.tensor([[2.0, 0.0], [-1.0, 1.5], [0.5, -2.0], [3.0, 3.0]])
    coupler = prepared(
        Points(points), iterations=200, batch=512, step=0.01, eps=0.01, check_draws=20000
    )
    coupler(noise(8, 1), noise(8, 1))
    assert coupler.report.tv < 0.03


def test_blocks_give_the_pairs_of_one_block() -> None:
    points = Checkerboard().sample(300, torch.Generator().manual_seed(0)).double()
    one = prepared(Points(points), iterations=50, batch=256, block=10_000, check_draws=256)
    blocked = prepared(Points(points), iterations=50, batch=256, block=37, check_draws=256)
    x0 = noise(500, seed=3, dtype=torch.float64)
    a, b = one(x0, x0), blocked(x0, x0)
    assert torch.equal(a.j, b.j)
    assert a.cost == pytest.approx(b.cost, rel=1e-12)
    assert one.report.tv == pytest.approx(blocked.report.tv, abs=1e-9)


def test_state_dict_round_trip_gives_bit_identical_pairs() -> None:
    points = Checkerboard().sample(200, torch.Generator().manual_seed(1))
    fitted = prepared(Points(points), iterations=80, batch=256, check_draws=2048)
    x0 = noise(64, seed=4)
    first = fitted(x0, x0)
    state = fitted.state_dict()
    fresh = prepared(Points(points), seed=99, iterations=80, batch=256, check_draws=2048)
    fresh.load_state_dict(state)
    again = fresh(x0, x0)
    assert torch.equal(first.j, again.j) and first.cost == again.cost
    assert fresh.report == attrs.evolve(fitted.report, seconds=None)  # a time is no state
    # The fit itself is deterministic from the preparation's generator (every rank's).
    other = prepared(Points(points), iterations=80, batch=256, check_draws=2048)
    assert torch.equal(other(x0, x0).j, first.j)


def test_labels_stay_within_their_class_and_keep_the_loaders_classes() -> None:
    gen = torch.Generator().manual_seed(2)
    labels = torch.arange(3).repeat_interleave(40)
    points = torch.randn(120, 2, generator=gen) + 3.0 * labels[:, None].float()
    coupler = prepared(
        LabelledPoints(points, labels, 3), iterations=100, batch=256, check_draws=2048
    )
    cond = torch.randint(0, 3, (90,), generator=gen)
    x0 = noise(90, seed=5)
    coupling = adapt("coupler", coupler)(x0, x0, cond)
    _, x1, paired = coupling.pairs(x0, x0, cond)
    assert torch.equal(paired, cond)
    assert torch.equal(labels[coupling.j], cond)
    assert torch.equal(x1, points[coupling.j])
    # Unconditional use of the same data: no labels in, none out, every point eligible.
    plain = adapt("coupler", coupler)(x0, x0)
    assert plain.samples[2] is None and plain.pairs(x0, x0)[2] is None


def test_a_data_set_that_only_draws_samples_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="finite data set"):
        prepared(Checkerboard())


def test_the_adapter_gives_stateless_couplers_defaults_and_rejects_half_stateful_ones() -> None:
    def pairs(x0, x1):
        return torch.arange(len(x0)), torch.arange(len(x0))

    stateless = adapt("coupler", pairs)
    assert stateless.state_dict() == {}
    stateless.load_state_dict({})
    with pytest.raises(PluginError, match="stateless"):
        stateless.load_state_dict({"potentials": 1})

    class Half:
        def __call__(self, x0, x1):
            return pairs(x0, x1)

        def state_dict(self):
            return {}

    with pytest.raises(PluginError, match="not load_state_dict, prepare"):
        adapt("coupler", Half())

    class AllPoints:  # brings the whole set: x0 and x1 of different lengths
        def __call__(self, x0, x1):
            data = torch.zeros(5, *x0.shape[1:])
            return Coupling(
                i=torch.arange(len(x0)),
                j=torch.zeros(len(x0), dtype=torch.long),
                samples=(x0, data, None),
            )

    x0 = noise(3, 0)
    assert len(adapt("coupler", AllPoints())(x0, x0).pairs(x0, x0)[1]) == 3


def test_a_resumed_run_logs_the_losses_of_an_uninterrupted_one(tmp_path: Path, caplog) -> None:
    points = tmp_path / "points.npy"
    np.save(points, Checkerboard().sample(300, torch.Generator().manual_seed(0)).numpy())
    overrides = [
        f'data.target={{name="file",path="{points}"}}',
        'coupler={name="semidiscrete",iterations=60,batch=256,check_draws=1024}',
        "train.steps=30",
        "train.keep_checkpoints=5",
        "eval.trajectories=0",
        'eval.solvers=[{name="euler",steps=1}]',
    ]
    with caplog.at_level(logging.INFO, logger="mfm_core.couplers.semidiscrete"):
        config = write_tiny_config(tmp_path)
        run_dir = start_run(config, overrides, tmp_path / "runs", progress=False)
    assert [r for r in caplog.records if "semidiscrete potentials" in r.getMessage()]
    before = [(r["step"], r["loss"]) for r in read_log(run_dir)]
    assert len(before) == 30
    saved = load_checkpoint(list_checkpoints(run_dir / "checkpoints")[0][1])
    assert saved["coupler"]["potentials"][ALL].shape == (300,)
    for step, path in list_checkpoints(run_dir / "checkpoints"):
        if step > 10:
            path.unlink()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mfm_core.couplers.semidiscrete"):
        resume_run(run_dir, [], progress=False)
    assert [(r["step"], r["loss"]) for r in read_log(run_dir)] == before
    # The potentials came from the checkpoint: the resumed run did not fit them again.
    assert not [r for r in caplog.records if "semidiscrete potentials" in r.getMessage()]

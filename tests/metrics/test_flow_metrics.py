"""Straightness, transport cost, gradient variance and consistency against closed forms."""

import gc
import math

import pytest
import torch

from mfm_core.couplers import ExactCoupler, IndependentCoupler
from mfm_core.datasets import Gaussian
from mfm_core.metrics import Consistency, GradVariance, Straightness, TransportCost
from mfm_core.metrics.context import context_for_field
from mfm_core.paths import CondOTPath
from mfm_core.registry import create
from mfm_core.runner.training.objective import regression_loss
from mfm_core.solvers import Dopri5Solver, EulerSolver, MidpointSolver, RK4Solver


def _noise(n: int = 500, d: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def _mean_sq(x: torch.Tensor) -> float:
    return float(x.double().pow(2).sum(1).mean())


class Shifted:
    """N(m, I): a target whose W2^2 from N(0, I) is |m|^2."""

    def __init__(self, m: torch.Tensor) -> None:
        self.m = m
        self.shape = tuple(m.shape)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(n, *self.shape, generator=generator) + self.m


SOLVERS = [EulerSolver(steps=1), MidpointSolver(steps=3), RK4Solver(steps=4), Dopri5Solver()]


@pytest.mark.parametrize("solver", SOLVERS, ids=lambda s: s.describe()["solver"])
def test_straightness_of_a_constant_field_is_zero(solver) -> None:
    m = torch.tensor([1.5, -2.0])
    ctx = context_for_field(lambda x, t: m.expand_as(x), solver, _noise())
    assert Straightness()(ctx) == pytest.approx(0.0, abs=1e-10)


def test_straightness_of_a_linear_field_matches_the_integral() -> None:
    # v = c x: x_t = e^{ct} x0, chord (e^c - 1) x0, so the metric is
    # E|x0|^2 * int_0^1 (c e^{ct} - K)^2 dt = E|x0|^2 (c (e^{2c} - 1) / 2 - K^2), K = e^c - 1.
    c, noise = 1.0, _noise()
    k = math.exp(c) - 1
    expected = _mean_sq(noise) * (c * (math.exp(2 * c) - 1) / 2 - k**2)
    solver = Dopri5Solver(atol=1e-8, rtol=1e-8, trajectory_points=129)
    ctx = context_for_field(lambda x, t: c * x, solver, noise)
    assert Straightness()(ctx) == pytest.approx(expected, rel=1e-3)


def test_straightness_follows_the_rows_solver() -> None:
    # One Euler step: the trajectory is x0 -> (1 + c) x0; the error is 0 at t = 0 and
    # |c (1 + c) x0 - c x0|^2 = c^4 |x0|^2 at t = 1; the trapezoid halves it.
    c, noise = 0.7, _noise()
    ctx = context_for_field(lambda x, t: c * x, EulerSolver(steps=1), noise)
    assert Straightness()(ctx) == pytest.approx(c**4 * _mean_sq(noise) / 2, rel=1e-5)


def test_straightness_uses_at_most_num_samples() -> None:
    noise = _noise(400)
    noise[200:] *= 100.0  # samples past the first 200 would change the value
    ctx = context_for_field(lambda x, t: 0.5 * x, EulerSolver(steps=1), noise)
    expected = context_for_field(lambda x, t: 0.5 * x, EulerSolver(steps=1), noise[:200])
    assert Straightness(num_samples=200)(ctx) == pytest.approx(Straightness()(expected))


def test_transport_cost_of_the_identity_map_is_zero() -> None:
    source = Gaussian(shape=(2,))
    ctx = context_for_field(
        lambda x, t: torch.zeros_like(x),
        EulerSolver(steps=2),
        _noise(),
        source=source,
        target=source,
    )
    result = TransportCost(ot_samples=300, repeats=1)(ctx)
    assert result["w2_squared_se"] == 0.0
    assert result["cost"] == 0.0
    assert result["ratio"] == 0.0
    assert result["w2_squared"] > 0  # two finite samples of one law are apart


def test_transport_cost_of_the_optimal_map_has_ratio_one() -> None:
    # x -> x + m is the optimal map from N(0, I) to N(m, I); its cost is |m|^2 = W2^2.
    m = torch.tensor([3.0, -1.5])
    ctx = context_for_field(
        lambda x, t: m.expand_as(x),
        EulerSolver(steps=1),
        _noise(1000),
        source=Gaussian(shape=(2,)),
        target=Shifted(m),
    )
    result = TransportCost(ot_samples=1000, repeats=2)(ctx)
    assert result["cost"] == pytest.approx(float(m.pow(2).sum()), rel=1e-6)
    # One empirical W2^2 errs mostly by the difference of the sample means along m, sd
    # 2 |m| sqrt(2 / n) = 0.30 for n = 1000; the mean of two, 0.21; 0.7 is over 3 sd.
    assert result["w2_squared"] == pytest.approx(float(m.pow(2).sum()), abs=0.7)
    assert result["ratio"] == pytest.approx(1.0, abs=0.07)
    assert 0 < result["w2_squared_se"] < 0.7


def test_transport_cost_floor_is_computed_once_per_evaluation() -> None:
    calls = []

    class Counting(Gaussian):
        def sample(self, n, generator):
            calls.append(n)
            return super().sample(n, generator)

    ctx = context_for_field(
        lambda x, t: x, EulerSolver(steps=1), _noise(), source=Counting(), target=Counting()
    )
    metric = TransportCost(ot_samples=100, repeats=3)
    first, second = metric(ctx), metric(ctx)
    assert first == second
    assert calls == [100] * 6  # source and target, three draws, once
    assert first["w2_squared_se"] > 0


class Bias(torch.nn.Module):
    """v(x, t) = b: its loss gradient on a batch is 2 (b - mean(u))."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.b = torch.nn.Parameter(torch.full((d,), 0.3))

    def forward(self, x, t, cond=None):
        return self.b.expand_as(x)


def _loss_of(model, coupler, d: int, k: int, s: float):
    path = CondOTPath()

    def loss(generator):
        x0 = torch.randn(k, d, generator=generator)
        x1 = s * torch.randn(k, d, generator=generator)
        x0, x1, _ = coupler(x0, x1).pairs(x0, x1)
        t = torch.rand(k, generator=generator)
        return regression_loss(path, model, x0, x1, t)

    return loss


def test_grad_variance_matches_the_closed_form() -> None:
    # Independent pairs, u = x1 - x0 with Cov(u) = (1 + s^2) I: the gradient 2 (b - mean u)
    # has covariance trace 4 d (1 + s^2) / k. With 400 batches the estimate's relative sd is
    # sqrt(2 / (d (B - 1))) = 3.5 %; the tolerance is 4 sd.
    d, k, s = 4, 64, 2.0
    model = Bias(d)
    ctx = context_for_field(
        lambda x, t: x,
        EulerSolver(steps=1),
        _noise(),
        model=model,
        loss=_loss_of(model, IndependentCoupler(), d, k, s),
        seed=5,
    )
    metric = GradVariance(batches=400)
    assert not metric.per_solver
    assert metric(ctx) == pytest.approx(4 * d * (1 + s**2) / k, rel=0.14)
    assert model.b.grad is None  # the metric leaves no gradient behind


def test_grad_variance_of_three_known_gradients_is_the_unbiased_variance() -> None:
    # Loss b of three is <p, g_b>, so its gradient is g_b: (1, 0), (3, 2), (5, -2). Per
    # coordinate the unbiased variance is (4 + 0 + 4) / 2 = 4 and (0 + 4 + 4) / 2 = 4: trace 8.
    # Dividing by the number of batches instead would give 16 / 3.
    gradients = iter(torch.tensor([[1.0, 0.0], [3.0, 2.0], [5.0, -2.0]]))
    p = torch.nn.Parameter(torch.zeros(2))
    model = torch.nn.Module()
    model.p = p
    ctx = context_for_field(
        lambda x, t: x,
        EulerSolver(steps=1),
        _noise(4),
        model=model,
        loss=lambda generator: (p * next(gradients)).sum(),
    )
    assert GradVariance(batches=3)(ctx) == pytest.approx(8.0, rel=1e-12)


def test_grad_variance_is_reproducible_and_lower_with_exact_pairs() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 32), torch.nn.Tanh(), torch.nn.Linear(32, 2))

    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = model

        def forward(self, x, t, cond=None):
            return self.net(x)

    wrapped = Wrapped()
    values = {}
    for name, coupler in (("independent", IndependentCoupler()), ("exact", ExactCoupler())):
        ctx = context_for_field(
            lambda x, t: x,
            EulerSolver(steps=1),
            _noise(),
            model=wrapped,
            loss=_loss_of(wrapped, coupler, 2, 128, 3.0),
            seed=1,
        )
        values[name] = GradVariance(batches=24)(ctx)
        assert GradVariance(batches=24)(ctx) == values[name]
    assert values["exact"] < 0.75 * values["independent"]


def test_grad_variance_of_a_bias_is_the_same_for_every_permutation() -> None:
    # A permutation does not change the batch means, so mean(u) and the gradient of a
    # bias-only field are the same for independent and exact pairs, batch by batch.
    model = Bias(3)
    values = [
        GradVariance(batches=8)(
            context_for_field(
                lambda x, t: x,
                EulerSolver(steps=1),
                _noise(),
                model=model,
                loss=_loss_of(model, coupler, 3, 32, 2.0),
                seed=2,
            )
        )
        for coupler in (IndependentCoupler(), ExactCoupler())
    ]
    assert values[0] == pytest.approx(values[1], rel=1e-6)


def test_grad_variance_streamed_equals_the_two_pass_float64_value() -> None:
    # The streamed float32 Welford update against the textbook two-pass variance of every
    # batch's whole gradient in float64, on the same batches; one parameter is unused.
    torch.manual_seed(3)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(
                torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2)
            )
            self.unused = torch.nn.Parameter(torch.ones(3))

        def forward(self, x, t, cond=None):
            return self.net(x)

    model = Net()
    loss = _loss_of(model, ExactCoupler(), 2, 64, 3.0)
    ctx = context_for_field(
        lambda x, t: x, EulerSolver(steps=1), _noise(), model=model, loss=loss, seed=4
    )
    batches = 12
    generator = torch.Generator().manual_seed(4 + 3)
    params = [p for p in model.parameters() if p.requires_grad]
    rows = []
    for _ in range(batches):
        grads = torch.autograd.grad(loss(generator), params, allow_unused=True)
        rows.append(
            torch.cat(
                [
                    (torch.zeros_like(p) if g is None else g).double().reshape(-1)
                    for g, p in zip(grads, params, strict=True)
                ]
            )
        )
    expected = float(torch.stack(rows).var(dim=0, unbiased=True).sum())
    assert expected > 0
    assert GradVariance(batches=batches)(ctx) == pytest.approx(expected, rel=1e-6)


def test_grad_variance_needs_two_batches() -> None:
    with pytest.raises(Exception, match="batches: must be at least 2"):
        create("metric", "grad_variance", batches=1)


@pytest.mark.parametrize("steps", [1, 2, 4, 8])
def test_consistency_of_euler_on_a_linear_field(steps: int) -> None:
    # Euler on v = c x gives (1 + c/m)^m x0; the exact flow gives e^c x0.
    c, noise = 0.8, _noise(300, d=3)
    ctx = context_for_field(lambda x, t: c * x, EulerSolver(steps=steps), noise)
    metric = Consistency(reference_atol=1e-9, reference_rtol=1e-9)
    gap = (1 + c / steps) ** steps - math.exp(c)
    assert metric(ctx) == pytest.approx(gap**2 * _mean_sq(noise) / 3, rel=1e-4)


def test_consistency_of_the_reference_solver_itself_is_zero() -> None:
    ctx = context_for_field(lambda x, t: torch.sin(x), Dopri5Solver(), _noise())
    assert Consistency()(ctx) == pytest.approx(0.0, abs=1e-12)


def test_consistency_in_a_feature_space() -> None:
    class Doubled:
        dim = 4

        def __call__(self, x):
            return torch.cat([x, x], 1) * 3.0

    c, noise = 0.8, _noise(300)
    ctx = context_for_field(lambda x, t: c * x, EulerSolver(steps=2), noise)
    pixels = Consistency(reference_atol=1e-9, reference_rtol=1e-9)(ctx)
    doubled = Consistency(features=Doubled(), reference_atol=1e-9, reference_rtol=1e-9)(ctx)
    # Twice the dimensions, each scaled by 3: the per-dimension mean grows by 9.
    assert doubled == pytest.approx(9 * pixels, rel=1e-6)


class Scaled:
    """A feature map ``x -> scale * x`` repeated ``copies`` times: width ``copies * d``."""

    def __init__(self, scale: float, copies: int) -> None:
        self.scale, self.copies = scale, copies

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x] * self.copies, 1) * self.scale


def test_consistency_caches_by_metric_not_by_address(monkeypatch) -> None:
    # Two metrics with different feature maps, evaluated in sequence on one evaluation, the
    # first freed: CPython may give the second the first's address, so a cache keyed on
    # id(metric) hands it the other's features. The module's ``id`` is made to return one
    # address for every object, the allocator's worst case, so such a cache fails every time.
    import mfm_core.metrics.flow as flow

    monkeypatch.setattr(flow, "id", lambda obj: 1, raising=False)
    c, noise = 0.8, _noise(50)
    ctx = context_for_field(lambda x, t: c * x, EulerSolver(steps=2), noise)
    per_dim = ((1 + c / 2) ** 2 - math.exp(c)) ** 2 * _mean_sq(noise) / 2
    first = Consistency(features=Scaled(1.0, 2), reference_atol=1e-9, reference_rtol=1e-9)
    assert first(ctx) == pytest.approx(per_dim, rel=1e-4)
    del first
    gc.collect()
    second = Consistency(features=Scaled(2.0, 1), reference_atol=1e-9, reference_rtol=1e-9)
    assert second(ctx) == pytest.approx(4 * per_dim, rel=1e-4)


@pytest.mark.parametrize("name", ["straightness", "transport_cost", "grad_variance", "consistency"])
def test_metrics_are_registered(name: str) -> None:
    assert callable(create("metric", name))


def test_transport_cost_ratio_is_better_closer_to_one_and_below_one_is_flagged(caplog) -> None:
    from mfm_core.runner.evaluation.report import column_header

    header = column_header("transport_cost.ratio", {"transport_cost.ratio": "closer to 1"})
    assert header == "transport_cost.ratio (closer to 1 better)"
    m = torch.tensor([3.0, -1.5])
    for field, expected in (
        (lambda x, t: torch.zeros_like(x), 0.0),
        (lambda x, t: m.expand_as(x), 1.0),
    ):
        caplog.clear()
        ctx = context_for_field(
            field,
            EulerSolver(steps=1),
            _noise(1000),
            source=Gaussian(shape=(2,)),
            target=Shifted(m),
        )
        ratio = TransportCost(ot_samples=1000, repeats=2)(ctx)["ratio"]
        assert ratio == pytest.approx(expected, abs=0.07)
        warnings = [r.getMessage() for r in caplog.records]
        if expected == 1.0:  # optimal transport itself: nothing to flag
            assert warnings == []
            continue
        (warning,) = warnings
        assert warning.startswith("warning: transport_cost.ratio 0 < 1 with solver=euler steps=1:")
        assert "does not reach the data" in warning

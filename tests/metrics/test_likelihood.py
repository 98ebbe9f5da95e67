import math

import attrs
import pytest
import torch

from mfm_core import registry
from mfm_core.datasets import Checkerboard, Gaussian
from mfm_core.metrics import BPDMetric, NLLMetric
from mfm_core.protocols import EvalContext, SolveResult
from mfm_core.solvers import Dopri5Solver, EulerSolver, RK4Solver

TIGHT = Dopri5Solver(atol=1e-9, rtol=1e-9)


def _context(reference, field, solver, source, **extra) -> EvalContext:
    return EvalContext(
        generated=reference,
        reference=reference,
        noise=reference,
        field=field,
        solve=SolveResult(x1=reference, nfe=1),
        solver=solver,
        source=source,
        **extra,
    )


def _data(*shape: int, seed: int = 100, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    # Seeds apart from the metric's (ctx.seed is 0 to 39 here): torch.rand and torch.randn
    # from one seed are correlated, which would correlate the data with the metric's noise.
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _matrix(seed: int = 101) -> torch.Tensor:
    return 0.5 * _data(3, 3, seed=seed)


def _zero(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(x)


def _gaussian_nll(x: torch.Tensor, std: float = 1.0) -> float:
    """Mean NLL of N(0, std^2 I) on (n, ...), by the textbook formula."""
    dim = x[0].numel()
    sq = x.flatten(1).square().sum(1).mean().item()
    return 0.5 * dim * math.log(2 * math.pi * std**2) + 0.5 * sq / std**2


@pytest.mark.parametrize("solver", [EulerSolver(steps=1), RK4Solver(steps=2), Dopri5Solver()])
@pytest.mark.parametrize("estimator", ["exact", "hutchinson"])
def test_zero_field_gives_the_source_density(solver, estimator: str) -> None:
    x = _data(50, 3)
    ctx = _context(x, _zero, solver, Gaussian(shape=(3,)))
    expected = _gaussian_nll(x)
    assert NLLMetric(estimator=estimator)(ctx) == pytest.approx(expected, rel=1e-6)
    assert BPDMetric(estimator=estimator)(ctx) == pytest.approx(
        expected / (3 * math.log(2)), rel=1e-6
    )


def test_linear_field_matches_the_closed_form_with_dopri5() -> None:
    # v = A x: x1 = exp(A) x0, so log p1(x1) = log p0(exp(-A) x1) - tr(A).
    a = _matrix()
    x = _data(100, 3)
    ctx = _context(x, lambda y, t: y @ a.T, TIGHT, Gaussian(shape=(3,)))
    x0 = x @ torch.linalg.matrix_exp(-a).T
    expected = _gaussian_nll(x0) + a.trace().item()
    assert NLLMetric(estimator="exact")(ctx) == pytest.approx(expected, abs=1e-4)


def test_time_dependent_field_is_integrated_backwards_in_time() -> None:
    # v = x + t m: x1 = e x0 + (e - 2) m and div v = D, so log p1(x1) = log p0(x0) - D.
    # Integrating b(1 - t) instead of b(t) would give x1 = e x0 + m: a different answer.
    m = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    x = _data(100, 3)
    ctx = _context(x, lambda y, t: y + t[:, None] * m, TIGHT, Gaussian(shape=(3,)))
    x0 = (x - (math.e - 2) * m) / math.e
    assert NLLMetric()(ctx) == pytest.approx(_gaussian_nll(x0) + 3, abs=1e-4)


def test_the_metric_follows_the_rows_solver() -> None:
    # One Euler step backwards from x1: x0 = (I - A) x1 and the integral is tr(A) exactly.
    a = _matrix()
    x = _data(100, 3)
    ctx = _context(x, lambda y, t: y @ a.T, EulerSolver(steps=1), Gaussian(shape=(3,)))
    expected = _gaussian_nll(x @ (torch.eye(3, dtype=a.dtype) - a).T) + a.trace().item()
    assert NLLMetric()(ctx) == pytest.approx(expected, rel=1e-9)


def _hutchinson_sd(a: torch.Tensor, probe_noise: str) -> float:
    """The standard deviation of eps^T A eps for one probe: off-diagonal terms only for
    Rademacher probes, sum_{i<j} (A_ij + A_ji)^2; 0.5 |A + A^T|_F^2 for Gaussian ones."""
    sym = a + a.T
    if probe_noise == "gaussian":
        return math.sqrt(0.5 * sym.square().sum().item())
    return math.sqrt(sym.triu(1).square().sum().item())


@pytest.mark.parametrize("probe_noise", ["rademacher", "gaussian"])
def test_hutchinson_with_many_probes_matches_the_closed_form(probe_noise: str) -> None:
    # With a linear field the estimate of the integral is mean_k eps_k^T A eps_k, exact up to
    # the probe noise: its sd over the mean of n samples with k probes each is
    # sd_1 / sqrt(n k); the test allows 4 of those.
    a = _matrix()
    n, k = 100, 32
    x = _data(n, 3)
    ctx = _context(x, lambda y, t: y @ a.T, TIGHT, Gaussian(shape=(3,)), seed=5)
    metric = NLLMetric(estimator="hutchinson", probes=k, probe_noise=probe_noise)
    expected = _gaussian_nll(x @ torch.linalg.matrix_exp(-a).T) + a.trace().item()
    tolerance = 4 * _hutchinson_sd(a, probe_noise) / math.sqrt(n * k) + 1e-4
    value = metric(ctx)
    assert value == pytest.approx(expected, abs=tolerance)
    assert value != pytest.approx(expected, abs=1e-6)  # really an estimate
    assert metric(ctx) == value  # reproducible from ctx.seed
    assert metric(attrs.evolve(ctx, seed=6)) != value


@pytest.mark.parametrize("probe_noise", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased(probe_noise: str) -> None:
    # The mean over 40 seeds of one-probe estimates on 50 samples has sd sd_1 / sqrt(2000)
    # around the exact estimator's value with the same solver; the test allows 4 of those.
    a = _matrix()
    x = _data(50, 3)
    ctx = _context(x, lambda y, t: y @ a.T, EulerSolver(steps=2), Gaussian(shape=(3,)))
    exact = NLLMetric(estimator="exact")(ctx)
    metric = NLLMetric(estimator="hutchinson", probe_noise=probe_noise)
    values = [metric(attrs.evolve(ctx, seed=seed)) for seed in range(40)]
    assert torch.tensor(values).std() > 0.01
    tolerance = 4 * _hutchinson_sd(a, probe_noise) / math.sqrt(2000)
    assert sum(values) / len(values) == pytest.approx(exact, abs=tolerance)


def test_auto_picks_exact_in_low_dimension_and_hutchinson_above() -> None:
    a = _matrix()
    x = _data(20, 3)
    ctx = _context(x, lambda y, t: y @ a.T, EulerSolver(steps=1), Gaussian(shape=(3,)))
    exact = NLLMetric(estimator="exact")(ctx)
    assert NLLMetric()(ctx) == exact
    assert NLLMetric(exact_max_dim=2)(ctx) == NLLMetric(estimator="hutchinson")(ctx) != exact


@pytest.mark.parametrize("std", [0.5, 2.0])
def test_source_with_another_std(std: float) -> None:
    # v = c x: x1 = e^c x0, log p1(x1) = log N(e^-c x1; 0, std^2 I) - D c.
    c = 0.3
    x = _data(100, 3)
    ctx = _context(x, lambda y, t: c * y, TIGHT, Gaussian(shape=(3,), std=std))
    expected = _gaussian_nll(x * math.exp(-c), std) + 3 * c
    assert NLLMetric()(ctx) == pytest.approx(expected, abs=1e-4)


def _pixels(n: int, seed: int = 100) -> torch.Tensor:
    """(n, 3, 4, 4) 8-bit images scaled to [-1, 1], mostly within one std of 0.5 of zero."""
    g = torch.Generator().manual_seed(seed)
    p = (127.5 + 64 * torch.randn(n, 3, 4, 4, generator=g)).round().clamp(0, 255)
    return p / 127.5 - 1


def test_dequantized_bpd_is_that_of_the_8_bit_images() -> None:
    # Zero field, source N(0, s^2 I): the model's probability of an 8-bit image is the
    # Gaussian mass of its bins [x - 1/255, x + 1/255]^D, known through the normal CDF. The
    # dequantized bpd bounds -log2 P / D from above, tightly here (the Jensen gap is about
    # h^2 / (24 s^2) = 1e-5 nats per value); its Monte Carlo error is below 1e-3 bits.
    s, n, dim = 0.5, 32, 48
    x = _pixels(n)
    ctx = _context(x, _zero, EulerSolver(steps=1), Gaussian(shape=(3, 4, 4), std=s))
    x64, h = x.double(), 1 / 255
    mass = torch.special.ndtr((x64 + h) / s) - torch.special.ndtr((x64 - h) / s)
    discrete_bpd = -mass.log2().flatten(1).sum(1).mean().item() / dim
    bpd = BPDMetric()(ctx)
    assert bpd == pytest.approx(discrete_bpd, abs=2e-3)
    # The same number by the formula: (nll_x + D ln(255 / 2)) / (D ln 2), where nll_x of the
    # dequantized data adds the noise variance h^2 / 3 per value to |x|^2.
    nll_x = _gaussian_nll(x64, s) + 0.5 * dim * (h**2 / 3) / s**2
    assert bpd == pytest.approx((nll_x + dim * math.log(255 / 2)) / (dim * math.log(2)), abs=2e-3)
    assert NLLMetric()(ctx) == pytest.approx(bpd * dim * math.log(2), rel=1e-6)


def test_dequantization_can_be_switched() -> None:
    x = _pixels(16)
    ctx = _context(x, _zero, EulerSolver(steps=1), Gaussian(shape=(3, 4, 4)))
    continuous = _gaussian_nll(x.double())
    assert NLLMetric(dequantize=False)(ctx) == pytest.approx(continuous, rel=1e-5)
    # Forced on for vectors: the noise delta (sd h / sqrt(12) per value, h = 2 / 255) moves
    # 0.5 |x|^2 by about x . delta, sd sqrt(3) h / sqrt(12) = 0.004 per sample, 0.0003 for
    # the mean of 200 samples; the test allows 5 of those.
    points = _data(200, 3)
    vectors = _context(points, _zero, EulerSolver(steps=1), Gaussian(shape=(3,)))
    quantized = NLLMetric(dequantize=True)(vectors)
    assert quantized == pytest.approx(_gaussian_nll(points) + 3 * math.log(255 / 2), abs=1.5e-3)
    assert NLLMetric()(vectors) == pytest.approx(_gaussian_nll(points), rel=1e-9)


def test_conditional_fields_follow_the_reference_labels_batch_by_batch() -> None:
    # v = c[label] x: per sample log p1(x1) = log p0(e^-c x1) - D c.
    c = torch.tensor([0.0, 0.5, -0.3], dtype=torch.float64)
    x = _data(20, 3)
    labels = torch.arange(20) % 3

    def make_field(part):
        return lambda y, t: c[part][:, None] * y

    def no_field(y, t):
        raise AssertionError("ctx.field is not the reference's field")

    ctx = _context(
        x, no_field, TIGHT, Gaussian(shape=(3,)), reference_labels=labels, make_field=make_field
    )
    scale = c[labels][:, None]
    expected = _gaussian_nll(x * (-scale).exp()) + 3 * scale.mean().item()
    assert NLLMetric(batch_size=7)(ctx) == pytest.approx(expected, abs=1e-4)


def test_num_samples_and_batches() -> None:
    a = _matrix()
    x = _data(30, 3)
    ctx = _context(x, lambda y, t: y @ a.T, RK4Solver(steps=2), Gaussian(shape=(3,)))
    first = _context(x[:12], lambda y, t: y @ a.T, RK4Solver(steps=2), Gaussian(shape=(3,)))
    assert NLLMetric(num_samples=12)(ctx) == pytest.approx(NLLMetric()(first), rel=1e-12)
    assert NLLMetric(batch_size=7)(ctx) == pytest.approx(NLLMetric()(ctx), rel=1e-12)


class _TinyField(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(
            torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2)
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x, t[:, None]], dim=1))


def test_a_network_field_leaves_no_gradients_and_hutchinson_agrees() -> None:
    model = _TinyField()
    x = _data(40, 2, dtype=torch.float32)
    ctx = _context(x, model, RK4Solver(steps=4), Gaussian(shape=(2,)))
    with torch.no_grad():  # as in the runner
        exact = NLLMetric()(ctx)
    hutchinson = NLLMetric(estimator="hutchinson", probes=64, probe_noise="gaussian")(ctx)
    assert all(p.grad is None for p in model.parameters())
    assert math.isfinite(exact)
    # Over seeds the 64-probe estimate scatters with sd 0.008 here: 0.05 is about 6 sd.
    assert hutchinson == pytest.approx(exact, abs=0.05)


def test_a_source_without_density_is_refused() -> None:
    x = _data(10, 2)
    ctx = _context(x, _zero, EulerSolver(steps=1), Checkerboard())
    with pytest.raises(ValueError, match="log_prob.*Checkerboard"):
        NLLMetric()(ctx)
    with pytest.raises(ValueError, match="EvalContext.source"):
        BPDMetric()(_context(x, _zero, EulerSolver(steps=1), None))
    with pytest.raises(ValueError, match="EvalContext.solver"):
        BPDMetric()(_context(x, _zero, None, Gaussian()))


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"estimator": "sometimes"}, "estimator"),
        ({"probe_noise": "uniform"}, "probe_noise"),
        ({"probes": 0}, "probes"),
        ({"num_samples": 0}, "num_samples"),
        ({"batch_size": 0}, "batch_size"),
        ({"exact_max_dim": -1}, "exact_max_dim"),
    ],
)
def test_invalid_parameters_name_themselves(params: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        NLLMetric(**params)


def test_registered_as_nll_and_bpd() -> None:
    assert isinstance(registry.create("metric", "nll"), NLLMetric)
    bpd = registry.create("metric", "bpd", estimator="hutchinson", probes=4, dequantize=True)
    assert isinstance(bpd, BPDMetric)
    assert (bpd.estimator, bpd.probes, bpd.dequantize) == ("hutchinson", 4, True)

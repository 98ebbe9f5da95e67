import math

import pytest
import torch

from mfm_core.metrics import W2Metric, w2_distance
from mfm_core.protocols import EvalContext, SolveResult


def test_w2_of_a_sample_with_itself_is_zero() -> None:
    x = torch.randn(200, 3, 2, generator=torch.Generator().manual_seed(0))
    assert w2_distance(x, x[torch.randperm(200)]) == pytest.approx(0.0, abs=1e-6)


def test_w2_is_symmetric() -> None:
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(100, 2, generator=gen), torch.randn(100, 2, generator=gen) + 1.0
    assert w2_distance(a, b) == pytest.approx(w2_distance(b, a), rel=1e-9)


def test_w2_between_shifted_gaussians_is_the_shift() -> None:
    # W2(N(0, I), N(m, I)) = |m|. With n = 2000 the estimate errs by (a) the difference of the
    # two sample means along m, sd sqrt(2 / n) = 0.032, and (b) the positive bias of matching
    # two finite samples, whose W2^2 in 2D decays only like log(n) / n (about 0.03 here), adding
    # roughly 0.03 / (2 |m|) = 0.005 to W2. A tolerance of 0.12 covers (a) at nearly 4 sd.
    gen = torch.Generator().manual_seed(0)
    m = torch.tensor([3.0, -1.5])
    a = torch.randn(2000, 2, generator=gen)
    b = torch.randn(2000, 2, generator=gen) + m
    assert w2_distance(a, b) == pytest.approx(m.norm().item(), abs=0.12)


def test_metric_uses_equal_counts_up_to_max_samples() -> None:
    gen = torch.Generator().manual_seed(0)
    generated, reference = torch.randn(50, 2, generator=gen), torch.randn(80, 2, generator=gen)
    ctx = EvalContext(
        generated=generated,
        reference=reference,
        noise=generated,
        field=lambda x, t: x,
        solve=SolveResult(x1=generated, nfe=1),
    )
    assert W2Metric()(ctx) == pytest.approx(w2_distance(generated, reference[:50]))
    assert W2Metric(max_samples=10)(ctx) == pytest.approx(
        w2_distance(generated[:10], reference[:10])
    )
    assert math.isfinite(W2Metric()(ctx))


def test_mismatched_samples_are_rejected() -> None:
    with pytest.raises(ValueError, match="same shape"):
        w2_distance(torch.zeros(3, 2), torch.zeros(4, 2))


def test_invalid_max_samples_is_rejected() -> None:
    with pytest.raises(ValueError, match="max_samples"):
        W2Metric(max_samples=0)

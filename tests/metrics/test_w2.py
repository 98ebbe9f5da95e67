import itertools
import math

import pytest
import torch

from mfm_core.metrics import W2Metric, w2_distance
from mfm_core.protocols import EvalContext, SolveResult


def test_w2_of_a_sample_with_itself_is_zero() -> None:
    x = torch.randn(200, 3, 2, generator=torch.Generator().manual_seed(0))
    assert w2_distance(x, x[torch.randperm(200)]) == pytest.approx(0.0, abs=1e-6)


def _w2_by_enumeration(a: torch.Tensor, b: torch.Tensor) -> float:
    """sqrt(min over all permutations of the mean squared distance), by brute force."""
    return math.sqrt(
        min(
            sum(float((a[i].double() - b[j].double()).pow(2).sum()) for i, j in enumerate(perm))
            / len(a)
            for perm in itertools.permutations(range(len(a)))
        )
    )


def test_w2_is_the_root_of_the_mean_squared_distance_not_the_mean_distance() -> None:
    # Two points on a line matched to 1 and 3: distances 1 and 3. The root mean square is
    # sqrt((1 + 9) / 2) = sqrt(5); the mean distance would be 2, the sum of squares 10.
    a = torch.tensor([[0.0], [0.0]])
    b = torch.tensor([[1.0], [3.0]])
    assert w2_distance(a, b) == pytest.approx(math.sqrt(5.0), rel=1e-12)


def test_w2_uses_the_optimal_matching_not_the_given_order() -> None:
    # Listed crosswise: the given order costs sqrt((11^2 + 9^2) / 2); the optimal matching
    # pairs (0, 0) with (1, 0) and (10, 0) with (10, 2): squared distances 1 and 4, W2 =
    # sqrt(2.5), in either argument order.
    a = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    b = torch.tensor([[10.0, 2.0], [1.0, 0.0]])
    assert w2_distance(a, b) == pytest.approx(math.sqrt(2.5), rel=1e-12)
    assert w2_distance(b, a) == pytest.approx(math.sqrt(2.5), rel=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_w2_matches_enumeration_of_every_permutation(seed: int) -> None:
    # Six points in 3-D (images of shape (3, 1) are flattened): 720 permutations.
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(6, 3, 1, generator=gen)
    b = torch.randn(6, 3, 1, generator=gen) * 2.0 + 0.5
    assert w2_distance(a, b) == pytest.approx(_w2_by_enumeration(a, b), rel=1e-9)


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
    # 3 generated points against 5 reference points: the first 3 of each are compared
    # (squared distances 1, 4, 9: W2 = sqrt(14 / 3)); with max_samples = 1, only the first
    # pair (W2 = 1). The last two reference points would lower W2 to 0 if they were used.
    generated = torch.tensor([[0.0, 0.0], [10.0, 0.0], [20.0, 0.0]])
    reference = torch.tensor([[1.0, 0.0], [10.0, 2.0], [20.0, 3.0], [10.0, 0.0], [20.0, 0.0]])
    ctx = EvalContext(
        generated=generated,
        reference=reference,
        noise=generated,
        field=lambda x, t: x,
        solve=SolveResult(x1=generated, nfe=1),
    )
    assert W2Metric()(ctx) == pytest.approx(math.sqrt(14 / 3), rel=1e-12)
    assert W2Metric(max_samples=1)(ctx) == pytest.approx(1.0, rel=1e-12)


def test_mismatched_samples_are_rejected() -> None:
    with pytest.raises(ValueError, match="same shape"):
        w2_distance(torch.zeros(3, 2), torch.zeros(4, 2))


def test_invalid_max_samples_is_rejected() -> None:
    with pytest.raises(ValueError, match="max_samples"):
        W2Metric(max_samples=0)

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from mfm_core import create
from mfm_core.couplers import ExactCoupler, cost_matrix

COUPLERS = ["independent", "exact", "stable", "heuristic"]


@pytest.mark.parametrize("name", COUPLERS)
@pytest.mark.parametrize("seed", range(3))
def test_no_pair_crosses_classes(name: str, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    x0, x1 = torch.randn(64, 2, generator=gen), torch.randn(64, 2, generator=gen)
    cond = torch.randint(-1, 5, (64,), generator=gen)
    coupling = create("coupler", name)(x0, x1, cond)
    assert (cond[coupling.i] == cond[coupling.j]).all()
    assert sorted(coupling.i.tolist()) == list(range(64))
    assert sorted(coupling.j.tolist()) == list(range(64))
    _, _, paired = coupling.pairs(x0, x1, cond)
    assert torch.equal(paired, cond[coupling.j])


def test_exact_within_classes_is_optimal_among_class_preserving_permutations() -> None:
    gen = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(40, 3, generator=gen), torch.randn(40, 3, generator=gen)
    cond = torch.randint(0, 4, (40,), generator=gen)
    coupling = ExactCoupler()(x0, x1, cond)
    costs = cost_matrix(x0, x1).double().numpy()
    # The optimum over class-preserving permutations: forbid cross-class pairs by a huge cost.
    labels = cond.numpy()
    penalised = costs + 1e6 * (labels[:, None] != labels[None, :])
    rows, cols = linear_sum_assignment(penalised)
    assert costs[coupling.i.numpy(), coupling.j.numpy()].sum() == pytest.approx(
        costs[rows, cols].sum()
    )


def test_within_class_off_pairs_across_classes() -> None:
    gen = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(64, 2, generator=gen), torch.randn(64, 2, generator=gen)
    cond = torch.randint(0, 2, (64,), generator=gen)
    coupling = ExactCoupler(within_class=False)(x0, x1, cond)
    assert (cond[coupling.i] != cond[coupling.j]).any()
    assert torch.equal(coupling.j, ExactCoupler()(x0, x1).j)


def test_labels_of_the_wrong_length_are_rejected() -> None:
    with pytest.raises(ValueError, match="one label per sample"):
        ExactCoupler()(torch.randn(4, 2), torch.randn(4, 2), torch.zeros(3, dtype=torch.long))


def test_a_class_seen_once_keeps_its_pair() -> None:
    x0, x1 = torch.randn(3, 2), torch.randn(3, 2)
    coupling = ExactCoupler()(x0, x1, torch.tensor([7, 1, 2]))
    assert np.array_equal(coupling.i.numpy(), coupling.j.numpy())

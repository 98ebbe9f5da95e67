import itertools

import pytest
import torch

from mfm_core.couplers import StableCoupler, cost_matrix
from mfm_core.couplers.stable import gale_shapley
from mfm_core.testing import check_coupler


def _reference_gale_shapley(costs: list[list[float]]) -> list[int]:
    """Textbook sequential Gale-Shapley, noise proposing; ties broken by index."""
    k = len(costs)
    prefs = [sorted(range(k), key=lambda j, i=i: (costs[i][j], j)) for i in range(k)]
    next_choice, holder, free = [0] * k, [-1] * k, list(range(k))
    while free:
        i = free.pop()
        j = prefs[i][next_choice[i]]
        next_choice[i] += 1
        current = holder[j]
        if current < 0:
            holder[j] = i
        elif (costs[i][j], i) < (costs[current][j], current):
            holder[j] = i
            free.append(current)
        else:
            free.append(i)
    partner = [0] * k
    for j, i in enumerate(holder):
        partner[i] = j
    return partner


def _blocking_pairs(costs: torch.Tensor, partner: torch.Tensor) -> list[tuple[int, int]]:
    k = len(costs)
    owner = {int(j): i for i, j in enumerate(partner)}
    return [
        (i, j)
        for i, j in itertools.product(range(k), range(k))
        if costs[i, j] < costs[i, partner[i]] and costs[i, j] < costs[owner[j], j]
    ]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("k", [2, 5, 16, 60])
def test_stable_matching_has_no_blocking_pair(seed: int, k: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    costs = cost_matrix(torch.randn(k, 3, generator=gen), torch.randn(k, 3, generator=gen))
    partner = gale_shapley(costs)
    assert sorted(partner.tolist()) == list(range(k))
    assert _blocking_pairs(costs, partner) == []


@pytest.mark.parametrize("seed", range(6))
def test_it_finds_the_noise_optimal_stable_matching_of_the_textbook_algorithm(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    costs = torch.rand(40, 40, generator=gen)
    costs[3, :] = costs[5, :]  # ties in rankings must not matter either
    assert gale_shapley(costs).tolist() == _reference_gale_shapley(costs.tolist())


def test_early_stop_pairs_the_rest_at_random_and_zero_rounds_is_random() -> None:
    gen = torch.Generator().manual_seed(0)
    costs = cost_matrix(torch.randn(50, 2, generator=gen), torch.randn(50, 2, generator=gen))
    full = gale_shapley(costs)
    torch.manual_seed(1)
    partial = gale_shapley(costs, max_rounds=3)
    torch.manual_seed(1)
    assert torch.equal(partial, gale_shapley(costs, max_rounds=3))
    assert sorted(partial.tolist()) == list(range(50))
    assert not torch.equal(partial, full)
    torch.manual_seed(2)
    random = gale_shapley(costs, max_rounds=0)
    assert sorted(random.tolist()) == list(range(50))
    assert not torch.equal(random, full)
    assert torch.equal(gale_shapley(costs, max_rounds=10_000), full)


def test_stable_lowers_the_cost_of_the_random_pairing() -> None:
    gen = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(256, 2, generator=gen), torch.randn(256, 2, generator=gen) * 2
    coupling = StableCoupler()(x0, x1)
    assert coupling.cost < 0.5 * cost_matrix(x0, x1).diagonal().mean().item()


def test_stable_conforms() -> None:
    check_coupler(StableCoupler())
    check_coupler(StableCoupler(max_rounds=2, cost="l1"))


def test_negative_rounds_are_rejected() -> None:
    with pytest.raises(ValueError, match="max_rounds"):
        StableCoupler(max_rounds=-1)

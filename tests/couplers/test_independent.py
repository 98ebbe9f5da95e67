import torch

from mfm_core.couplers import IndependentCoupler


def test_independent_keeps_the_drawn_pairing() -> None:
    x0, x1 = torch.randn(5, 2, 3), torch.randn(5, 2, 3)
    coupling = IndependentCoupler()(x0, x1, cond=torch.arange(5))
    assert coupling.i.tolist() == coupling.j.tolist() == list(range(5))
    assert coupling.i.dtype == torch.long
    assert coupling.is_permutation
    assert coupling.cost is None

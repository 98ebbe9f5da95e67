import pytest
import torch

from mfm_core.couplers import cost_matrix


def _loop_cost(a: torch.Tensor, b: torch.Tensor, cost: str) -> float:
    a, b = a.flatten(), b.flatten()
    if cost == "sqeuclidean":
        return float(((a - b) ** 2).sum())
    if cost == "l1":
        return float((a - b).abs().sum())
    return float(1 - (a @ b) / (a.norm() * b.norm()))


@pytest.mark.parametrize("cost", ["sqeuclidean", "l1", "cosine"])
def test_cost_matrix_matches_a_direct_loop(cost: str) -> None:
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(5, 3, 2, generator=gen, dtype=torch.float64) + 10.0
    x1 = torch.randn(7, 3, 2, generator=gen, dtype=torch.float64) + 10.0
    costs = cost_matrix(x0, x1, cost)
    expected = torch.tensor([[_loop_cost(a, b, cost) for b in x1] for a in x0], dtype=costs.dtype)
    assert costs.shape == (5, 7)
    torch.testing.assert_close(costs, expected, rtol=1e-9, atol=1e-9)


def test_sqeuclidean_is_accurate_far_from_the_origin_in_float32() -> None:
    x0 = torch.tensor([[1000.0, 1000.0], [1000.0, 1001.0]])
    costs = cost_matrix(x0, x0, "sqeuclidean")
    torch.testing.assert_close(costs, torch.tensor([[0.0, 1.0], [1.0, 0.0]]))


def test_cosine_cost_of_a_zero_vector_is_finite() -> None:
    costs = cost_matrix(torch.zeros(1, 3), torch.ones(2, 3), "cosine")
    torch.testing.assert_close(costs, torch.ones(1, 2))


def test_half_precision_inputs_give_float32_costs() -> None:
    costs = cost_matrix(
        torch.ones(2, 3, dtype=torch.float16), torch.zeros(2, 3, dtype=torch.float16)
    )
    assert costs.dtype == torch.float32


def test_unknown_cost_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="sqeuclidean"):
        cost_matrix(torch.zeros(2, 2), torch.zeros(2, 2), "l2")


def test_different_sample_shapes_are_rejected() -> None:
    with pytest.raises(ValueError, match="per-sample shape"):
        cost_matrix(torch.zeros(2, 2), torch.zeros(2, 3))


def test_a_cost_registered_by_a_plugin_is_usable_by_name(monkeypatch) -> None:
    import mfm_core.default_plugins
    from mfm_core import hookimpl, registry
    from mfm_core.couplers import ExactCoupler

    class Chebyshev:
        @hookimpl
        def register_costs(self, register):
            register("chebyshev", lambda a, b: torch.cdist(a, b, p=float("inf")))

    plugins = registry.Registry(load_entry_points=False)
    plugins.add_plugin(mfm_core.default_plugins, "builtin")
    plugins.add_plugin(Chebyshev(), "chebyshev")
    monkeypatch.setattr(registry, "_default", plugins)
    x0 = torch.tensor([[0.0, 0.0], [3.0, 1.0]])
    x1 = torch.tensor([[3.0, 0.0], [0.0, 1.0]])
    expected = torch.tensor([[3.0, 1.0], [1.0, 3.0]])
    torch.testing.assert_close(cost_matrix(x0, x1, "chebyshev"), expected)
    assert ExactCoupler(cost="chebyshev")(x0, x1).j.tolist() == [1, 0]
    with pytest.raises(ValueError, match="'chebyshev', 'cosine', 'l1', 'sqeuclidean'"):
        ExactCoupler(cost="nope")

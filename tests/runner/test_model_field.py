"""The model as a field: classifier-free guidance against a hand-computed combination."""

import pytest
import torch

from mfm_core.runner.training.objective import NULL_LABEL, model_field


class TwoFields(torch.nn.Module):
    """A conditional "model" with known outputs: ``v_null = -x`` for the null label and
    ``v_c = (c + 1) x + t`` for class ``c``."""

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cond = (labels[:, None] + 1.0) * x + t[:, None]
        return torch.where((labels == NULL_LABEL)[:, None], -x, cond)


@pytest.mark.parametrize("w", [0.0, 1.0, 2.5, -0.5])
def test_guidance_is_v_null_plus_w_times_the_conditional_difference(w: float) -> None:
    x = torch.tensor([[1.0, -2.0], [0.5, 3.0], [-1.0, 0.0]])
    t = torch.tensor([0.25, 0.5, 0.75])
    labels = torch.tensor([0, 2, 1])
    v_null = -x
    v_cond = torch.tensor([[1.25, -1.75], [2.0, 9.5], [-1.25, 0.75]])  # (c + 1) x + t by hand
    field = model_field(TwoFields(), labels, guidance=w)
    torch.testing.assert_close(field(x, t), v_null + w * (v_cond - v_null))


def test_guidance_of_two_points_by_hand() -> None:
    # x = 1, t = 0, class 0: v_cond = 1, v_null = -1. With w = 3: -1 + 3 (1 - (-1)) = 5; the
    # reversed sign (v_cond + w (v_null - v_cond)) would give -5.
    field = model_field(TwoFields(), torch.tensor([0]), guidance=3.0)
    assert field(torch.ones(1, 1), torch.zeros(1)).item() == pytest.approx(5.0)


def test_an_unconditional_model_ignores_guidance() -> None:
    model = lambda x, t: 2 * x  # noqa: E731 - a model is any callable (x, t) -> v
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(model_field(model, None, guidance=4.0)(x, torch.zeros(4)), 2 * x)

import pytest
import torch

from mfm_core.models import MLP


@pytest.mark.parametrize("data_shape", [(2,), (3, 4, 4)])
def test_output_has_the_input_shape(data_shape: tuple[int, ...]) -> None:
    model = MLP(data_shape=data_shape, hidden=(32, 32))
    x = torch.randn(5, *data_shape)
    assert model(x, torch.rand(5)).shape == x.shape


def test_time_changes_the_output() -> None:
    torch.manual_seed(0)
    model = MLP(data_shape=(2,), hidden=(32,))
    x = torch.randn(3, 2)
    assert not torch.allclose(model(x, torch.zeros(3)), model(x, torch.full((3,), 0.5)))


def test_scalar_time_is_broadcast() -> None:
    model = MLP(data_shape=(2,), hidden=(16,))
    x = torch.randn(3, 2)
    torch.testing.assert_close(model(x, torch.tensor(0.25)), model(x, torch.full((3,), 0.25)))


def test_class_conditioning_changes_the_output() -> None:
    torch.manual_seed(0)
    model = MLP(data_shape=(2,), hidden=(32,), num_classes=3)
    x, t = torch.randn(4, 2), torch.rand(4)
    out0 = model(x, t, torch.zeros(4, dtype=torch.long))
    out1 = model(x, t, torch.ones(4, dtype=torch.long))
    unconditional = model(x, t)
    assert not torch.allclose(out0, out1)
    assert not torch.allclose(out0, unconditional)


def test_labels_need_num_classes() -> None:
    model = MLP(data_shape=(2,), hidden=(8,))
    with pytest.raises(ValueError, match="num_classes"):
        model(torch.randn(2, 2), torch.rand(2), torch.zeros(2, dtype=torch.long))


def test_wrong_sample_shape_is_rejected() -> None:
    with pytest.raises(ValueError, match="expected x of shape"):
        MLP(data_shape=(2,), hidden=(8,))(torch.randn(2, 3), torch.rand(2))


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"hidden": ()}, "hidden"),
        ({"time_embedding_dim": 7}, "time_embedding_dim"),
        ({"activation": "softplus"}, "activation"),
        ({"num_classes": 0}, "num_classes"),
        ({"data_shape": (0,)}, "data_shape"),
    ],
)
def test_invalid_parameters_name_themselves(params: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        MLP(**{"data_shape": (2,), **params})


def test_label_minus_one_is_the_null_label() -> None:
    torch.manual_seed(0)
    model = MLP(data_shape=(2,), hidden=(32,), num_classes=3)
    x, t = torch.randn(4, 2), torch.rand(4)
    torch.testing.assert_close(model(x, t, torch.full((4,), -1)), model(x, t))
    unconditional = MLP(data_shape=(2,), hidden=(32,))
    torch.testing.assert_close(unconditional(x, t, torch.full((4,), -1)), unconditional(x, t))

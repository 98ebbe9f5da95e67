import pytest
import torch

import mfm_core.default_plugins
from mfm_core import Registry
from mfm_core.errors import ConfigError
from mfm_core.models import UNet

TINY = {
    "channels": 32,
    "channel_mult": (1, 2),
    "num_res_blocks": 1,
    "attention_resolutions": (16,),
}


def perturb(model: torch.nn.Module) -> None:
    """Give every (zero-initialised) parameter a random value, so every path shows up."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))


@pytest.mark.parametrize(
    ("data_shape", "params"),
    [
        ((3, 32, 32), TINY),
        ((3, 64, 64), {**TINY, "channel_mult": (1, 1, 2), "attention_resolutions": (32, 16)}),
        ((1, 16, 24), {**TINY, "attention_resolutions": (8,), "resblock_updown": False}),
    ],
)
def test_output_has_the_input_shape(data_shape: tuple[int, ...], params: dict) -> None:
    model = UNet(data_shape=data_shape, **params)
    x = torch.randn(2, *data_shape)
    assert model(x, torch.rand(2)).shape == x.shape


def test_untrained_field_is_zero_as_in_adm() -> None:
    model = UNet(data_shape=(3, 32, 32), **TINY)
    assert torch.count_nonzero(model(torch.randn(2, 3, 32, 32), torch.rand(2))) == 0


def test_gradient_reaches_every_parameter() -> None:
    model = UNet(data_shape=(3, 32, 32), num_classes=5, dropout=0.1, **TINY)
    perturb(model)
    x = torch.randn(8, 3, 32, 32)
    labels = torch.tensor([0, 1, 2, 3, 4, -1, -1, 0])
    model(x, torch.rand(8), labels).square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert missing == []


def test_time_changes_the_output_and_scalar_time_is_broadcast() -> None:
    model = UNet(data_shape=(3, 32, 32), **TINY).eval()
    perturb(model)
    x = torch.randn(3, 3, 32, 32)
    out = model(x, torch.full((3,), 0.25))
    torch.testing.assert_close(model(x, torch.tensor(0.25)), out)
    assert not torch.allclose(model(x, torch.full((3,), 0.26)), out)


def test_class_conditioning_changes_the_output_and_minus_one_is_no_label() -> None:
    model = UNet(data_shape=(3, 32, 32), num_classes=10, **TINY).eval()
    perturb(model)
    x, t = torch.randn(4, 3, 32, 32), torch.rand(4)
    out0 = model(x, t, torch.zeros(4, dtype=torch.long))
    out1 = model(x, t, torch.ones(4, dtype=torch.long))
    unconditional = model(x, t)
    assert not torch.allclose(out0, out1)
    assert not torch.allclose(out0, unconditional)
    torch.testing.assert_close(model(x, t, torch.full((4,), -1)), unconditional)
    mixed = model(x, t, torch.tensor([0, -1, 0, -1]))
    torch.testing.assert_close(mixed[0::2], out0[0::2])
    torch.testing.assert_close(mixed[1::2], unconditional[1::2])


def test_training_from_the_zero_init_makes_labels_matter() -> None:
    torch.manual_seed(0)
    model = UNet(data_shape=(3, 32, 32), num_classes=3, **TINY)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, t, labels = torch.randn(4, 3, 32, 32), torch.rand(4), torch.tensor([0, 1, 2, 0])
    # Step 1 moves only the zero output conv, step 2 the zero convs of the residual branches.
    for _ in range(2):
        optimizer.zero_grad()
        (model(x, t, labels) - x).square().mean().backward()
        optimizer.step()
    with torch.no_grad():
        assert not torch.allclose(model(x, t, labels), model(x, t, labels.roll(1)))


def test_labels_need_num_classes() -> None:
    model = UNet(data_shape=(3, 32, 32), **TINY)
    x, t = torch.randn(2, 3, 32, 32), torch.rand(2)
    assert model(x, t, torch.full((2,), -1)).shape == x.shape
    with pytest.raises(ValueError, match="num_classes"):
        model(x, t, torch.zeros(2, dtype=torch.long))


def test_wrong_sample_shape_is_rejected() -> None:
    with pytest.raises(ValueError, match="expected x of shape"):
        UNet(data_shape=(3, 32, 32), **TINY)(torch.randn(2, 3, 16, 16), torch.rand(2))


def test_head_channels_set_the_number_of_heads() -> None:
    model = UNet(data_shape=(3, 32, 32), **{**TINY, "channels": 64}, head_channels=32)
    assert model.middle[1].num_heads == 4  # width 128 at the lowest level
    assert UNet(data_shape=(3, 32, 32), **TINY).middle[1].num_heads == 4


def test_default_channel_mult_follows_guided_diffusion() -> None:
    model = UNet(data_shape=(3, 64, 64), channels=32, num_res_blocks=1, attention_resolutions=())
    assert [m.in_conv.out_channels for m in model.middle if hasattr(m, "in_conv")] == [128, 128]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"channels": 48}, "channels must be a positive multiple of 32"),
        ({"channel_mult": ()}, "channel_mult"),
        ({"channel_mult": (1,) * 7}, "divisible by 64"),
        ({"num_res_blocks": 0}, "num_res_blocks"),
        ({"num_heads": 3}, "num_heads"),
        ({"head_channels": 24}, "head_channels"),
        ({"dropout": 1.0}, "dropout"),
        ({"num_classes": 0}, "num_classes"),
        ({"data_shape": (32, 32)}, "data_shape"),
    ],
)
def test_invalid_parameters_name_themselves(params: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        UNet(**{"data_shape": (3, 32, 32), **TINY, **params})


def registry() -> Registry:
    registry = Registry(load_entry_points=False)
    registry.add_plugin(mfm_core.default_plugins)
    return registry


def test_built_through_the_registry_from_toml_values() -> None:
    params = {
        "channels": 32,
        "channel_mult": [1, 2],
        "num_res_blocks": 1,
        "attention_resolutions": [16],
        "num_classes": 10,
    }
    model = registry().create("vector_field", "unet", params, provided={"data_shape": (3, 32, 32)})
    assert isinstance(model, UNet) and model.num_classes == 10
    x = torch.randn(2, 3, 32, 32)
    assert model(x, torch.rand(2), torch.tensor([3, -1])).shape == x.shape


def test_attention_at_a_resolution_the_unet_does_not_reach_is_a_warning() -> None:
    # As in ADM: a shallow U-Net (a smoke test of a deep config) skips it, and says so.
    with pytest.warns(UserWarning, match=r"attention_resolutions \[4\] are not among"):
        model = UNet(data_shape=(3, 32, 32), **{**TINY, "attention_resolutions": (16, 4)})
    x = torch.randn(2, 3, 32, 32)
    assert model(x, torch.rand(2)).shape == x.shape


def test_a_level_narrower_than_one_head_gets_one_head() -> None:
    model = UNet(data_shape=(3, 32, 32), **TINY, head_channels=64)  # widths 32 and 64
    x = torch.randn(2, 3, 32, 32)
    assert model(x, torch.rand(2)).shape == x.shape


def test_registry_reports_bad_values_under_the_model_table() -> None:
    with pytest.raises(ConfigError, match=r"\$\.model\.channel_mult\[1\]: expected an integer"):
        registry().create(
            "vector_field",
            "unet",
            {"channel_mult": [1, 2.5]},
            path="$.model",
            provided={"data_shape": (3, 32, 32)},
        )


def test_compiles_without_graph_breaks() -> None:
    pytest.importorskip("torch._dynamo")
    model = UNet(data_shape=(3, 16, 16), **{**TINY, "attention_resolutions": (8,)}, num_classes=2)
    explanation = torch._dynamo.explain(model)(
        torch.randn(2, 3, 16, 16), torch.rand(2), torch.tensor([1, -1])
    )
    assert explanation.graph_break_count == 0


def test_runs_under_bf16_autocast() -> None:
    model = UNet(data_shape=(3, 32, 32), num_classes=2, **TINY)
    perturb(model)
    x, t = torch.randn(2, 3, 32, 32), torch.rand(2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, t, torch.tensor([1, -1]))
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), model(x, t, torch.tensor([1, -1])), atol=0.1, rtol=0.1)

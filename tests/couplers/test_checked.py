"""The core checks what every coupler returns (mfm_core.adapters.CheckedCoupler): a broken
third-party coupler fails with one error naming it, its plugin and its distribution, never
with an IndexError deep in the runner or by training on wrong pairs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mfm_core import Coupling, hookimpl
from mfm_core.cli import main
from mfm_core.errors import PluginError
from mfm_core.registry import using_registry
from mfm_core.testing import isolated_registry, write_tiny_config


def _identity(k: int) -> torch.Tensor:
    return torch.arange(k)


BROKEN = {
    "out-of-range": lambda x0, x1: (_identity(len(x0)), _identity(len(x0)) + 1),
    "negative": lambda x0, x1: (_identity(len(x0)), _identity(len(x0)) - 1),
    "float-indices": lambda x0, x1: (_identity(len(x0)), _identity(len(x0)).float()),
    "bool-mask": lambda x0, x1: (_identity(len(x0)), torch.ones(len(x0), dtype=torch.bool)),
    "too-short": lambda x0, x1: (_identity(len(x0) - 1), _identity(len(x0) - 1)),
    "unequal": lambda x0, x1: (_identity(len(x0)), _identity(len(x0))[:-1]),
    "two-dimensional": lambda x0, x1: (_identity(len(x0))[:, None], _identity(len(x0))),
    "not-indices": lambda x0, x1: "pairs",
    "false-permutation": lambda x0, x1: Coupling(
        i=_identity(len(x0)), j=torch.zeros(len(x0), dtype=torch.long), is_permutation=True
    ),
    "samples-out-of-range": lambda x0, x1: Coupling(
        i=_identity(len(x0)), j=_identity(len(x0)), samples=(x0[:2], x1[:2], None)
    ),
}

PROBLEMS = {
    "out-of-range": r"returned j with indices outside \[0, 8\)",
    "negative": r"returned j with indices outside \[0, 8\)",
    "float-indices": r"returned j of dtype torch.float32; indices are integers",
    "bool-mask": r"returned j of dtype torch.bool; indices are integers",
    "too-short": r"returned 7 and 7 indices \(i and j\) for 8 samples",
    "unequal": r"returned 8 and 7 indices \(i and j\) for 8 samples",
    "two-dimensional": r"returned i of shape \(8, 1\); expected \(k,\)",
    "not-indices": r"returned a str; expected a Coupling or a pair \(i, j\)",
    "false-permutation": r"declares a permutation \(is_permutation\), but j uses an index twice",
    "samples-out-of-range": r"returned i with indices outside \[0, 2\)",
}


class Broken:
    """A plugin registering one broken coupler of each kind, named after its mistake."""

    @hookimpl
    def register_couplers(self, register):
        for name, coupling in BROKEN.items():
            register(name, coupling)


def _registry():
    registry = isolated_registry()
    registry.add_plugin(Broken(), "broken", distribution="mfm-broken", version="0.3")
    return registry


@pytest.mark.parametrize("name", list(BROKEN))
def test_a_bad_result_names_the_coupler_its_plugin_and_its_distribution(name: str) -> None:
    coupler = _registry().create("coupler", name)
    with pytest.raises(PluginError) as caught:
        coupler(torch.randn(8, 2), torch.randn(8, 2))
    message = str(caught.value)
    assert message.startswith(f"coupler '{name}' (plugin 'broken' of mfm-broken 0.3) ")
    assert "bug in the plugin" in message
    assert caught.match(PROBLEMS[name])


def test_a_broken_coupler_stops_a_run_with_one_error_line(tmp_path, capsys) -> None:
    config = write_tiny_config(tmp_path)
    with using_registry(_registry()):
        status = main(["run", str(config), "coupler.name=out-of-range", "--runs", str(tmp_path)])
    err = capsys.readouterr().err
    assert status == 2
    (line,) = [line for line in err.splitlines() if line.startswith("error:")]
    assert line.startswith(
        "error: coupler 'out-of-range' (plugin 'broken' of mfm-broken 0.3) returned j with "
        "indices outside [0, 32)"
    )
    assert "Traceback" not in err and "IndexError" not in err


def test_validate_pushes_a_batch_through_the_check(tmp_path, capsys) -> None:
    config = write_tiny_config(tmp_path)
    with using_registry(_registry()):
        assert main(["validate", str(config), "coupler.name=false-permutation"]) == 2
    assert "declares a permutation" in capsys.readouterr().err


def test_good_results_in_other_shapes_are_normalised() -> None:
    """Indices as numpy arrays, lists or int32 tensors become LongTensors on x0's device."""
    registry = isolated_registry()

    class Shapes:
        @hookimpl
        def register_couplers(self, register):
            register("numpy", lambda x0, x1: (np.arange(len(x0)), np.arange(len(x0))[::-1]))
            register("lists", lambda x0, x1: ([0, 1, 2], [2, 0, 1]))
            register("int32", lambda x0, x1: (torch.arange(3, dtype=torch.int32),) * 2)

    registry.add_plugin(Shapes())
    x0, x1 = torch.randn(3, 2), torch.randn(3, 2)
    for name, j in (("numpy", [2, 1, 0]), ("lists", [2, 0, 1]), ("int32", [0, 1, 2])):
        coupling = registry.create("coupler", name)(x0, x1)
        assert coupling.i.dtype == coupling.j.dtype == torch.long, name
        assert coupling.i.tolist() == [0, 1, 2] and coupling.j.tolist() == j, name
        assert not coupling.is_permutation and coupling.cost is None


def test_inputs_are_checked_before_the_coupler_runs() -> None:
    calls = []

    def coupler(x0, x1):
        calls.append(len(x0))
        return torch.arange(len(x0)), torch.arange(len(x0))

    checked = isolated_registry()
    checked.add_plugin(
        type(
            "P",
            (),
            {"register_couplers": hookimpl(lambda self, register: register("spy", coupler))},
        )()
    )
    spy = checked.create("coupler", "spy")
    with pytest.raises(ValueError, match="same positive number of samples"):
        spy(torch.randn(4, 2), torch.randn(5, 2))
    with pytest.raises(ValueError, match="one label per sample"):
        spy(torch.randn(4, 2), torch.randn(4, 2), torch.zeros(3, dtype=torch.long))
    assert calls == []


def test_a_coupler_with_an_impossible_signature_is_refused_when_built() -> None:
    class Plugin:
        @hookimpl
        def register_couplers(self, register):
            register("three", lambda: lambda x0, x1, labels: (x0, x1))
            register("not-callable", lambda: 42)

    registry = isolated_registry()
    registry.add_plugin(Plugin(), "odd", distribution="mfm-odd", version="1")
    with pytest.raises(PluginError, match=r"coupler 'three' .* requires a parameter 'labels'"):
        registry.create("coupler", "three")
    with pytest.raises(PluginError, match=r"coupler 'not-callable' .* is a int, not a callable"):
        registry.create("coupler", "not-callable")


def test_a_pair_coupler_must_call_super_init() -> None:
    from mfm_core import PairCoupler

    class Forgetful(PairCoupler):
        def __init__(self, *, shift: int = 0) -> None:
            self.shift = shift  # no super().__init__: no cost resolved, options unset

        def pairs(self, costs, x0, x1):
            return torch.arange(len(x0)), torch.arange(len(x0))

    with pytest.raises(PluginError, match=r"Forgetful.__init__ must call super\(\).__init__"):
        Forgetful()(torch.randn(3, 2), torch.randn(3, 2))

    class Inherits(PairCoupler):  # no __init__ of its own: the base's options and defaults
        is_permutation = False  # nearest data sample: some may be taken twice

        def pairs(self, costs, x0, x1):
            return torch.arange(len(x0)), costs.argmin(dim=1)

    coupling = Inherits(cost="l1")(torch.randn(5, 2), torch.randn(5, 2))
    assert coupling.cost is not None and len(coupling.j) == 5

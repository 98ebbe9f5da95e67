"""A third-party plugin, found the way an installed one is: through entry-point metadata.

The example distribution in docs/examples/mfm-coupler-reverse is "installed" without pip: its
package and a ``*.dist-info`` directory (METADATA and entry_points.txt, what pip writes) are
put on PYTHONPATH of a fresh interpreter.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import mfm_core.default_plugins
from mfm_core import ConfigError, Coupler, Coupling, Registry, hookimpl
from mfm_core.runner.assembly.validate import validate_config
from mfm_core.testing import isolated_registry, train_briefly

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "mfm-coupler-reverse"


def write_dist_info(root: Path, name: str, version: str, entry_point: str) -> None:
    """The metadata of an installed distribution that declares one ``mfm.plugins`` entry point."""
    dist_info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    )
    (dist_info / "entry_points.txt").write_text(f"[mfm.plugins]\n{entry_point}\n")


def mfm(site: Path, *args: str, strict: bool = False) -> subprocess.CompletedProcess[str]:
    """``python -m mfm_core ARGS`` with ``site`` first on PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("MFM_STRICT_PLUGINS", "MFM_TRACEBACK")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    if strict:
        env["MFM_STRICT_PLUGINS"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "mfm_core", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_installed_plugin_is_listed_with_its_distribution_and_usable_from_toml(
    tmp_path, tiny_config
):
    site = tmp_path / "site"
    shutil.copytree(
        EXAMPLE / "mfm_coupler_reverse",
        site / "mfm_coupler_reverse",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    write_dist_info(site, "mfm-coupler-reverse", "0.1.0", "reverse = mfm_coupler_reverse")

    listed = mfm(site, "plugins", "--json")
    assert listed.returncode == 0, listed.stderr
    report = json.loads(listed.stdout)
    rows = {(row["kind"], row["name"]): row for row in report["components"]}
    assert rows["coupler", "reverse"] == {
        "kind": "coupler",
        "name": "reverse",
        "distribution": "mfm-coupler-reverse",
        "version": "0.1.0",
        "plugin": "reverse",
    }
    assert rows["coupler", "exact"]["distribution"] == "mfm"
    assert report["broken"] == {}

    checked = mfm(site, "validate", str(tiny_config), "coupler.name=reverse", "coupler.shift=1")
    assert checked.returncode == 0, checked.stderr
    assert "coupler      reverse (mfm-coupler-reverse 0.1.0)" in checked.stdout


def test_plugin_that_fails_to_import_is_a_warning_unless_strict(tmp_path):
    write_dist_info(tmp_path, "mfm-ghost", "0.1.0", "ghost = mfm_ghost_not_installed")

    listed = mfm(tmp_path, "plugins")
    assert listed.returncode == 0, listed.stderr
    warning = "warning: plugin 'ghost' (from mfm-ghost) failed to load: ModuleNotFoundError"
    assert any(line.startswith(warning) for line in listed.stderr.splitlines()), listed.stderr
    rows = [line.split()[:3] for line in listed.stdout.splitlines()]
    assert ["coupler", "exact", "mfm"] in rows
    assert "broken: plugin 'ghost' (from mfm-ghost)" in listed.stdout

    strict = mfm(tmp_path, "plugins", strict=True)
    assert strict.returncode == 2
    assert strict.stderr.startswith("error: plugin 'ghost' (from mfm-ghost) failed to load")
    assert "Traceback" not in strict.stderr and strict.stdout == ""


@pytest.fixture
def reverse_plugin(monkeypatch):
    """The example plugin module, imported from the docs without installing it."""
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # keep docs/ free of __pycache__
    monkeypatch.syspath_prepend(str(EXAMPLE))
    import mfm_coupler_reverse

    yield mfm_coupler_reverse
    sys.modules.pop("mfm_coupler_reverse", None)


def test_reverse_coupler_pairs_i_with_k_minus_1_minus_i(reverse_plugin):
    registry = Registry(load_entry_points=False)
    registry.add_plugin(reverse_plugin)
    assert registry.names("coupler") == ["reverse"]

    x0, x1 = torch.randn(5, 2), torch.randn(5, 2)
    coupler = registry.create("coupler", "reverse")
    assert isinstance(coupler, Coupler)
    i, j = coupler(x0, x1)
    assert i.tolist() == [0, 1, 2, 3, 4] and j.tolist() == [4, 3, 2, 1, 0]
    shifted = registry.create("coupler", "reverse", {"shift": 1})(x0, x1)
    assert shifted.j.tolist() == [0, 4, 3, 2, 1]
    assert shifted.is_permutation and shifted.cost is None


def test_reverse_coupler_parameters_are_checked_with_key_paths(reverse_plugin, tiny_config):
    registry = Registry(load_entry_points=False)
    registry.add_plugin(reverse_plugin)
    with pytest.raises(ConfigError, match=r"^\$\.coupler\.shift: expected an integer, got 1\.5"):
        registry.create("coupler", "reverse", {"shift": 1.5})
    with pytest.raises(ConfigError, match=r"^\$\.coupler\.shfit: unknown key; did you mean"):
        registry.create("coupler", "reverse", {"shfit": 1})
    with pytest.raises(ConfigError, match=r"^\$\.coupler\.shift: must be zero or positive, got -1"):
        registry.create("coupler", "reverse", {"shift": -1})

    registry.add_plugin(mfm_core.default_plugins)
    lines = validate_config(tiny_config, ["coupler.name=reverse"], registry)
    assert "coupler      reverse (plugin 'mfm_coupler_reverse')" in lines


def test_a_plugin_that_exits_at_import_is_reported_and_mfm_carries_on(tmp_path, tiny_config):
    site = tmp_path / "site"
    site.mkdir()
    (site / "mfm_exits.py").write_text("import sys\nsys.exit(0)\n")
    write_dist_info(site, "mfm-exits", "0.2.0", "exits = mfm_exits")

    listed = mfm(site, "plugins")
    assert listed.returncode == 0, listed.stderr
    assert listed.stderr.startswith(
        "warning: plugin 'exits' (from mfm-exits) failed to load: SystemExit: 0"
    )
    assert "coupler       exact" in listed.stdout
    assert "broken: plugin 'exits' (from mfm-exits) failed to load: SystemExit: 0" in listed.stdout
    checked = mfm(site, "validate", str(tiny_config))
    assert checked.returncode == 0 and "OK" in checked.stdout, checked.stderr

    strict = mfm(site, "plugins", strict=True)
    assert strict.returncode == 2 and strict.stdout == ""
    assert strict.stderr.startswith("error: plugin 'exits' (from mfm-exits) failed to load")


# An outside author's couplers, in each shape the core accepts. Each records how it was called.
CALLS: list[tuple[str, bool]] = []


def plain_function(x0, x1):
    """Registered as it is: the coupling function itself, returning a tuple."""
    CALLS.append(("function", False))
    return torch.arange(len(x0)), torch.arange(len(x0)).flip(0)


def make_shifted(*, shift: int = 1):
    """A plain function as the factory: its keywords are the TOML keys."""

    def shifted(x0, x1):
        CALLS.append(("factory", False))
        i = torch.arange(len(x0))
        return Coupling(i=i, j=(i + shift) % len(x0), is_permutation=True)

    return shifted


class TwoArguments:
    """A class whose coupler takes (x0, x1) and returns a Coupling."""

    def __init__(self, *, reverse: bool = False) -> None:
        self.reverse = reverse

    def __call__(self, x0, x1):
        CALLS.append(("class", False))
        j = torch.arange(len(x0))
        return Coupling(i=torch.arange(len(x0)), j=j.flip(0) if self.reverse else j)


class WithCond:
    """A class whose coupler takes cond (only ever by keyword) and returns a tuple."""

    is_permutation = True

    def __call__(self, x0, x1, *, cond=None):
        CALLS.append(("cond", cond is not None))
        return torch.arange(len(x0)), torch.arange(len(x0))


def tensor_solver(field, x0):
    """A solver function returning the end point alone: one Euler step."""
    return x0 + field(x0, torch.zeros(len(x0)))


class TuplePath:
    """A path returning (x_t, u_t)."""

    def sample(self, x0, x1, t):
        s = t.view(-1, *([1] * (x0.dim() - 1)))
        return (1 - s) * x0 + s * x1, x1 - x0


class Shapes:
    @hookimpl
    def register_couplers(self, register):
        register("plain-function", plain_function)
        register("function-factory", make_shifted)
        register("two-arguments", TwoArguments)
        register("with-cond", WithCond)

    @hookimpl
    def register_solvers(self, register):
        register("one-step", tensor_solver)

    @hookimpl
    def register_paths(self, register):
        register("tuple-path", TuplePath)


@pytest.mark.parametrize(
    ("overrides", "kind"),
    [
        (["coupler.name=plain-function"], "function"),
        (["coupler.name=function-factory", "coupler.shift=3"], "factory"),
        (["coupler.name=two-arguments", "coupler.reverse=true"], "class"),
        (["coupler.name=with-cond"], "cond"),
    ],
)
def test_an_outside_coupler_in_each_shape_trains_by_name_from_toml(tmp_path, overrides, kind):
    CALLS.clear()
    run = train_briefly(*overrides, plugins=[Shapes()], steps=3, directory=tmp_path)
    assert len(run.losses) == 3 and run.metrics["final_loss"] > 0
    # training (3 steps) and the final loss's batches use the coupler; no labels here
    assert len(CALLS) >= 3 and set(CALLS) == {(kind, False)}
    assert f'name = "{overrides[0].split("=")[1]}"' in (run.run_dir / "config.toml").read_text()


def test_cond_is_passed_by_keyword_only_when_there_are_labels():
    registry = isolated_registry(Shapes())
    x0, x1, labels = torch.randn(4, 2), torch.randn(4, 2), torch.tensor([0, 1, 0, -1])
    CALLS.clear()
    with_cond = registry.create("coupler", "with-cond")
    assert with_cond(x0, x1, labels).is_permutation  # the class attribute, for a tuple
    with_cond(x0, x1)
    two = registry.create("coupler", "two-arguments")
    _, _, paired = two(x0, x1, labels).pairs(x0, x1, labels)  # takes no cond: not given it
    assert CALLS == [("cond", True), ("cond", False), ("class", False)]
    assert torch.equal(paired, labels)


def test_a_solver_and_a_path_returning_plain_tensors_train_by_name(tmp_path):
    overrides = ["path.name=tuple-path", "solver.name=one-step", 'eval.solvers=["one-step"]']
    overrides.append("eval.trajectories=0")  # the trajectory picture needs return_trajectory
    run = train_briefly(*overrides, plugins=[Shapes()], steps=2, directory=tmp_path)
    (row,) = run.metrics["samples"]
    assert row["solver"] == "one-step" and row["nfe"] == 1  # counted by the core


def _python_block(text: str, marker: str) -> str:
    """The ```python block of ``text`` that contains ``marker``."""
    blocks = text.split("```python\n")[1:]
    (block,) = [b.split("```")[0] for b in blocks if marker in b]
    return block


PLUGINS_MD = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"


def test_the_check_coupler_example_of_the_docs_runs_and_catches_a_broken_coupler():
    code = _python_block(PLUGINS_MD.read_text(), "check_coupler(nearest_free)")
    namespace: dict = {}
    exec(compile(code, str(PLUGINS_MD), "exec"), namespace)  # passes: no AssertionError
    broken = code.replace("free[choice] = False", "pass")  # may take a data sample twice
    with pytest.raises(AssertionError, match="declares a permutation"):
        exec(compile(broken, str(PLUGINS_MD), "exec"), {})


def test_the_check_stateful_coupler_example_of_the_docs_runs_and_catches_a_broken_state():
    code = _python_block(PLUGINS_MD.read_text(), "check_stateful_coupler(lambda")
    exec(compile(code, str(PLUGINS_MD), "exec"), {})  # passes: no AssertionError
    timed = code.replace("lambda: SemiDiscreteCoupler(", "lambda: Timed(") + "\n"
    timed = timed.replace(
        "\ncheck_stateful_coupler(",
        "\nclass Timed(SemiDiscreteCoupler):\n"
        "    def state_dict(self):  # a time in the state: two alike couplers differ\n"
        "        return {**super().state_dict(), 'saved_at': __import__('time').perf_counter()}\n"
        "\ncheck_stateful_coupler(",
    )
    with pytest.raises(AssertionError, match="alike: two couplers prepared alike"):
        exec(compile(timed, str(PLUGINS_MD), "exec"), {})


def test_the_twenty_line_plugin_of_the_docs_trains_by_name(tmp_path):
    text = PLUGINS_MD.read_text()
    code = _python_block(text, 'register("sorted", sorted_pairs)')
    start = text.index("## A coupler in 20 lines")
    section = text[start : text.index("\n## ", start + 1)]
    listing = section.split("```toml\n")[1].split("```")[0] + code
    assert len(listing.strip().splitlines()) < 25
    module = type(sys)("mfm_coupler_sorted")
    exec(compile(code, str(PLUGINS_MD), "exec"), module.__dict__)
    x0, x1 = torch.tensor([[2.0], [0.0], [1.0]]), torch.tensor([[5.0], [9.0], [7.0]])
    i, j = module.sorted_pairs(x0, x1)
    assert x1[j].flatten().tolist() == [5.0, 7.0, 9.0] and x0[i].flatten().tolist() == [0, 1, 2]
    run = train_briefly("coupler.name=sorted", plugins=[module], directory=tmp_path)
    assert len(run.losses) == 3

"""Component parameters read from a factory's signature and docstring (mfm describe)."""

from __future__ import annotations

import json
import re
from typing import Literal

from mfm_core.hookspecs import hookimpl
from mfm_core.introspect import component_info, format_info, parameter_doc
from mfm_core.registry import Registry


def google_style(*, margin: float = 0.5, mode: Literal["a", "b"] = "a"):
    """Pairs by a margin rule.

    Args:
        margin: how far apart two samples may be
            before they are not paired.
        mode (str): which rule to use.
    """


class BacktickStyle:
    """Pairs by rank. ``depth`` is how many ranks are compared; the rest is ignored."""

    def __init__(self, *, depth: int, data_shape: tuple[int, ...] = (2,), **extra) -> None:
        pass


def coupling_function(x0, x1, cond=None, *, unused: int = 0):
    """Pairs in order: a coupling function registered as it is, called with its batches."""


def load_teacher_user(*, run: str, load_teacher=None):
    """Pairs by a teacher. ``run`` is the :class:`~mfm.Run` directory read, ``as is``."""


class Plugin:
    @hookimpl
    def register_couplers(self, register):
        register("google", google_style)
        register("backtick", BacktickStyle)
        register("function", coupling_function)
        register("teacher", load_teacher_user)

    @hookimpl
    def register_costs(self, register):
        register("dot", lambda a, b: a @ b.T)


def _registry() -> Registry:
    registry = Registry(load_entry_points=False)
    registry.add_plugin(Plugin(), "demo", distribution="mfm-demo", version="1.2")
    return registry


def test_google_style_args_give_each_parameter_its_line() -> None:
    info = component_info(_registry().get("coupler", "google"))
    assert info.summary == "Pairs by a margin rule."
    assert [p.name for p in info.parameters] == ["margin", "mode"]
    margin = info.parameters[0]
    assert (margin.type, margin.default, margin.required) == ("float", 0.5, False)
    assert margin.doc == "how far apart two samples may be before they are not paired."
    assert info.parameters[1].doc == "which rule to use."
    assert info.parameters[1].type == "Literal['a', 'b']"


def test_backtick_sentences_required_keys_and_runner_keywords() -> None:
    info = component_info(_registry().get("coupler", "backtick"))
    assert [p.name for p in info.parameters] == ["depth"]  # data_shape comes from the runner
    depth = info.parameters[0]
    assert depth.required and depth.default is None and depth.type == "int"
    assert depth.doc == "depth is how many ranks are compared; the rest is ignored."
    assert info.open_ended
    assert info.provider == "mfm-demo 1.2"


def test_text_and_json_forms() -> None:
    info = component_info(_registry().get("coupler", "backtick"))
    text = format_info(info)
    assert text.splitlines()[0] == "coupler 'backtick' (mfm-demo 1.2)"
    assert "  depth: int, required" in text
    assert "further keyword parameters" in text
    data = json.loads(json.dumps(info.to_json()))
    assert data["parameters"][0] == {
        "name": "depth",
        "type": "int",
        "default": None,
        "required": True,
        "doc": "depth is how many ranks are compared; the rest is ignored.",
    }


def test_a_parameter_the_docstring_does_not_name_has_no_doc() -> None:
    assert parameter_doc("Nothing about it here.", "width") == ""


def test_the_summary_is_no_parameter_doc() -> None:
    doc = "Integrates with ``steps`` steps.\n\nMore about ``tableau``."
    assert parameter_doc(doc, "steps") == ""
    assert parameter_doc(doc, "tableau") == "More about tableau."


def test_only_what_a_config_sets_is_listed_without_markup() -> None:
    registry = _registry()
    # a coupling function's arguments are its batches, a cost is called with tensors, and
    # load_teacher is a service the runner offers: none of them is a setting
    assert component_info(registry.get("coupler", "function")).parameters == ()
    assert component_info(registry.get("cost", "dot")).parameters == ()
    teacher = component_info(registry.get("coupler", "teacher"))
    assert [p.name for p in teacher.parameters] == ["run"]
    assert teacher.parameters[0].doc == "run is the Run directory read, as is."


MARKUP = re.compile(r"`|:(class|func|meth|attr|mod|obj|data|ref):")


def test_every_builtin_parameter_has_a_plain_sentence_of_its_own() -> None:
    """Every parameter ``mfm describe`` lists, for every component of mfm and of the
    first-party plugins, says in one plain sentence of its own what it controls, and no
    listed parameter is one the runner provides or a config cannot set."""
    from mfm_core.introspect import RUNNER_PROVIDED
    from mfm_core.runner.assembly.loading import SERVICES

    registry = Registry()
    first_party = {"mfm", "mfm-coupling-sinkhorn", "mfm-tracker-mlflow", "mfm-tracker-wandb"}
    entries = [e for kind in registry.entries.values() for e in kind.values()]
    # CI installs the plugins under plugins/ (.ci/run); each must be here to be checked
    assert first_party <= {e.distribution for e in entries}
    problems = []
    for entry in (e for e in entries if e.distribution in first_party):
        info = component_info(entry)
        docs = [p.doc for p in info.parameters]
        for param in info.parameters:
            where = f"{entry.kind} '{entry.name}' {param.name}"
            if param.name in RUNNER_PROVIDED or param.name in SERVICES:
                problems.append(f"{where}: provided by the runner, not set by a config")
            if entry.kind == "cost" or param.name in ("x0", "x1"):
                problems.append(f"{where}: an input of the component, not a setting")
            if not param.doc:
                problems.append(f"{where}: no description")
            elif param.doc == info.summary:
                problems.append(f"{where}: repeats the summary")
            elif docs.count(param.doc) > 1:
                problems.append(f"{where}: shares its description with another parameter")
            if MARKUP.search(param.doc):
                problems.append(f"{where}: reST markup: {param.doc!r}")
    assert not problems, "\n".join(problems)
    # a metric's feature map is built by the runner, but from the config's name or table
    fid = component_info(registry.get("metric", "fid")).parameters
    assert (fid[0].name, fid[0].type) == ("features", "FeatureMap | None")
    assert component_info(registry.get("cost", "l1")).parameters == ()
    reflow = component_info(registry.get("coupler", "reflow")).parameters
    assert [p.name for p in reflow] == ["run", "solver", "guidance"]  # no load_teacher


def test_every_builtin_component_can_be_described() -> None:
    registry = Registry()
    for kind, entries in registry.entries.items():
        for entry in entries.values():
            info = component_info(entry)
            assert info.kind == kind and info.name == entry.name
            json.dumps(info.to_json())
    exact = component_info(registry.get("coupler", "exact"))
    assert {p.name: p.default for p in exact.parameters}["cost"] == "sqeuclidean"


def test_mfm_describe_and_plugins_params(capsys) -> None:
    from mfm_core.cli import main

    assert main(["describe", "coupler", "exact"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("coupler 'exact' (mfm ")
    assert "  backend: Literal['auto', 'scipy', 'emd', 'pot'], default 'auto'" in out
    assert "with labels, pair each data sample only with noise of its class." in out
    assert main(["describe", "solver", "euler", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["parameters"] == [
        {
            "name": "steps",
            "type": "int",
            "default": 8,
            "required": False,
            "doc": "the number of equal steps from t = 0 to t = 1.",
        }
    ]
    assert main(["describe", "coupler", "exakt"]) == 2
    assert "did you mean 'exact'?" in capsys.readouterr().err
    assert main(["plugins", "--params", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["components"]
    euler = next(r for r in rows if (r["kind"], r["name"]) == ("solver", "euler"))
    assert euler["parameters"][0]["name"] == "steps"

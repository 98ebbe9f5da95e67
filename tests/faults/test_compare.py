"""Hostile names in compare sweeps and compare.json: nothing outside the comparison is
touched, and nothing this comparison did not make is removed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mfm_core.errors import ConfigError
from mfm_core.runner.compare import plan_variants, resume_compare, start_compare
from mfm_core.runner.rundir.safepath import is_slug, slug


@pytest.mark.parametrize(
    "value", ["..", ".", "../../etc", "/abs/path", "a/b", ".hidden", "x" * 300, "\n", "~"]
)
def test_slug_is_a_plain_name(value):
    name = slug(value)
    assert is_slug(name) and name not in (".", "..") and "/" not in name
    assert not name.startswith(".") and len(name) <= 80


def test_sweeping_dot_dot_keeps_runs_folder(fast_config, tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "precious.txt").write_text("keep me")
    _, variants = plan_variants(["data.root=..,.", "train.steps=2"])
    assert all(is_slug(v.directory) for v in variants)
    directory = start_compare(fast_config, ["data.root=..,.", "train.steps=2"], runs, False)
    assert (runs / "precious.txt").read_text() == "keep me"
    for variant in variants:
        run_dir = directory / variant.directory
        assert run_dir.resolve().parent == directory.resolve()
        assert (run_dir / "metrics.json").is_file()


def _plan(directory: Path, variants: list[dict]) -> None:
    directory.mkdir(parents=True)
    (directory / "base.toml").write_text("")
    (directory / "compare.json").write_text(json.dumps({"command": "x", "variants": variants}))


@pytest.mark.parametrize("name", ["..", ".", "../victim", "/tmp", "a/../../victim", ""])
def test_compare_json_paths_out_of_the_comparison_are_refused(tmp_path, name):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "data.txt").write_text("mine")
    directory = tmp_path / "runs" / "00000-compare"
    _plan(directory, [{"label": "a", "directory": name, "overrides": []}])
    with pytest.raises(ConfigError, match="not a directory name inside"):
        resume_compare(directory, progress=False)
    assert (victim / "data.txt").read_text() == "mine"
    assert (tmp_path / "runs").is_dir()


def test_compare_json_symlink_out_is_refused(tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "data.txt").write_text("mine")
    directory = tmp_path / "cmp"
    _plan(directory, [{"label": "a", "directory": "a", "overrides": []}])
    (directory / "a").symlink_to(victim)
    with pytest.raises(ConfigError, match="not a directory name inside"):
        resume_compare(directory, progress=False)
    assert (victim / "data.txt").read_text() == "mine"


@pytest.mark.parametrize(
    "plan",
    [
        [],
        {"command": 1, "variants": []},
        {"command": "x", "variants": "abc"},
        {"command": "x", "variants": [{"label": "a"}]},
        {"command": "x", "variants": [{"label": "a", "directory": "a", "overrides": [1]}]},
        {"command": "x", "variants": [{"label": 1, "directory": "a", "overrides": []}]},
    ],
)
def test_malformed_compare_json_is_an_error(tmp_path, plan):
    directory = tmp_path / "cmp"
    directory.mkdir()
    (directory / "compare.json").write_text(json.dumps(plan))
    with pytest.raises(ConfigError, match="compare.json"):
        resume_compare(directory, progress=False)


def test_a_directory_the_comparison_did_not_make_is_never_removed(fast_config, tmp_path):
    directory = tmp_path / "cmp"
    _plan(directory, [{"label": "a", "directory": "a", "overrides": []}])
    (directory / "base.toml").write_text(fast_config.read_text())
    (directory / "a").mkdir()
    (directory / "a" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not made by this comparison"):
        resume_compare(directory, progress=False)
    assert (directory / "a" / "notes.txt").read_text() == "mine"


def test_a_variant_it_made_and_that_stopped_early_is_made_anew(fast_config, tmp_path):
    directory = tmp_path / "cmp"
    _plan(directory, [{"label": "a", "directory": "a", "overrides": ["train.steps=2"]}])
    (directory / "base.toml").write_text(fast_config.read_text())
    (directory / "created.json").write_text('["a"]')
    (directory / "a").mkdir()
    (directory / "a" / "config.toml").write_text("")  # stopped before its first checkpoint
    resume_compare(directory, progress=False)
    assert (directory / "a" / "metrics.json").is_file()
    assert (directory / "comparison.md").is_file()

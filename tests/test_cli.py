"""The command line: one clear message and exit status 2 for bad input, no traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mfm_core.cli import main, run_main


def run_cli(capsys, *argv, entry=main):
    code = entry(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_unknown_component_name(capsys, tiny_config):
    code, _, err = run_cli(capsys, "validate", str(tiny_config), "coupler.name=exat")
    assert code == 2
    assert err.startswith("error: $.coupler.name: unknown coupler 'exat'; did you mean 'exact'?")
    assert "Traceback" not in err


def test_bad_value_in_a_component_table(capsys, tiny_config):
    code, _, err = run_cli(capsys, "validate", str(tiny_config), "coupler.cost=manhattan")
    assert code == 2
    assert "$.coupler.cost: expected one of the installed costs 'cosine', 'l1'" in err


def test_validate_reports_what_it_built(capsys, tiny_config):
    code, out, _ = run_cli(capsys, "validate", str(tiny_config))
    assert code == 0
    assert "OK" in out and "exact (mfm 0.1.0)" in out


def test_validate_catches_a_source_that_does_not_match_the_data(capsys, tiny_config):
    code, _, err = run_cli(capsys, "validate", str(tiny_config), "data.source.shape=[3]")
    assert code == 2
    assert "$.data.source: samples of shape (3,) do not match the target's (2,)" in err


def test_missing_config_file(capsys, tmp_path):
    code, _, err = run_cli(capsys, str(tmp_path / "missing.toml"), entry=run_main)
    assert code == 2
    assert "missing.toml' does not exist" in err


def test_missing_data_file(capsys, tiny_config, tmp_path):
    override = f"data.target={{name='file', path='{tmp_path / 'points.npy'}'}}"
    code, _, err = run_cli(capsys, "validate", str(tiny_config), override)
    assert code == 2
    assert err.startswith("error: $.data.target: data file") and "points.npy" in err
    assert err.count("\n") == 1


def test_malformed_override(capsys, tiny_config):
    code, _, err = run_cli(capsys, str(tiny_config), "train.steps", entry=run_main)
    assert code == 2 and "expected KEY=VALUE" in err


def test_traceback_on_request(tiny_config):
    with pytest.raises(Exception, match="unknown coupler"):
        main(["validate", str(tiny_config), "coupler.name=exat", "--traceback"])


def test_plugins_lists_every_component_with_its_distribution(capsys):
    code, out, _ = run_cli(capsys, "plugins", "--json")
    assert code == 0
    rows = json.loads(out)["components"]
    exact = next(r for r in rows if r["kind"] == "coupler" and r["name"] == "exact")
    assert exact["distribution"] == "mfm" and exact["version"]
    code, out, _ = run_cli(capsys, "plugins")
    assert any(line.split()[:3] == ["solver", "dopri5", "mfm"] for line in out.splitlines())


def test_sample_rejects_an_unknown_output_format(capsys, tmp_path, tiny_run):
    run_dir = tiny_run
    code, _, err = run_cli(capsys, "sample", str(run_dir), "--num", "3", "--out", "x.png")
    assert code == 2
    assert err.startswith("error: --out 'x.png': the run's samples are vectors; expected a .npy")
    assert err.count("\n") == 1
    code, _, err = run_cli(capsys, "sample", str(tmp_path), "--num", "3", "--out", "x.npy")
    assert code == 2 and "is not a run directory" in err


def test_console_scripts_are_installed_and_python_m_works(tiny_config):
    result = subprocess.run(
        [sys.executable, "-m", "mfm_core", "validate", str(tiny_config), "train.batch_size=-1"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "error: $.train.batch_size: must be positive, got -1"


def test_options_and_overrides_may_be_mixed(capsys, tiny_config):
    code, out, _ = run_cli(capsys, "validate", str(tiny_config), "--traceback", "train.steps=5")
    assert code == 0 and "OK" in out


def test_a_metric_listed_twice(capsys, tiny_config):
    code, _, err = run_cli(capsys, "validate", str(tiny_config), "eval.metrics=['w2','w2']")
    assert code == 2 and "$.eval.metrics[1]: metric 'w2' is listed twice" in err

"""Every user mistake is one ``error:`` line with exit status 2 and no traceback; an internal
bug keeps its traceback and says it is a bug."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mfm_core.config import apply_overrides, parse_override
from mfm_core.errors import ConfigError, SolverError
from mfm_core.runner.evaluation.sampling import _sample_format
from mfm_core.solvers.adaptive import Dopri5Solver
from tests.faults.helpers import one_error_line


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.lr=nan", "$.train.lr: nan is not a finite number"),
        ("train.lr=inf", "$.train.lr: inf is not a finite number"),
        ("eval.guidance=-inf", "$.eval.guidance: -inf is not a finite number"),
        ("train.device=cuda:abc", "cuda:abc"),
        ("train.device=mps", "mps"),
        ("train.seed=1\n[evil]\nx=1", "one TOML value on one line"),
        ("coupler.name=exact\nx", "one TOML value on one line"),
    ],
)
def test_bad_values_at_validate(fast_config, cli, override, expected):
    if override.endswith("mps") and torch.backends.mps.is_available():
        pytest.skip("this machine has an MPS device")
    status, err = cli("validate", fast_config, override)
    assert status == 2
    assert expected in one_error_line(err)


def test_a_settings_table_override_merges():
    data = {"train": {"steps": 3, "lr": 0.1}, "coupler": {"name": "exact", "cost": "l1"}}
    merged = apply_overrides(data, ["train={steps=5}", 'coupler={name="independent"}'])
    assert merged["train"] == {"steps": 5, "lr": 0.1}
    assert merged["coupler"] == {"name": "independent"}
    assert parse_override("train.steps=5") == (["train", "steps"], 5)


def test_config_not_utf8(tmp_path, cli):
    path = tmp_path / "latin1.toml"
    path.write_bytes("[train]\nseed = 1 # caf\xe9\n".encode("latin-1"))
    status, err = cli("validate", path)
    assert status == 2 and "not UTF-8" in one_error_line(err)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.0,2.O\n3,4\n", "row 1 ('1.0,2.O') holds '2.O', not a number"),
        ("x,y\n1,2\n3,zz\n", "row 2 ('3,zz') holds 'zz'"),
        ("1,2\n1e39,0\n", "row 1 (counting data rows from 0) holds [1e+39, 0.0]"),
        ("1,2\nnan,0\n", "row 1 (counting data rows from 0) holds [nan, 0.0]"),
    ],
)
def test_bad_data_files_at_validate(fast_config, tmp_path, cli, text, expected):
    data = tmp_path / "points.csv"
    data.write_text(text)
    status, err = cli("validate", fast_config, f"data.target={{name='file', path='{data}'}}")
    assert status == 2
    line = one_error_line(err)
    assert str(data) in line and expected in line


def test_a_csv_header_is_said(fast_config, tmp_path, cli):
    data = tmp_path / "points.csv"
    data.write_text("x,y\n" + "\n".join(f"{i},{-i}" for i in range(20)))
    status, err = cli("validate", fast_config, f"data.target={{name='file', path='{data}'}}")
    assert status == 0
    assert any("taken as a header" in line for line in err)


def test_corrupt_image_in_an_image_folder_at_validate(tmp_path, cli):
    from PIL import Image

    root = tmp_path / "pictures" / "cats"
    root.mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (8, 8), (i, 0, 0)).save(root / f"{i}.png")
    (root / "3.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    config = tmp_path / "img.toml"
    config.write_text(
        f"""
[data]
source = {{ name = "gaussian", shape = [3, 8, 8] }}
target = {{ name = "image-folder", root = "{tmp_path / "pictures"}", resolution = 8 }}
workers = 0
[model]
name = "mlp"
hidden = [8]
"""
    )
    status, err = cli("validate", config)
    assert status == 2 and "3.png is not a readable image" in one_error_line(err)


def test_dopri5_failing_says_so_and_suggests_a_fixed_step_solver():
    field = lambda x, t: x * float("nan")  # noqa: E731
    with pytest.raises(SolverError, match="dopri5 failed .* fixed-step solver"):
        Dopri5Solver()(field, torch.ones(4, 2))


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--num", "0"], "--num must be in"),
        (["--num", str(10**12)], "--num must be in"),
        (["--seed", "-1"], "--seed must be in"),
        (["--seed", str(2**70)], "--seed must be in"),
        (["--batch", "0"], "--batch must be positive"),
        (["--guidance", "nan"], "--guidance must be a finite number"),
    ],
)
def test_sample_numbers_out_of_range(trained, tmp_path, cli, options, expected):
    out = tmp_path / "s.npy"
    status, err = cli("sample", trained, "--out", out, *(["--num", "5"] + options))
    assert status == 2 and expected in one_error_line(err)
    assert not out.exists()


def test_sample_out_an_existing_directory_or_not_writable(trained, tmp_path, cli):
    folder = tmp_path / "s.npy"
    folder.mkdir()
    status, err = cli("sample", trained, "--num", "5", "--out", folder)
    assert status == 2 and "existing directory" in one_error_line(err)
    blocker = tmp_path / "afile"
    blocker.write_text("keep")
    status, err = cli("sample", trained, "--num", "5", "--out", blocker / "x.npy")
    assert status == 2 and str(blocker) in one_error_line(err)
    assert blocker.read_text() == "keep"


def test_sample_png_into_a_non_empty_folder_is_refused(tmp_path):
    out = tmp_path / "pngs"
    out.mkdir()
    (out / "000000.png").write_bytes(b"earlier")
    with pytest.raises(ConfigError, match="not empty"):
        _sample_format(out, None, True)
    assert _sample_format(tmp_path / "fresh", None, True) == "png"
    assert (out / "000000.png").read_bytes() == b"earlier"


@pytest.mark.parametrize("content", ["{broken", "[1, 2]", '{"train": 5}', "\xff\xfe"])
def test_eval_with_a_broken_metrics_json_writes_it_anew(trained, cli, content):
    (trained / "metrics.json").write_text(content, encoding="latin-1")
    status, err = cli("eval", trained)
    assert status == 0, err
    assert any("unreadable; the evaluation does without it" in line for line in err)
    evaluation = trained / "evals" / "00000-eval" / "metrics.json"
    assert json.loads(evaluation.read_text())["train"]["steps"] == 2


def test_an_internal_bug_keeps_its_traceback_and_says_so(fast_config, cli, monkeypatch):
    import mfm_core.runner.assembly.validate as validate

    def broken(*args, **kwargs):
        return np.zeros(2)[5]

    monkeypatch.setattr(validate, "validate_config", broken)
    status, err = cli("validate", fast_config)
    assert status == 1
    assert err[0].startswith("Traceback") and "IndexError" in "\n".join(err)
    assert err[-1].startswith("error: this is a bug in mfm")

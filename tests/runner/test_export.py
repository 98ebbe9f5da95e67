"""``mfm export``: a run's weights as a safetensors file with its config and provenance, which
``mfm sample``, ``mfm eval`` and ``load_run`` take in place of the run; ``--step``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from mfm_core.api import load_run
from mfm_core.cli import main
from mfm_core.config import read_toml
from mfm_core.runner.rundir.checkpoint import checkpoint_path, load_checkpoint
from mfm_core.runner.rundir.provenance import read_provenance
from mfm_core.runner.rundir.weights_file import read_weights_file
from mfm_core.testing import train_briefly


def test_export_writes_the_checkpoints_weights_with_config_and_provenance(tiny_run, capsys):
    out = tiny_run.parent / "shared.safetensors"
    assert main(["export", str(tiny_run), "--step", "30", "--out", str(out)]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {out}: the raw weights of step 30 (")
    state = load_checkpoint(checkpoint_path(tiny_run / "checkpoints", 30))
    with safe_open(str(out), framework="pt") as handle:
        metadata = handle.metadata()
        assert set(handle.keys()) == set(state["model"])
        for key, value in state["model"].items():
            assert torch.equal(handle.get_tensor(key), value), key
    assert read_weights_file(out).config == read_toml(tiny_run / "config.toml")
    assert metadata["mfm.config"] == (tiny_run / "config.toml").read_text()
    assert json.loads(metadata["mfm.weights"]) == {"kind": "raw", "step": 30}
    assert json.loads(metadata["mfm.provenance"]) == read_provenance(tiny_run)
    assert read_provenance(tiny_run)  # the run has sessions to carry

    shared = load_run(out)
    assert shared.step == 30
    for key, value in shared.model.state_dict().items():
        assert torch.equal(value, state["model"][key]), key


def test_sample_from_the_file_or_from_the_run_at_that_step_is_the_same(tiny_run, capsys):
    out = tiny_run.parent / "shared.safetensors"
    main(["export", str(tiny_run), "--step", "30", "--out", str(out)])
    for source, name in ((str(out), "a.npy"), (str(tiny_run), "b.npy")):
        main(
            ["sample", source, "--step", "30", "--num", "20", "--out", str(tiny_run.parent / name)]
        )
        assert "with the raw weights at step 30" in capsys.readouterr().out
    np.testing.assert_array_equal(
        np.load(tiny_run.parent / "a.npy"), np.load(tiny_run.parent / "b.npy")
    )
    main(["sample", str(tiny_run), "--num", "20", "--out", str(tiny_run.parent / "c.npy")])
    assert "with the raw weights at step 40" in capsys.readouterr().out


def test_a_step_without_a_checkpoint_and_eval_of_a_file_without_out_are_refused(tiny_run, capsys):
    assert main(["sample", str(tiny_run), "--step", "35", "--num", "5", "--out", "x.npy"]) == 2
    assert "has no checkpoint of step 35; its checkpoints are of steps 30, 40" in (
        capsys.readouterr().err
    )
    out = tiny_run.parent / "shared.safetensors"
    main(["export", str(tiny_run), "--out", str(out)])
    assert main(["eval", str(out)]) == 2
    assert "give --out" in capsys.readouterr().err
    assert main(["sample", str(out), "--step", "30", "--num", "5", "--out", "x.npy"]) == 2
    assert "holds the weights of step 40 only" in capsys.readouterr().err
    assert main(["export", str(tiny_run), "--out", str(tiny_run.parent / "w.pt")]) == 2
    assert "must end in .safetensors" in capsys.readouterr().err


def test_eval_of_a_file_evaluates_its_weights_into_out(tiny_run, tmp_path, capsys):
    out = tiny_run.parent / "shared.safetensors"
    main(["export", str(tiny_run), "--out", str(out)])
    small = ["eval.solvers=[{ name = 'euler', steps = 1 }]", "eval.num_samples=30"]
    assert main(["eval", str(out), *small, "--out", str(tmp_path / "e1")]) == 0
    assert main(["eval", str(tiny_run), *small, "--out", str(tmp_path / "e2")]) == 0
    printed = capsys.readouterr().out
    assert f"mfm eval {out} eval.num_samples=5000 --out NEW_FOLDER" in printed
    assert f"{out}/evals" not in printed and f"{out}/config.toml" not in printed
    first, second = (json.loads((tmp_path / e / "metrics.json").read_text()) for e in ("e1", "e2"))
    assert first["weights"] == second["weights"] == {"kind": "raw", "step": 40}
    assert first["samples"] == second["samples"]


def test_export_takes_the_ema_weights_unless_raw(tmp_path):
    run = train_briefly("train.ema=0.5", "eval.solvers=[]", steps=2, directory=tmp_path)
    ema, raw = tmp_path / "ema.safetensors", tmp_path / "raw.safetensors"
    main(["export", str(run.run_dir), "--out", str(ema)])
    main(["export", str(run.run_dir), "--raw", "--out", str(raw)])
    state = load_checkpoint(checkpoint_path(run.run_dir / "checkpoints", 2))
    with safe_open(str(ema), framework="pt") as e, safe_open(str(raw), framework="pt") as r:
        assert json.loads(e.metadata()["mfm.weights"])["kind"] == "ema"
        assert json.loads(r.metadata()["mfm.weights"]) == {"kind": "raw", "step": 2}
        key = next(iter(state["model"]))
        assert torch.equal(r.get_tensor(key), state["model"][key])
        assert torch.equal(e.get_tensor(key), state["ema"]["module." + key])
        assert not torch.equal(e.get_tensor(key), r.get_tensor(key))


def test_sample_applies_overrides_to_the_solver_of_solver(tiny_run, capsys):
    out = str(tiny_run.parent / "s.npy")
    nfe = {}
    for name, args in (
        ("default heun", ["--solver", "heun"]),
        ("heun, 2 steps", ["--solver", "heun", "solver.steps=2"]),
        ("table", ["--solver", '{name="heun", steps=2}']),
    ):
        assert main(["sample", str(tiny_run), "--num", "5", "--out", out, *args]) == 0
        nfe[name] = capsys.readouterr().out.split("(NFE ")[1].split(")")[0]
    assert nfe["heun, 2 steps"] == nfe["table"] != nfe["default heun"]


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({"mfm.config": "x = [[["}, "not valid TOML"),
        ({"mfm.config": "x = 1", "mfm.weights": "{not json"}, "unreadable metadata"),
    ],
)
def test_a_weights_file_with_broken_metadata_is_one_clear_error(tmp_path, metadata, message):
    from safetensors.torch import save_file

    from mfm_core.errors import MfmError
    from mfm_core.runner.rundir.weights_file import read_weights_file

    path = tmp_path / "w.safetensors"
    save_file({"a": torch.zeros(1)}, str(path), metadata=metadata)
    with pytest.raises(MfmError, match=message):
        read_weights_file(path)

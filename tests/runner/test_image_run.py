"""Image runs on tiny labelled data: grids and uint8 samples, labels and guidance, gradient
accumulation and coupling batches that span steps, exact resume, and `mfm sample` output."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from mfm_core.cli import main
from mfm_core.config import load_config
from mfm_core.runner.assembly.pipeline import build_pipeline
from mfm_core.runner.evaluation.sampling import sample_run
from mfm_core.runner.run import resume_run, start_run
from mfm_core.runner.rundir.checkpoint import list_checkpoints, load_checkpoint
from mfm_core.runner.rundir.layout import read_log


def losses(run_dir):
    return [(r["step"], r["loss"]) for r in read_log(run_dir)]


def test_image_run_writes_grids_and_uint8_samples_and_no_w2(tiny_plugin, image_config, tmp_path):
    run_dir = start_run(image_config, ["eval.grid_every=6"], tmp_path / "runs", progress=False)
    assert [step for step, _ in losses(run_dir)] == list(range(1, 13))
    # panels of one row per class (4) of one 8-pixel image enlarged 4x (32 px, 4 * 33 - 1 px
    # high), under a caption: data, euler 1, euler 2
    for name in ("grids/step-00000006.png", "grids/step-00000012.png", "samples.png"):
        with Image.open(run_dir / name) as picture:
            assert picture.mode == "RGB" and picture.size[1] == 131 + 14 + 2 * 4, name
            assert picture.size[0] >= 3 * 32 + 4 * 4
    assert sorted(p.name for p in (run_dir / "grids").iterdir()) == [
        "step-00000006.png",
        "step-00000012.png",
    ]
    with np.load(run_dir / "samples.npz") as saved:
        assert sorted(saved.files) == ["euler-1", "euler-2", "reference"]
        for name in saved.files:
            assert saved[name].dtype == np.uint8 and saved[name].shape == (4, 8, 8, 3)
        # right of the class labels: "class 0" ... "class 3" and a gap
        draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
        left = 4 + max(math.ceil(draw.textlength(f"class {k}")) + 4 for k in range(4))
        with Image.open(run_dir / "samples.png") as picture:
            data_panel = np.asarray(picture)[14 + 4 : 14 + 4 + 131, left : left + 32]
        # each class's cell is one of the reference images, enlarged, or white (none drawn)
        enlarged = [img.repeat(4, 0).repeat(4, 1) for img in saved["reference"]]
        cells = [data_panel[33 * row : 33 * row + 32] for row in range(4)]
        assert all(
            (cell == 255).all() or any(np.array_equal(cell, e) for e in enlarged) for cell in cells
        )
        assert sum(not (cell == 255).all() for cell in cells) >= 2
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert [(r["solver"], r["steps"], r["nfe"]) for r in metrics["samples"]] == [
        ("euler", 1, 1),
        ("euler", 2, 2),
    ]
    assert all("w2" not in row for row in metrics["samples"])  # no OT on pixels by default
    assert metrics["final_loss"] > 0
    log = (run_dir / "run.log").read_text()
    assert "parameters)" in log and "coupled 8 at a time" in log


SPANNING = ["train.grad_accum=2", "train.coupling_batch=16", "train.checkpoint_every=3"]


@pytest.mark.parametrize("overlap", ["on", "off"])
def test_resume_is_exact_with_pairs_left_over_from_a_coupling(
    tiny_plugin, image_config, tmp_path, overlap
):
    # 8 per step in micro-batches of 4; 16 coupled at a time feed two steps; 64 images make
    # 4 coupling batches an epoch, so 12 steps cross an epoch. Step 3 leaves 8 coupled pairs;
    # coupling in the background, the next 16 are coupled already and saved with them.
    config = [*SPANNING, f"train.overlap_coupling={overlap!r}"]
    whole = start_run(image_config, config, tmp_path / "a", progress=False)
    part = start_run(image_config, config, tmp_path / "b", progress=False)
    checkpoint = load_checkpoint(part / "checkpoints" / "step-00000003.pt")
    mine = checkpoint["ranks"][0]
    x0, x1, cond = mine["pairs"]
    assert x0.shape == x1.shape == (8, 3, 8, 8) and cond.shape == (8,)
    if overlap == "on":
        assert mine["stream"]["position"] == [0, 3]
        assert [tuple(t.shape) for t in mine["next_pairs"]] == [(16, 3, 8, 8)] * 2 + [(16,)]
    else:
        assert mine["stream"]["position"] == [0, 2] and mine["next_pairs"] is None
    for step, path in list_checkpoints(part / "checkpoints"):
        if step > 3:
            path.unlink()
    resume_run(part, [], progress=False)
    assert losses(part) == losses(whole)
    assert len(losses(whole)) == 12
    metrics = [json.loads((d / "metrics.json").read_text()) for d in (whole, part)]
    assert metrics[0]["final_loss"] == metrics[1]["final_loss"]
    with np.load(whole / "samples.npz") as a, np.load(part / "samples.npz") as b:
        assert np.array_equal(a["euler-2"], b["euler-2"])


def test_coupling_in_the_background_trains_the_same_run(tiny_plugin, image_config, tmp_path):
    runs = {
        overlap: start_run(
            image_config,
            [*SPANNING, f"train.overlap_coupling={overlap!r}"],
            tmp_path / overlap,
            progress=False,
        )
        for overlap in ("on", "off")
    }
    assert losses(runs["on"]) == losses(runs["off"])
    assert "coupling in the background" in (runs["on"] / "run.log").read_text()
    assert "coupling in the background" not in (runs["off"] / "run.log").read_text()
    weights = [load_checkpoint(runs[o] / "checkpoints" / "step-00000012.pt") for o in runs]
    for name, tensor in weights[0]["model"].items():
        assert torch.equal(tensor, weights[1]["model"][name]), name


def test_options_change_the_training(tiny_plugin, image_config, tmp_path):
    plain = losses(start_run(image_config, [], tmp_path / "a", progress=False))
    for override in ("train.cond_drop=0.0", "train.grad_accum=2", "train.coupling_batch=16"):
        changed = losses(start_run(image_config, [override], tmp_path / "b", progress=False))
        assert changed != plain, override


def test_run_killed_with_sigkill_resumes_to_the_same_losses(
    tiny_plugin, image_config, plugin_env, tmp_path
):
    long = ["train.steps=150", "train.checkpoint_every=10", *SPANNING[:2]]
    whole = start_run(image_config, long, tmp_path / "a", progress=False)
    command = [sys.executable, "-m", "mfm_core", "run", str(image_config), *long]
    process = subprocess.Popen(
        [*command, "--runs", str(tmp_path / "b"), "--quiet"],
        env=plugin_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    run_dir = tmp_path / "b" / "00000-tinyimg"
    deadline = time.monotonic() + 120
    while not list_checkpoints(run_dir / "checkpoints") and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    killed_at = list_checkpoints(run_dir / "checkpoints")[0][0]
    assert 0 < killed_at < 150, "the run finished before it could be killed"
    resume_run(run_dir, [], progress=False)
    # The killed run computed its first steps in another process: with several CPU threads,
    # torch's reductions may then differ in the last bits (seen at 1e-7 relative), so the
    # comparison across processes allows rounding; a wrong random state or data position would
    # change the losses entirely. Resumes within one process are compared exactly above.
    resumed, reference = losses(run_dir), losses(whole)
    assert [step for step, _ in resumed] == [step for step, _ in reference]
    assert [loss for _, loss in resumed] == pytest.approx([loss for _, loss in reference], rel=1e-5)


@pytest.fixture
def image_run(tiny_plugin, image_config, tmp_path):
    return start_run(image_config, ["train.steps=2"], tmp_path / "runs", progress=False)


def test_sample_writes_png_files(image_run, tmp_path):
    out = tmp_path / "pngs"
    result = sample_run(image_run, [], 5, out, batch=2, guidance=2.0)
    assert result.nfe == 2 and result.path == out
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"{i:06d}.png" for i in range(5)]
    with Image.open(out / "000004.png") as picture:
        assert picture.size == (8, 8) and picture.mode == "RGB"


def test_sample_writes_one_uint8_npz_for_fid_tools(image_run, tmp_path):
    result = sample_run(image_run, [], 5, tmp_path / "s", fmt="npz", batch=3, label=2)
    assert result.path == tmp_path / "s" / "samples.npz"
    with np.load(result.path) as data:
        assert data["arr_0"].dtype == np.uint8 and data["arr_0"].shape == (5, 8, 8, 3)
        assert data["labels"].tolist() == [2] * 5
    again = sample_run(image_run, [], 5, tmp_path / "t.npz", batch=5, label=2)
    with np.load(result.path) as a, np.load(again.path) as b:
        assert np.array_equal(a["arr_0"], b["arr_0"])  # batching does not change samples
    other = sample_run(image_run, [], 5, tmp_path / "u.npz", label=2, guidance=0.0)
    with np.load(result.path) as a, np.load(other.path) as b:
        assert not np.array_equal(a["arr_0"], b["arr_0"])  # guidance changes them


def test_sample_command_line(image_run, tmp_path, capsys):
    code = main(
        ["sample", str(image_run), "--num", "3", "--out", str(tmp_path / "o"), "--solver", "euler"]
    )
    out, _ = capsys.readouterr()
    assert code == 0 and out.strip() == (
        f"wrote 3 samples to {tmp_path / 'o'} (NFE 8) with the EMA weights (decay 0.9, "
        "effective 0.1818) at step 2"
    )
    assert len(list((tmp_path / "o").glob("*.png"))) == 3
    code = main(["sample", str(image_run), "--num", "3", "--out", "x", "--label", "9"])
    _, err = capsys.readouterr()
    assert code == 2 and err == "error: --label must be in [0, 4), got 9\n"
    (tmp_path / "file").write_text("")
    code = main(["sample", str(image_run), "--num", "3", "--out", str(tmp_path / "file")])
    _, err = capsys.readouterr()
    assert code == 2 and err.endswith("PNG files go into a directory; this is a file\n")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.steps=1", None),
        ("data.source.shape=[3,4,4]", "$.data.source: samples of shape (3, 4, 4) do not match"),
        ("train.grad_accum=3", "$.train.grad_accum: the batch of 8 per process does not split"),
        ("train.coupling_batch=6", "$.train.coupling_batch: 6 is not a multiple of the micro"),
        ("data.target.num_classes=0", "$.model.num_classes: the model is class-conditional, but"),
        ("data.target.size=4", "$.data.target: 4 samples give 4 per process over 1 processes"),
    ],
)
def test_bad_image_inputs_are_one_line_and_exit_2(
    tiny_plugin, image_config, tmp_path, capsys, override, message
):
    if message is None:  # no root at all
        text = image_config.read_text().replace('root = "unused"\n', "")
        image_config.write_text(text)
        message = "$.data.root: the 'tiny-images' data set ($.data.target) reads its files"
    code = main(["run", str(image_config), override, "--runs", str(tmp_path / "r"), "--quiet"])
    _, err = capsys.readouterr()
    assert code == 2
    assert err.startswith(f"error: {message}"), err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_data_root_goes_to_data_sets_whose_table_does_not_set_it(tiny_plugin, image_config):
    config = load_config(image_config, ["data.root=/data/a"])
    assert build_pipeline(config).target.root == "/data/a"
    config = load_config(image_config, ["data.root=/data/a", "data.target.root=/data/b"])
    assert build_pipeline(config).target.root == "/data/b"
    assert not hasattr(build_pipeline(config).source, "root")


def test_conditional_training_passes_labels_to_coupler_and_model(tiny_plugin, image_config):
    from mfm_core.runner.assembly.session import RunSession
    from mfm_core.runner.training.loop import Trainer

    config = load_config(image_config, ["train.cond_drop=0.5"])
    pipeline = build_pipeline(config)
    seen = []
    coupler = pipeline.coupler

    def recording(x0, x1, cond=None):
        seen.append(cond)
        return coupler(x0, x1, cond)

    object.__setattr__(pipeline, "coupler", recording)
    trainer = Trainer(RunSession(config=config, pipeline=pipeline, run_dir=None))
    x0, x1, cond = trainer.feed.micro_batch()
    assert seen[0] is not None and seen[0].shape == (8,)
    assert set(seen[0].tolist()) <= {0, 1, 2, 3}
    calls = []
    model_forward = trainer.model.forward

    def forward(x, t, cond=None):
        calls.append(cond)
        return model_forward(x, t, cond)

    trainer.model.forward = forward
    for _ in range(4):
        trainer.micro_loss()
    dropped = torch.cat(calls)
    assert (dropped == -1).any() and (dropped >= 0).any()  # cond_drop = 0.5 nulls some labels


def test_bf16_autocast_trains_on_the_cpu(tiny_plugin, image_config, tmp_path):
    fp32 = losses(start_run(image_config, ["train.steps=3"], tmp_path / "a", progress=False))
    bf16 = start_run(
        image_config, ["train.steps=3", "train.precision=bf16"], tmp_path / "b", progress=False
    )
    assert all(np.isfinite(loss) for _, loss in losses(bf16))
    assert losses(bf16) != fp32 and losses(bf16)[0][1] == pytest.approx(fp32[0][1], rel=0.05)

"""The shipped image configs: the paper's settings, and two training steps of each on CPU
with the smoke overrides of its header, on tiny files in the real data formats."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from mfm_core.config import load_config
from mfm_core.runner.evaluation.sampling import sample_run
from mfm_core.runner.run import start_run

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "tomlconfigs"


def _formats():
    spec = importlib.util.spec_from_file_location("formats", ROOT / "tests/datasets/formats.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SMOKE = [
    "train.steps=2",
    "train.batch_size=8",
    "model.channels=32",
    "model.channel_mult=[1,2]",
    "model.num_res_blocks=1",
    "train.device=cpu",
    "train.log_every=1",
    "eval.grid=4",
    "eval.loss_batches=1",
    "eval.solvers=[{name='euler',steps=1},{name='euler',steps=2}]",
]
# The smoke overrides, the same for every config: a 64x64 U-Net of two levels has no
# 16x16 level (attention there is skipped with a warning), a 32-channel level gets one head.
CASES = {
    "imagenet32": (32, ["model.attention_resolutions=[16]"]),
    "imagenet64": (64, ["model.attention_resolutions=[16]"]),
    "cifar10": (32, ["model.attention_resolutions=[16]"]),
}


def write_data(name: str, root: Path) -> None:
    formats = _formats()
    if name == "cifar10":
        formats.write_cifar10(root, 8)
    else:
        formats.write_imagenet_npz(root, CASES[name][0], 1, 10)  # all ten files, 10 images


@pytest.mark.parametrize(
    ("name", "batch", "per_gpu", "model"),
    [
        ("imagenet32", 1024, "256", (256, [1, 2, 2, 2], 3, [16, 8])),
        ("imagenet64", 800, "50", (192, [1, 2, 3, 4], 3, [32, 16, 8])),
        ("cifar10", 128, None, (128, [1, 2, 2, 2], 2, [16])),
    ],
)
def test_shipped_image_configs_hold_the_papers_settings(name, batch, per_gpu, model):
    path = CONFIGS / f"{name}.toml"
    config = load_config(path)
    params = config.model.params
    got = (params["channels"], params["channel_mult"], params["num_res_blocks"])
    assert (*got, params["attention_resolutions"]) == model
    assert config.train.batch_size == batch and config.coupler.name == "exact"
    assert config.path.params == {"sigma_min": 0.0} and config.train.ema == 0.9999
    assert config.solver.name == "dopri5" and config.eval.metrics == []
    header = path.read_text().split("\n[")[0]
    for words in ("Data:", "Sized for:", "ESTIMATE", "GPU-hours", "torchrun", "smoke"):
        assert words in header, words
    if per_gpu:
        assert f"{per_gpu} per GPU" in header


@pytest.mark.parametrize(
    ("name", "train", "model"),
    [
        # MFM appendix (as quoted) steps; FM Table 3 lr schedule, warm-up, dropout
        ("imagenet32", (438_000, 1e-4, 20_000, "polynomial", "auto"), {"dropout": 0.0}),
        ("imagenet64", (957_000, 1e-4, 5000, "constant", "auto"), {"dropout": 0.0}),
        # TorchCFM's train_cifar10.py and UNetModelWrapper defaults
        (
            "cifar10",
            (400_000, 2e-4, 5000, "constant", "fp32"),
            {
                "dropout": 0.1,
                "head_channels": 64,
                "resblock_updown": False,
                "use_scale_shift_norm": False,
            },
        ),
    ],
)
def test_shipped_image_configs_hold_their_sources_schedules(name, train, model):
    path = CONFIGS / f"{name}.toml"
    config = load_config(path)
    t = config.train
    assert (t.steps, t.lr, t.warmup_steps, t.lr_schedule, t.precision) == train
    assert {key: config.model.params[key] for key in model} == model
    header = path.read_text().split("\n[")[0]
    assert f"{t.steps:,} steps" in header  # the cost estimate uses the configured steps
    assert "our choice" in header


@pytest.mark.parametrize("name", sorted(CASES))
def test_two_training_steps_of_each_image_config_on_cpu(name, tmp_path):
    resolution, overrides = CASES[name]
    write_data(name, tmp_path / "data")
    run_dir = start_run(
        CONFIGS / f"{name}.toml",
        [f"data.root={tmp_path / 'data'}", *SMOKE, *overrides],
        tmp_path / "runs",
        progress=False,
    )
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2] and all(np.isfinite(r["loss"]) for r in log)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["train"]["steps"] == 2 and np.isfinite(metrics["final_loss"])
    with np.load(run_dir / "samples.npz") as saved:
        assert saved["euler-2"].shape == (4, resolution, resolution, 3)
        assert saved["euler-2"].dtype == np.uint8
    assert (run_dir / "samples.png").stat().st_size > 1000


def test_class_conditional_cifar10_with_guidance_trains_and_samples_one_class(tmp_path):
    write_data("cifar10", tmp_path / "data")
    overrides = [
        f"data.root={tmp_path / 'data'}",
        *SMOKE,
        *CASES["cifar10"][1],
        "model.num_classes=10",
        "train.cond_drop=0.5",
        "eval.guidance=2.0",
    ]
    run_dir = start_run(CONFIGS / "cifar10.toml", overrides, tmp_path / "runs", progress=False)
    out = tmp_path / "class3.npz"
    sample_run(run_dir, ["solver.name=euler", "solver.steps=2"], 3, out, label=3, guidance=3.0)
    with np.load(out) as data:
        assert data["arr_0"].shape == (3, 32, 32, 3) and data["labels"].tolist() == [3, 3, 3]

"""A resumed run logs bit-identical losses to an uninterrupted one for image data read through
the DataLoader, with dropout, with every built-in coupler that draws random numbers; the
loader takes its seeds from a generator of its own, so its restart on resume draws nothing from
torch's global generator (which the model's dropout draws from)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from mfm_core.runner.run import resume_run, start_run
from mfm_core.runner.rundir.layout import read_log

ROOT = Path(__file__).resolve().parents[2]


def losses(run_dir: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in read_log(run_dir)]


def interrupted_and_whole(config: Path, overrides: list[str], tmp_path: Path, stop: int, end: int):
    whole = start_run(config, [*overrides, f"train.steps={end}"], tmp_path / "a", progress=False)
    part = start_run(config, [*overrides, f"train.steps={stop}"], tmp_path / "b", progress=False)
    resume_run(part, [f"train.steps={end}"], progress=False)
    return losses(part), losses(whole)


@pytest.mark.parametrize("coupler", ["independent", "sinkhorn", "stable", "heuristic"])
def test_resume_with_dropout_through_the_loader_is_bit_identical(
    tiny_plugin, image_config, tmp_path, coupler
):
    overrides = [
        f"coupler.name={coupler}",
        "model.dropout=0.1",
        "train.checkpoint_every=3",
        "train.log_every=1",
        "data.target.size=256",  # no epoch ends within the run: the loader only restarts
    ]
    resumed, whole = interrupted_and_whole(image_config, overrides, tmp_path, stop=3, end=7)
    assert [step for step, _ in whole] == list(range(1, 8))
    assert resumed == whole


def test_the_loader_draws_nothing_from_the_global_generator(tiny_plugin, image_config):
    from mfm_core.config import load_config
    from mfm_core.runner.assembly.loading import seeded_pipeline
    from mfm_core.runner.training.data import target_stream

    config = load_config(image_config)
    pipeline = seeded_pipeline(config)
    stream = target_stream(
        pipeline.target,
        8,
        torch.Generator(),
        seed=0,
        rank=0,
        world_size=1,
        workers=0,
        pin_memory=False,
    )
    before = torch.get_rng_state()
    stream.start()
    stream.next()
    stream.load_state(stream.state())  # a resume: the loader restarts
    stream.next()
    assert torch.equal(torch.get_rng_state(), before)


def _formats():
    spec = importlib.util.spec_from_file_location("formats", ROOT / "tests/datasets/formats.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


NPZ_IMAGES = """
[data]
source = {{ name = "gaussian", shape = [3, 32, 32] }}
target = {{ name = "imagenet-npz", resolution = 32 }}
root = "{root}"
workers = 0

[coupler]
name = "sinkhorn"

[model]
name = "tiny-field"
dropout = 0.1

[solver]
name = "euler"
steps = 1

[train]
batch_size = 4
lr = 1e-4
seed = 3
device = "cpu"
checkpoint_every = 2
log_every = 1

[eval]
grid = 1
loss_batches = 1
metrics = []
solvers = [{{ name = "euler", steps = 1 }}]
"""


def test_npz_images_with_dropout_resume_bit_identically(tiny_plugin, tmp_path):
    _formats().write_imagenet_npz(tmp_path / "data", 32, 4, 10)
    config = tmp_path / "npz.toml"
    config.write_text(NPZ_IMAGES.format(root=tmp_path / "data"))
    resumed, whole = interrupted_and_whole(config, [], tmp_path, stop=2, end=5)
    assert [step for step, _ in whole] == list(range(1, 6))
    assert resumed == whole


def test_a_fixed_gpu_under_torchrun_is_refused():
    from mfm_core.errors import ConfigError
    from mfm_core.runner.assembly.pipeline import resolve_device

    with pytest.raises(ConfigError, match=r"'cuda:1' would put every torchrun process on one GPU"):
        resolve_device("cuda:1", local_rank=0)
    assert resolve_device("cpu", local_rank=1) == torch.device("cpu")

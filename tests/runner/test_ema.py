"""The trainer's fused EMA update against torch's AveragedModel, updated in lockstep."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from mfm_core.config import load_config
from mfm_core.runner.distributed import Distributed
from mfm_core.runner.pipeline import build_pipeline
from mfm_core.runner.train import Trainer

QUICKSTART = Path(__file__).parents[2] / "tomlconfigs" / "quickstart.toml"


def test_fused_ema_equals_averaged_model_update(tmp_path):
    config = load_config(QUICKSTART, ["model.hidden=[16, 16]", "train.ema=0.9", "train.device=cpu"])
    torch.manual_seed(0)
    trainer = Trainer(build_pipeline(config), config, torch.device("cpu"), tmp_path, Distributed())
    reference = AveragedModel(trainer.model, multi_avg_fn=get_ema_multi_avg_fn(0.9))
    for _ in range(5):
        trainer.train_step()
        reference.update_parameters(trainer.model)
    assert int(trainer.ema.n_averaged) == int(reference.n_averaged) == 5
    ema = trainer.ema.module.state_dict()
    for name, value in reference.module.state_dict().items():
        assert torch.equal(ema[name], value), name
    # The EMA moved away from the weights (it is not a copy) and from its first copy.
    weights = dict(trainer.model.named_parameters())
    assert any(not torch.equal(ema[name], weights[name]) for name in weights)

"""The trainer's fused EMA update against torch's AveragedModel, updated in lockstep."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from mfm_core.config import load_config
from mfm_core.runner.assembly.pipeline import build_pipeline
from mfm_core.runner.assembly.session import RunSession
from mfm_core.runner.training.loop import Trainer
from mfm_core.runner.training.schedules import ema_decay

QUICKSTART = Path(__file__).parents[2] / "tomlconfigs" / "quickstart.toml"


def test_fused_ema_equals_averaged_model_update(tmp_path):
    config = load_config(
        QUICKSTART,
        ["model.hidden=[16, 16]", "train.ema=0.9", "train.ema_warmup=false", "train.device=cpu"],
    )
    torch.manual_seed(0)
    trainer = Trainer(RunSession(config=config, pipeline=build_pipeline(config), run_dir=tmp_path))
    reference = AveragedModel(trainer.model, multi_avg_fn=get_ema_multi_avg_fn(0.9))
    for _ in range(5):
        trainer.train_step()
        reference.update_parameters(trainer.model)
    assert int(trainer.ema.averaged.n_averaged) == int(reference.n_averaged) == 5
    ema = trainer.ema.module.state_dict()
    for name, value in reference.module.state_dict().items():
        assert torch.equal(ema[name], value), name
    # The EMA moved away from the weights (it is not a copy) and from its first copy.
    weights = dict(trainer.model.named_parameters())
    assert any(not torch.equal(ema[name], weights[name]) for name in weights)


def test_ema_warmup_follows_the_ramp_by_hand(tmp_path):
    """decay_s = min(ema, (1 + s) / (10 + s)) for the update after step s (0-based); the first
    update copies the weights."""
    config = load_config(
        QUICKSTART, ["model.hidden=[16, 16]", "train.ema=0.999", "train.device=cpu"]
    )
    torch.manual_seed(0)
    trainer = Trainer(RunSession(config=config, pipeline=build_pipeline(config), run_dir=tmp_path))
    expected = None
    for step in range(6):
        trainer.train_step()
        weights = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
        if expected is None:
            expected = weights
        else:
            decay = min(0.999, (1 + step) / (10 + step))
            expected = {k: decay * expected[k] + (1 - decay) * weights[k] for k in weights}
    ema = dict(trainer.ema.module.named_parameters())
    for name, value in expected.items():
        torch.testing.assert_close(ema[name], value, rtol=1e-6, atol=1e-7)
    record = trainer.weights_record()
    assert record == {"kind": "ema", "decay": 0.999, "effective_decay": 6 / 15, "step": 6}


def test_ema_warmup_reaches_the_full_decay_and_can_be_switched_off():
    config = load_config(QUICKSTART, ["train.ema=0.999"]).train
    assert ema_decay(config, 0) == 0.1
    assert ema_decay(config, 300) == 301 / 310
    assert ema_decay(config, 8989) < 0.999 and ema_decay(config, 8991) == 0.999
    off = load_config(QUICKSTART, ["train.ema=0.999", "train.ema_warmup=false"]).train
    assert ema_decay(off, 0) == 0.999


def test_a_restored_ema_continues_as_the_uninterrupted_one():
    """Saved after 3 updates and loaded into a fresh Ema, the average goes on by lerp (it does
    not restart by copying the weights)."""
    from mfm_core.runner.training.ema import Ema

    config = load_config(QUICKSTART, ["train.ema=0.9", "train.ema_warmup=false"]).train
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 3)
    whole, part = Ema(model, config), Ema(model, config)
    for step in range(3):
        with torch.no_grad():
            model.weight.add_(1.0)
        whole.update(step)
        part.update(step)
    restored = Ema(model, config)
    restored.load_state_dict(part.state_dict())
    for step in range(3, 5):
        with torch.no_grad():
            model.weight.add_(1.0)
        whole.update(step)
        restored.update(step)
    assert torch.equal(whole.module.weight, restored.module.weight)
    assert not torch.equal(whole.module.weight, model.weight)  # an average, not a copy

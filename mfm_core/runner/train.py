"""The training loop: sample, couple, regress onto the path's velocity; checkpoint; resume."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from mfm_core.config import TrainConfig
from mfm_core.errors import CheckpointError, MfmError
from mfm_core.runner.checkpoint import load_latest, save_checkpoint
from mfm_core.runner.pipeline import Pipeline
from mfm_core.runner.rundir import CHECKPOINTS, LOG_FILE, truncate_log


def draw_batch(
    pipeline: Pipeline, batch_size: int, generator: torch.Generator, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """A minibatch of noise and data, drawn on the CPU (reproducible on any device)."""
    x0 = pipeline.source.sample(batch_size, generator)
    x1 = pipeline.target.sample(batch_size, generator)
    return x0.to(device, non_blocking=True), x1.to(device, non_blocking=True)


def flow_matching_loss(
    pipeline: Pipeline,
    model: torch.nn.Module,
    x0: torch.Tensor,
    x1: torch.Tensor,
    generator: torch.Generator,
) -> torch.Tensor:
    """The joint CFM loss on one minibatch: couple, then
    mean over pairs of ||v(x_t, t) - u_t||^2 (squared norm summed over sample dimensions),
    with t ~ U[0, 1] drawn per pair."""
    x0, x1, _ = pipeline.coupler(x0, x1).pairs(x0, x1)
    t = torch.rand(len(x0), generator=generator).to(x0.device)
    sample = pipeline.path.sample(x0, x1, t)
    residual = model(sample.x_t, sample.t) - sample.u_t
    return residual.pow(2).flatten(1).sum(1).mean()


def load_weights(module: torch.nn.Module, weights: dict[str, Any], run_dir: Path) -> None:
    """Load a checkpoint's weights; a model that does not match them is a clear error."""
    try:
        module.load_state_dict(weights)
    except RuntimeError as exc:
        detail = str(exc).strip().splitlines()[-1].strip()  # the mismatch itself
        raise CheckpointError(
            f"the checkpoints of {run_dir} do not fit the model the config now builds "
            f"(did an override change the model?): {detail}"
        ) from None


def lr_factor(config: TrainConfig, step: int) -> float:
    """The learning rate at ``step`` relative to ``config.lr``: a linear warmup, then constant
    or a cosine decay to zero at ``config.steps``."""
    warmup = config.warmup_steps
    if step < warmup:
        return (step + 1) / warmup
    if config.lr_schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, config.steps - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@contextlib.contextmanager
def stop_requests() -> Iterator[list[int]]:
    """While training, SIGINT and SIGTERM only record the signal, so the current step ends
    cleanly and is checkpointed before the run stops (a signal mid-update would save a
    half-updated model). Outside the main thread signals cannot be caught; nothing changes."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda number, _frame: received.append(number))
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class Trainer:
    """Owns the model, optimizer, EMA and random state of a run; saves and restores them."""

    def __init__(
        self, pipeline: Pipeline, config: TrainConfig, device: torch.device, run_dir: Path
    ) -> None:
        self.pipeline = pipeline
        self.config = config
        self.device = device
        self.run_dir = run_dir
        self.model = pipeline.model.to(device)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(config, step)
        )
        self.ema = (
            AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(config.ema))
            if config.ema > 0
            else None
        )
        self.generator = torch.Generator().manual_seed(config.seed)
        self.step = 0
        self.elapsed = 0.0  # seconds of training, summed over every session of the run

    @property
    def eval_model(self) -> torch.nn.Module:
        """The EMA weights when EMA is on, else the trained weights."""
        return self.ema.module if self.ema is not None else self.model

    def state(self) -> dict[str, Any]:
        state = {
            "step": self.step,
            "elapsed": self.elapsed,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
        }
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        load_weights(self.model, state["model"], self.run_dir)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if self.ema is not None:
            if "ema" not in state:
                raise CheckpointError(
                    f"the checkpoints of {self.run_dir} hold no EMA weights, but train.ema is "
                    "set; resume without changing train.ema"
                )
            load_weights(self.ema, state["ema"], self.run_dir)
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.step = int(state["step"])
        self.elapsed = float(state["elapsed"])

    def resume(self, logger: logging.Logger) -> None:
        """Continue from the newest usable checkpoint; later log lines are dropped."""
        state, path, problems = load_latest(self.run_dir / CHECKPOINTS)
        for problem in problems:
            logger.warning(f"warning: skipped {problem}")
        self.load_state(state)
        truncate_log(self.run_dir, self.step)
        logger.info(f"resumed from {path} at step {self.step}")

    def save(self) -> Path:
        return save_checkpoint(
            self.run_dir / CHECKPOINTS, self.step, self.state(), self.config.keep_checkpoints
        )

    def train_step(self) -> float:
        self.model.train()
        x0, x1 = draw_batch(self.pipeline, self.config.batch_size, self.generator, self.device)
        loss = flow_matching_loss(self.pipeline, self.model, x0, x1, self.generator)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        self.step += 1
        return loss.item() if self.step % self.config.log_every == 0 else float("nan")

    def train(self, logger: logging.Logger, progress: bool = True) -> None:
        """Train up to ``config.steps``, logging and checkpointing; Ctrl-C or SIGTERM ends
        the current step, saves a checkpoint and stops with a message saying how to resume."""
        config = self.config
        start = time.perf_counter() - self.elapsed
        bar = tqdm(
            total=config.steps,
            initial=self.step,
            unit="step",
            disable=not progress,
            dynamic_ncols=True,
            desc="train",
        )
        try:
            with open(self.run_dir / LOG_FILE, "a") as log, stop_requests() as stop:
                while self.step < config.steps and not stop:
                    lr = self.optimizer.param_groups[0]["lr"]
                    loss = self.train_step()
                    if self.step % config.log_every == 0:
                        if not math.isfinite(loss):
                            raise MfmError(
                                f"training diverged at step {self.step} (loss {loss}); "
                                "lower train.lr or set train.grad_clip"
                            )
                        record = {
                            "step": self.step,
                            "loss": loss,
                            "lr": lr,
                            "time": round(time.perf_counter() - start, 4),
                        }
                        log.write(json.dumps(record) + "\n")
                        log.flush()
                        bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
                    bar.update(1)
                    self.elapsed = time.perf_counter() - start
                    if self.step % config.checkpoint_every == 0 or self.step == config.steps:
                        self.save()
        finally:
            bar.close()
        if stop:
            path = self.save()
            raise MfmError(
                f"stopped by signal {stop[0]} at step {self.step}; saved {path}. "
                f"Continue with: mfm-run --resume {self.run_dir}"
            )

"""The training loop: one step (accumulate, update, EMA), then one maintenance gate (log,
checkpoint, stop). Its parts live beside it: the pair feed, the EMA, the schedules, the loss
log, the batch sizes and the signal handling."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import attrs
import torch
from torch.nn.parallel import DistributedDataParallel

from mfm_core.config import to_toml_dict
from mfm_core.errors import CheckpointError, DivergedError, StoppedError
from mfm_core.runner.assembly.experiment import check_resumable
from mfm_core.runner.assembly.loading import load_weights
from mfm_core.runner.assembly.session import RunSession
from mfm_core.runner.rundir.checkpoint import (
    save_checkpoint,
    verified_up_to,
)
from mfm_core.runner.rundir.layout import CHECKPOINTS, LOG_FILE, truncate_log
from mfm_core.runner.tracking import Trackers
from mfm_core.runner.training.data import target_stream
from mfm_core.runner.training.distributed import (
    STEP_STREAM,
    TORCH_STREAM,
    TRAIN_STREAM,
    derived_seed,
    gradient_sync,
)
from mfm_core.runner.training.ema import Ema
from mfm_core.runner.training.feed import CouplingTimes, PairFeed, overlaps_coupling
from mfm_core.runner.training.losslog import FLUSH_EVERY, LossLog
from mfm_core.runner.training.objective import (
    NULL_LABEL,
    autocast_dtype,
    is_conditional,
    regression_loss,
)
from mfm_core.runner.training.progress import progress as progress_bar
from mfm_core.runner.training.schedules import apply_settings, lr_factor
from mfm_core.runner.training.signals import stop_requests
from mfm_core.runner.training.sizes import batch_sizes
from mfm_core.runner.training.state import map_newest, rank_state, restore_rank_state

logger = logging.getLogger(__name__)


class Trainer:
    """The model, optimizer, EMA and pair feed of one process of a run, trained step by step;
    saves and restores them with every process's random state.

    Randomness: the feed draws noise, data and coupling shuffles from its own generator; the
    step draws times and label drops from ``step_generator``; the model's dropout draws from
    torch's global generator (seeded per rank). Each is saved per process in checkpoints.
    """

    def __init__(self, session: RunSession) -> None:
        config, pipeline, dist, device = (
            session.config,
            session.pipeline,
            session.env,
            session.device,
        )
        train = config.train
        self.session = session
        self.config = train
        self.run_dir = session.run_dir
        self.dist = dist
        self.device = device
        self.path = pipeline.path
        self.sizes = batch_sizes(train, dist.world_size)
        self.model = pipeline.model.to(device)
        self.dtype = autocast_dtype(train.precision, device)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=train.lr, weight_decay=train.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(train, step)
        )
        # Only the main process evaluates and saves, so only it keeps the EMA weights.
        self.ema = Ema(self.model, train) if train.ema > 0 and dist.is_main else None
        if dist.rank:  # the weights are initialised alike; dropout must differ per process
            torch.manual_seed(derived_seed(train.seed, TORCH_STREAM, dist.rank))
        generator = torch.Generator().manual_seed(derived_seed(train.seed, TRAIN_STREAM, dist.rank))
        self.step_generator = torch.Generator().manual_seed(
            derived_seed(train.seed, STEP_STREAM, dist.rank)
        )
        self.feed = PairFeed(
            source=pipeline.source,
            coupler=pipeline.coupler,
            stream=target_stream(
                pipeline.target,
                self.sizes.coupling,
                generator,
                seed=train.seed,
                rank=dist.rank,
                world_size=dist.world_size,
                workers=config.data.workers,
                pin_memory=device.type == "cuda",
            ),
            generator=generator,
            sizes=self.sizes,
            device=device,
            conditional=is_conditional(self.model),
            overlap=overlaps_coupling(train.overlap_coupling, pipeline.coupler, dist.active),
        )
        # DDP first, then compile: the order PyTorch documents, so that the compiled graph is
        # split at DDP's buckets and the gradient all-reduce overlaps the backward pass.
        self.ddp = None
        network: torch.nn.Module = self.model
        if dist.active:
            ids = None if device.type == "cpu" else [device.index]
            self.ddp = network = DistributedDataParallel(network, device_ids=ids)
        self.network = torch.compile(network) if train.compile else network
        self.step = 0
        self.elapsed = 0.0  # seconds of training, summed over every session of the run
        self.losses = LossLog(device, dist)
        # Steps, seconds and coupling times of the last call of train() on this process.
        self.session_steps = 0
        self.session_seconds = 0.0
        self.session_times = CouplingTimes()
        self.owned: list[Any] = []  # checkpoints this run wrote or loaded, oldest first
        self.micro_index = 0  # the micro-batch of the step being trained
        self.trackers = Trackers()  # the run sets the configured ones on the main process

    @property
    def eval_model(self) -> torch.nn.Module:
        """The EMA weights when EMA is on, else the trained weights."""
        return self.ema.module if self.ema is not None else self.model

    def weights_record(self) -> dict[str, Any]:
        """Which weights ``eval_model`` is: ``kind`` ``"ema"`` (with the configured ``decay``
        and the ``effective_decay`` of its last update) or ``"raw"``, at ``step``."""
        if self.ema is None:
            return {"kind": "raw", "step": self.step}
        return self.ema.weights_record(self.step)

    def coupling_record(self) -> dict[str, Any] | None:
        """This session's coupling time per step (drawing included) and the part of it the
        step waited for (all of it without the background thread), beside the step's time;
        ``None`` before a step. A resumed run counts only the steps since it resumed."""
        if not self.session_steps:
            return None
        times, steps = self.session_times, self.session_steps
        return {
            "steps": steps,
            "step_ms": round(1000 * self.session_seconds / steps, 3),
            "coupling_ms": round(1000 * times.coupling / steps, 3),
            "waited_ms": round(1000 * times.waited / steps, 3),
            "background": self.feed.overlap,
        }

    # One step.

    def micro_loss(self, needed: int = 1) -> torch.Tensor:
        """The loss of the next micro-batch of pairs (``needed``: micro-batches left in the
        run, this one included)."""
        x0, x1, cond = self.feed.micro_batch(needed)
        t = torch.rand(len(x0), generator=self.step_generator).to(self.device)
        if cond is not None and self.config.cond_drop > 0:
            drop = torch.rand(len(cond), generator=self.step_generator).to(self.device)
            cond = cond.masked_fill(drop < self.config.cond_drop, NULL_LABEL)
        return regression_loss(self.path, self.network, x0, x1, t, cond, self.dtype)

    def train_step(self) -> torch.Tensor:
        """One optimizer step; returns the mean loss of its micro-batches (on the device)."""
        self.network.train()
        self.optimizer.zero_grad(set_to_none=True)
        accum = self.config.grad_accum
        total = torch.zeros((), device=self.device)
        left = (self.config.steps - self.step) * accum

        # Accumulate gradients (DDP averages them over processes at the last backward only).
        for index in range(accum):
            self.micro_index = index
            with gradient_sync(self.ddp, index == accum - 1):
                loss = self.micro_loss(needed=left - index)
                (loss / accum).backward()
            total += loss.detach()

        # Update weights.
        if self.config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self.scheduler.step()

        # Update EMA.
        if self.ema is not None:
            self.ema.update(self.step)
        self.step += 1
        return total / accum

    # The loop.

    def train(self, progress: bool = True, on_step: Callable[[int], None] | None = None) -> None:
        """Train up to ``config.steps``, logging and checkpointing; Ctrl-C or SIGTERM (on any
        process) ends the current step, saves a checkpoint and stops with a message saying how
        to resume. ``on_step(step)`` runs on the main process after every step.

        The losses stay on the device and are read every :data:`FLUSH_EVERY` steps, at each
        checkpoint and at the end (one host synchronisation each): the log lines of those
        steps are written then, and a non-finite loss stops the run then, naming its step.
        """
        config, main = self.config, self.dist.is_main
        start = time.perf_counter() - self.elapsed
        session_start = (self.step, self.elapsed, attrs.evolve(self.feed.times))
        self.trackers.start(*session_start)
        bar = progress_bar(config.steps, initial=self.step, desc="train", enabled=progress and main)
        log = open(self.run_dir / LOG_FILE, "a") if main else contextlib.nullcontext()
        stopping = False
        self.feed.start()
        try:
            with log, stop_requests() as stop:
                while self.step < config.steps and not stopping:
                    lr = self.optimizer.param_groups[0]["lr"]
                    try:
                        loss = self.train_step()
                    except Exception:
                        self._save_before_failed_step(log if main else None, bar)
                        raise
                    self.losses.watch(self.step, loss, self.feed.take_intact())
                    if self.step % config.log_every == 0:
                        seconds = round(time.perf_counter() - start, 4)
                        record = {"step": self.step, "loss": None, "lr": lr, "time": seconds}
                        self.losses.add(record, loss)
                    self.elapsed = time.perf_counter() - start

                    # Maintenance: stop, log, progress, checkpoint, hooks.
                    stopping = self.dist.any(bool(stop))
                    save = self.step % config.checkpoint_every == 0 or self.step == config.steps
                    if save or stopping or self.step % FLUSH_EVERY == 0:
                        self._flush(log if main else None, bar)
                    bar.update(1)  # after the flush: the loss shown is of the newest step read
                    if save:
                        self.save()
                    if main and on_step is not None:
                        on_step(self.step)
        except BaseException:
            self.feed.close(keep_ahead=False)
            raise
        else:
            self.feed.close(keep_ahead=True)
        finally:
            bar.close()
        self.session_steps = self.step - session_start[0]
        self.session_seconds = self.elapsed - session_start[1]
        self.session_times = self.feed.times.since(session_start[2])
        self.check_finite()
        if stopping:
            path = self.save()
            where = f"saved {path}" if path else "saved by the main process"
            cause = f"signal {stop[0]}" if stop else "a signal to another process"
            raise StoppedError(f"stopped by {cause} at step {self.step}; {where}")

    def _save_before_failed_step(self, log: Any, bar: Any) -> None:
        """The coupler failed before the step used any pairs, on one process: save the last
        step, its feed taken back to before that coupling (an exact checkpoint)."""
        if self.micro_index or self.dist.active or not self.feed.rewind_failed_coupling():
            return
        self._flush(log, bar)
        logger.info(f"saved {self.save()} (step {self.step}) before the coupler failed")

    def _flush(self, log: Any, bar: Any) -> None:
        """Write the pending log lines; raise if a loss was not finite."""
        first_bad = self.losses.flush(log)
        self.trackers.training(self.losses.read, self.step, self.feed.times)
        last = self.losses.last
        if log is not None and last is not None:
            bar.set_postfix(loss=f"{last['loss']:.4f} (step {last['step']})", refresh=False)
        if self.losses.changed_seen:
            raise self.feed.changed_inputs_error()
        if first_bad is not None:
            self.check_finite()

    def check_finite(self) -> None:
        """Raise if a loss so far or a weight now is not finite (one host synchronisation):
        a diverged run stops with its last good checkpoint kept, and never saves NaN."""
        first_bad = int(self.losses.first_bad)
        if first_bad >= 0:
            raise DivergedError(
                f"training diverged: the loss at step {first_bad} is not finite; lower "
                f"train.lr (now {self.config.lr:g}) or set train.grad_clip. The checkpoints "
                f"in {self.run_dir / CHECKPOINTS} are from before step {first_bad}"
            )
        modules = [self.model] + ([self.ema.averaged] if self.ema is not None else [])
        tensors = [t for m in modules for t in m.state_dict().values() if t.is_floating_point()]
        if tensors and not torch.stack([torch.isfinite(t).all() for t in tensors]).all():
            raise DivergedError(
                f"training diverged: the weights after step {self.step} are not finite; lower "
                f"train.lr (now {self.config.lr:g}) or set train.grad_clip. Nothing was saved "
                f"for step {self.step}"
            )

    # Train state: save and restore.

    def state(self) -> dict[str, Any] | None:
        """The whole run's state on the main process (``None`` elsewhere); every process
        must call it, since each one's random state is gathered."""
        ranks = self.dist.gather(rank_state(self.feed, self.step_generator, self.device))
        if not self.dist.is_main:
            return None
        state = {
            "step": self.step,
            "elapsed": self.elapsed,
            "world_size": self.dist.world_size,
            "config": to_toml_dict(self.session.config),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "coupler": self.feed.coupler.state_dict(),
            "ranks": ranks,
        }
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        return state

    def save(self) -> Any:
        """Checkpoint the run (every process must call it; the main one writes); a run whose
        loss or weights are not finite raises instead."""
        self.check_finite()
        state = self.state()
        if state is None:
            return None
        return save_checkpoint(
            self.run_dir / CHECKPOINTS, self.step, state, self.config.keep_checkpoints, self.owned
        )

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore this process's part of a checkpoint ``state``."""
        check_resumable(state, to_toml_dict(self.session.config), self.run_dir)
        if state["world_size"] != self.dist.world_size:
            raise CheckpointError(
                f"the checkpoints of {self.run_dir} were written by {state['world_size']} "
                f"processes; resume with the same number (torchrun --nproc_per_node x nodes), "
                f"not {self.dist.world_size}, so every process continues its own data and noise"
            )
        load_weights(self.model, state["model"], self.run_dir)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if "coupler" in state:  # checkpoints of runs before stateful couplers hold none
            self.feed.coupler.load_state_dict(state["coupler"])
        if self.ema is not None:
            if "ema" not in state:
                raise CheckpointError(
                    f"the checkpoints of {self.run_dir} hold no EMA weights, but train.ema is "
                    "set; resume without changing train.ema"
                )
            load_weights(self.ema, state["ema"], self.run_dir)
        restore_rank_state(
            state["ranks"][self.dist.rank], self.feed, self.step_generator, self.device
        )
        self.step = int(state["step"])
        self.elapsed = float(state["elapsed"])
        apply_settings(self.config, self.optimizer, self.scheduler)

    def resume(self) -> None:
        """Continue from the newest usable checkpoint (:func:`map_newest`); later log lines
        are dropped."""
        state, path = map_newest(self.run_dir / CHECKPOINTS, self.dist)
        self.load_state(state)
        if self.dist.is_main:
            self.owned = verified_up_to(self.run_dir / CHECKPOINTS, self.step)
            truncate_log(self.run_dir, self.step)
        logger.info(f"resumed from {path} at step {self.step}")

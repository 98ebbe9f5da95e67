"""The training loop: one step (accumulate, update, EMA), then one maintenance gate (log,
checkpoint, stop). Its parts live beside it: the pair feed, the EMA, the schedules, the loss
log, the batch sizes and the signal handling."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from mfm_core.config import to_toml_dict
from mfm_core.errors import CheckpointError, DivergedError, StoppedError
from mfm_core.runner.assembly.experiment import check_resumable
from mfm_core.runner.assembly.loading import load_weights
from mfm_core.runner.assembly.session import RunSession
from mfm_core.runner.rundir.checkpoint import (
    load_checkpoint,
    newest_loadable,
    save_checkpoint,
    verified_up_to,
)
from mfm_core.runner.rundir.layout import CHECKPOINTS, LOG_FILE, truncate_log
from mfm_core.runner.training.data import target_stream
from mfm_core.runner.training.distributed import (
    STEP_STREAM,
    TORCH_STREAM,
    TRAIN_STREAM,
    derived_seed,
    gradient_sync,
)
from mfm_core.runner.training.ema import Ema
from mfm_core.runner.training.feed import PairFeed, overlaps_coupling
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
        self.session_steps = 0  # steps and seconds trained by this process's train() call
        self.session_seconds = 0.0
        self.owned: list[Any] = []  # checkpoints this run wrote or loaded, oldest first
        self.micro_index = 0  # the micro-batch of the step being trained

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
        times, steps = self.feed.times, self.session_steps
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
        session_start = (self.step, self.elapsed)
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

    def _rank_state(self) -> dict[str, Any]:
        state = {
            **self.feed.state_dict(),
            "step_generator": self.step_generator.get_state(),
            "torch_rng": torch.get_rng_state(),
        }
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return state

    def state(self) -> dict[str, Any] | None:
        """The whole run's state on the main process (``None`` elsewhere); every process
        must call it, since each one's random state is gathered."""
        ranks = self.dist.gather(self._rank_state())
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
        if self.ema is not None:
            if "ema" not in state:
                raise CheckpointError(
                    f"the checkpoints of {self.run_dir} hold no EMA weights, but train.ema is "
                    "set; resume without changing train.ema"
                )
            load_weights(self.ema.averaged, state["ema"], self.run_dir)
        mine = state["ranks"][self.dist.rank]
        self.feed.load_state_dict(mine)
        if "step_generator" in mine:
            self.step_generator.set_state(mine["step_generator"])
        else:
            logger.warning(
                "warning: the checkpoint was written by an earlier mfm that drew the times of "
                "its steps from the coupling's generator; the resumed run draws them from a "
                "generator of their own, so it is not the run an uninterrupted one would be"
            )
        torch.set_rng_state(mine["torch_rng"])
        if self.device.type == "cuda":
            torch.cuda.set_rng_state(mine["cuda_rng"], self.device)
        self.step = int(state["step"])
        self.elapsed = float(state["elapsed"])
        apply_settings(self.config, self.optimizer, self.scheduler)

    def resume(self) -> None:
        """Continue from the newest usable checkpoint. The main process picks it and tells
        the others its path; every process then maps that file itself from the shared file
        system, so no state crosses between processes. Later log lines are dropped."""
        picked: tuple[str, str] = ("", "")
        if self.dist.is_main:
            try:
                path, problems = newest_loadable(self.run_dir / CHECKPOINTS)
                for problem in problems:
                    logger.warning(f"warning: skipped {problem}")
                picked = ("", str(path))
            except CheckpointError as exc:
                picked = (str(exc), "")
        error, path = self.dist.broadcast(picked)
        if error:
            raise CheckpointError(error)
        try:
            state = load_checkpoint(path, mmap=True)
        except CheckpointError as exc:
            raise CheckpointError(
                f"{exc}; on several nodes the run directory must be on a file system every "
                "node reads"
            ) from None
        self.load_state(state)
        if self.dist.is_main:
            self.owned = verified_up_to(self.run_dir / CHECKPOINTS, self.step)
            truncate_log(self.run_dir, self.step)
        logger.info(f"resumed from {path} at step {self.step}")

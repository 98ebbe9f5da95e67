"""The training loop: sample, couple, regress onto the path's velocity; checkpoint; resume."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from mfm_core.config import Config, TrainConfig
from mfm_core.errors import CheckpointError, ConfigError, MfmError
from mfm_core.runner.checkpoint import (
    list_checkpoints,
    load_checkpoint,
    load_latest,
    save_checkpoint,
)
from mfm_core.runner.data import target_stream
from mfm_core.runner.distributed import (
    STEP_STREAM,
    TORCH_STREAM,
    TRAIN_STREAM,
    Distributed,
    derived_seed,
)
from mfm_core.runner.loading import load_weights
from mfm_core.runner.objective import NULL_LABEL, autocast_dtype, is_conditional, regression_loss
from mfm_core.runner.pipeline import Pipeline
from mfm_core.runner.progress import progress as progress_bar
from mfm_core.runner.rundir import CHECKPOINTS, LOG_FILE, truncate_log

logger = logging.getLogger(__name__)

FLUSH_EVERY = 50
"""Steps between two reads of the losses from the device (one host synchronisation): the
log lines of those steps are written then, and a non-finite loss is noticed then."""

Pairs = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]


@attrs.frozen(kw_only=True)
class BatchSizes:
    """``per_rank`` samples per optimizer step on each process, in ``grad_accum`` micro-batches
    of ``micro``; ``coupling`` samples are drawn and coupled together."""

    per_rank: int
    micro: int
    coupling: int


def batch_sizes(config: TrainConfig, world_size: int) -> BatchSizes:
    """Split the global ``train.batch_size``; sizes that do not divide are errors."""
    if config.batch_size % world_size:
        raise ConfigError(
            f"$.train.batch_size: the global batch of {config.batch_size} does not split "
            f"evenly over {world_size} processes"
        )
    per_rank = config.batch_size // world_size
    if per_rank % config.grad_accum:
        raise ConfigError(
            f"$.train.grad_accum: the batch of {per_rank} per process does not split into "
            f"{config.grad_accum} equal micro-batches"
        )
    micro = per_rank // config.grad_accum
    coupling = config.coupling_batch or per_rank
    if coupling % micro:
        raise ConfigError(
            f"$.train.coupling_batch: {coupling} is not a multiple of the micro-batch of "
            f"{micro} (train.batch_size / processes / train.grad_accum)"
        )
    return BatchSizes(per_rank=per_rank, micro=micro, coupling=coupling)


def overlaps_coupling(setting: str, coupler: Any, distributed: bool) -> bool:
    """Whether the trainer couples the next batch in a background thread while the current
    step trains (``train.overlap_coupling``; the pairs and their order are the same either way,
    only the waiting differs).

    ``"off"``: never. ``"on"``: always, except that a coupler of scope ``"global"`` under
    torchrun is an error (its collectives would interleave with the gradients'). ``"auto"``:
    unless the coupler is global under torchrun, or draws from torch's global random generator
    (its ``draws_global_rng``, true unless the coupler says otherwise): those draws would
    interleave with the model's own (dropout) in an order that changes from run to run.
    """
    if setting == "off":
        return False
    is_global = distributed and getattr(coupler, "scope", "local") == "global"
    if setting == "on":
        if is_global:
            raise ConfigError(
                "$.train.overlap_coupling: 'on' cannot couple in the background with a coupler "
                "of scope 'global' under torchrun; set it to 'auto' or 'off'"
            )
        return True
    return not is_global and not getattr(coupler, "draws_global_rng", True)


def ema_decay(config: TrainConfig, step: int) -> float:
    """The EMA decay of the update after optimizer step ``step`` (0-based):
    ``min(ema, (1 + step) / (10 + step))`` with ``ema_warmup``, else ``ema``.

    With the warm-up the average covers about the last tenth of a short run instead of
    reaching back to the random initial weights (at decay 0.999 a 300-step run would
    otherwise evaluate weights that are still three quarters initial); from step
    ``(10 ema - 1) / (1 - ema)`` on (8990 steps for 0.999) the full decay applies.
    """
    if not config.ema_warmup:
        return config.ema
    return min(config.ema, (1.0 + step) / (10.0 + step))


def lr_factor(config: TrainConfig, step: int) -> float:
    """The learning rate at ``step`` relative to ``config.lr``: a linear warmup, then constant,
    a cosine decay to zero at ``config.steps``, or a polynomial decay of power 1 (linear) to
    zero at ``config.steps``."""
    warmup = config.warmup_steps
    if step < warmup:
        return (step + 1) / warmup
    if config.lr_schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, config.steps - warmup))
    if config.lr_schedule == "polynomial":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


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
    """Owns the model, optimizer, EMA, data stream and random state of one process of a run;
    saves and restores them (every process's random state, gathered to the main process).

    Each optimizer step takes ``grad_accum`` micro-batches of coupled pairs from a buffer;
    an empty buffer is refilled by drawing ``coupling`` noise and data samples and coupling
    them at once. With :func:`overlaps_coupling`, the next batch is drawn and coupled in a
    background thread while the current one trains: noise, data and coupling shuffles come
    from ``generator`` (used only by the coupling, in either thread), times and label drops
    from ``step_generator`` (only by the step), so the pairs are those of a run without the
    thread. The buffer's unused pairs and the batch coupled ahead are part of the checkpoint.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        config: Config,
        device: torch.device,
        run_dir: Path | None,
        dist: Distributed,
    ) -> None:
        train = config.train
        self.pipeline = pipeline
        self.config = train
        self.device = device
        self.run_dir = run_dir
        self.dist = dist
        self.sizes = batch_sizes(train, dist.world_size)
        self.model = pipeline.model.to(device)
        self.conditional = is_conditional(self.model)
        self.dtype = autocast_dtype(train.precision, device)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=train.lr, weight_decay=train.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(train, step)
        )
        # Only the main process evaluates and saves, so only it keeps the EMA weights.
        self.ema = (
            AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(train.ema))
            if train.ema > 0 and dist.is_main
            else None
        )
        # AveragedModel holds the EMA weights and their checkpoint format; the update is one
        # fused lerp over tensor lists gathered once, without AveragedModel's per-step
        # regrouping and its host synchronisations on ``n_averaged``.
        if self.ema is not None:
            self.ema_lists = tuple(
                ([t.detach() for t in mine], [t.detach() for t in theirs])
                for mine, theirs in (
                    (self.ema.module.parameters(), self.model.parameters()),
                    (self.ema.module.buffers(), self.model.buffers()),
                )
            )
            self.ema_started = False
        if dist.rank:  # the weights are initialised alike; dropout must differ per process
            torch.manual_seed(derived_seed(train.seed, TORCH_STREAM, dist.rank))
        seed = derived_seed(train.seed, TRAIN_STREAM, dist.rank)
        self.generator = torch.Generator().manual_seed(seed)
        self.step_generator = torch.Generator().manual_seed(
            derived_seed(train.seed, STEP_STREAM, dist.rank)
        )
        self.stream = target_stream(
            pipeline.target,
            self.sizes.coupling,
            self.generator,
            seed=train.seed,
            rank=dist.rank,
            world_size=dist.world_size,
            workers=config.data.workers,
            pin_memory=device.type == "cuda",
        )
        self.pairs: Pairs | None = None
        # The batch coupled ahead: a Future while the background thread works on it.
        self.next_pairs: Pairs | Future[Pairs] | None = None
        self.overlap = overlaps_coupling(train.overlap_coupling, pipeline.coupler, dist.active)
        self._pool: ThreadPoolExecutor | None = None
        # The coupling generator's and data stream's states before the batch coupled ahead.
        self._before_ahead: tuple[torch.Tensor, dict[str, Any]] | None = None
        network = torch.compile(self.model) if train.compile else self.model
        if dist.active:
            ids = None if device.type == "cpu" else [device.index]
            network = DistributedDataParallel(network, device_ids=ids)
        self.network = network
        self.step = 0
        self.elapsed = 0.0  # seconds of training, summed over every session of the run
        # The first step whose loss was not finite (-1: none), kept on the device so that
        # checking every step costs no host synchronisation; read at log and checkpoint time.
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device)
        self.owned: list[Path] = []  # checkpoints this run wrote or loaded, oldest first

    def weights_record(self) -> dict[str, Any]:
        """Which weights ``eval_model`` is: ``kind`` ``"ema"`` (with the configured ``decay``
        and the ``effective_decay`` of its last update) or ``"raw"``, at ``step``."""
        if self.ema is None:
            return {"kind": "raw", "step": self.step}
        return {
            "kind": "ema",
            "decay": self.config.ema,
            "effective_decay": ema_decay(self.config, max(self.step - 1, 0)),
            "step": self.step,
        }

    @property
    def eval_model(self) -> torch.nn.Module:
        """The EMA weights when EMA is on, else the trained weights."""
        return self.ema.module if self.ema is not None else self.model

    def _rank_state(self) -> dict[str, Any]:
        pairs = None if self.pairs is None else [_cpu(p) for p in self.pairs]
        if self._settle():
            ahead = self.next_pairs
            generator, stream = self.generator.get_state(), self.stream.state()
        else:  # the batch ahead failed: save the state from before it, so a resume redraws it
            ahead = None
            generator, stream = self._before_ahead
        state = {
            "generator": generator,
            "step_generator": self.step_generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "stream": stream,
            "pairs": pairs,
            "next_pairs": None if ahead is None else [_cpu(p) for p in ahead],
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
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "coupler": self.pipeline.coupler.state_dict(),
            "ranks": ranks,
        }
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        if "ranks" not in state:
            raise CheckpointError(
                f"the checkpoints of {self.run_dir} were written by an earlier mfm that kept no "
                "per-process state; they cannot be resumed exactly: start a new run"
            )
        saved_world = state["world_size"]
        if saved_world != self.dist.world_size:
            raise CheckpointError(
                f"the checkpoints of {self.run_dir} were written by {saved_world} processes; "
                f"resume with the same number (torchrun --nproc_per_node x nodes), not "
                f"{self.dist.world_size}, so every process continues its own data and noise"
            )
        load_weights(self.model, state["model"], self.run_dir)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if "coupler" in state:  # checkpoints of runs before stateful couplers hold none
            self.pipeline.coupler.load_state_dict(state["coupler"])
        if self.ema is not None:
            if "ema" not in state:
                raise CheckpointError(
                    f"the checkpoints of {self.run_dir} hold no EMA weights, but train.ema is "
                    "set; resume without changing train.ema"
                )
            load_weights(self.ema, state["ema"], self.run_dir)
            self.ema_started = int(self.ema.n_averaged) > 0
        mine = state["ranks"][self.dist.rank]
        self.generator.set_state(mine["generator"])
        if "step_generator" in mine:
            self.step_generator.set_state(mine["step_generator"])
        else:
            logger.warning(
                "warning: the checkpoint was written by an earlier mfm that drew the times of "
                "its steps from the coupling's generator; the resumed run draws them from a "
                "generator of their own, so it is not the run an uninterrupted one would be"
            )
        torch.set_rng_state(mine["torch_rng"])
        if "cuda_rng" in mine and self.device.type == "cuda":
            torch.cuda.set_rng_state(mine["cuda_rng"], self.device)
        self.stream.load_state(mine["stream"])
        pairs, ahead = mine["pairs"], mine.get("next_pairs")
        self.pairs = None if pairs is None else tuple(_to(p, self.device) for p in pairs)
        self.next_pairs = None if ahead is None else tuple(_to(p, self.device) for p in ahead)
        self.step = int(state["step"])
        self.elapsed = float(state["elapsed"])
        self._apply_optimizer_settings()

    def _apply_optimizer_settings(self) -> None:
        """Set the config's ``lr`` and ``weight_decay`` over what a loaded optimizer and
        scheduler state hold, so a resume with changed settings trains with them (the
        schedule's shape already comes from the config); the current learning rate is that
        of the schedule at this step."""
        train = self.config
        self.scheduler.base_lrs = [train.lr] * len(self.optimizer.param_groups)
        factor = lr_factor(train, self.scheduler.last_epoch)
        for group in self.optimizer.param_groups:
            group["initial_lr"] = train.lr
            group["lr"] = train.lr * factor
            group["weight_decay"] = train.weight_decay
        self.scheduler._last_lr = [g["lr"] for g in self.optimizer.param_groups]

    def resume(self) -> None:
        """Continue from the newest usable checkpoint (read by the main process and sent to
        the others); later log lines are dropped."""
        loaded: tuple[str, Any, str] = ("", None, "")
        if self.dist.is_main:
            try:
                state, path, problems = load_latest(self.run_dir / CHECKPOINTS)
                for problem in problems:
                    logger.warning(f"warning: skipped {problem}")
                loaded = ("", state, str(path))
            except CheckpointError as exc:
                loaded = (str(exc), None, "")
        error, state, path = loaded
        if self.dist.is_main and not error:
            self.owned = _verified_up_to(self.run_dir / CHECKPOINTS, int(state["step"]))
        if self.dist.active:  # the EMA weights stay on the main process, which keeps them
            others = None if state is None else {k: v for k, v in state.items() if k != "ema"}
            error, received, path = self.dist.broadcast((error, others, path))
            state = state if self.dist.is_main else received
        if error:
            raise CheckpointError(error)
        self.load_state(state)
        if self.dist.is_main:
            truncate_log(self.run_dir, self.step)
        logger.info(f"resumed from {path} at step {self.step}")

    def check_finite(self) -> None:
        """Raise if a loss so far or a weight now is not finite (one host synchronisation):
        a diverged run stops with its last good checkpoint kept, and never saves NaN."""
        first_bad = int(self.first_bad)
        if first_bad >= 0:
            raise MfmError(
                f"training diverged: the loss at step {first_bad} is not finite; lower "
                f"train.lr (now {self.config.lr:g}) or set train.grad_clip. The checkpoints "
                f"in {self.run_dir / CHECKPOINTS} are from before step {first_bad}"
            )
        modules = [self.model] + ([self.ema] if self.ema is not None else [])
        tensors = [t for m in modules for t in m.state_dict().values() if t.is_floating_point()]
        if tensors and not torch.stack([torch.isfinite(t).all() for t in tensors]).all():
            raise MfmError(
                f"training diverged: the weights after step {self.step} are not finite; lower "
                f"train.lr (now {self.config.lr:g}) or set train.grad_clip. Nothing was saved "
                f"for step {self.step}"
            )

    def save(self) -> Path | None:
        """Checkpoint the run (every process must call it; the main one writes); a run whose
        loss or weights are not finite raises instead."""
        self.check_finite()
        state = self.state()
        if state is None:
            return None
        return save_checkpoint(
            self.run_dir / CHECKPOINTS,
            self.step,
            state,
            self.config.keep_checkpoints,
            self.owned,
        )

    def _couple(self) -> Pairs:
        """Draw ``coupling`` noise and data samples and couple them (in the background thread
        with overlap: only ``generator`` and the data stream may be used here)."""
        count = self.sizes.coupling
        x0 = self.pipeline.source.sample(count, self.generator).to(self.device, non_blocking=True)
        x1, labels = self.stream.next()
        x1 = x1.to(self.device, non_blocking=True)
        cond = labels.to(self.device) if self.conditional and labels is not None else None
        x0, x1, cond = self.pipeline.coupler(x0, x1, cond).pairs(x0, x1, cond)
        if len(x0) != count:
            raise MfmError(
                f"coupler '{type(self.pipeline.coupler).__name__}' returned {len(x0)} pairs "
                f"for {count} samples; the runner needs one pair per sample"
            )
        if count > self.sizes.per_rank:
            # The pairs feed several steps: shuffle them so that no step sees only a part of
            # the coupling that the coupler may have ordered (e.g. by class).
            order = torch.randperm(count, generator=self.generator).to(self.device)
            x0, x1 = x0[order], x1[order]
            cond = None if cond is None else cond[order]
        return x0, x1, cond

    def _settle(self) -> bool:
        """Wait for the batch being coupled ahead; false if its coupling failed (the error is
        raised when the batch is needed)."""
        if isinstance(self.next_pairs, Future):
            if self.next_pairs.exception() is not None:
                return False
            self.next_pairs = self.next_pairs.result()
        return True

    def _micro_batch(self, needed: int = 1) -> Pairs:
        """The next micro-batch of pairs; ``needed`` micro-batches (this one included) are
        left to train in the run. With overlap, when the pairs in hand will not cover them,
        the next batch is started in the background."""
        if self.pairs is None:
            ahead, self.next_pairs = self.next_pairs, None
            if isinstance(ahead, Future):
                ahead = ahead.result()
            self.pairs = ahead if ahead is not None else self._couple()
        x0, x1, cond = self.pairs
        m = self.sizes.micro
        rest = (x0[m:], x1[m:], None if cond is None else cond[m:])
        self.pairs = rest if len(rest[0]) else None
        in_hand = len(rest[0]) // m
        if self._pool is not None and self.next_pairs is None and needed - 1 > in_hand:
            self._before_ahead = (self.generator.get_state(), self.stream.state())
            self.next_pairs = self._pool.submit(self._couple)
        return x0[:m], x1[:m], None if cond is None else cond[:m]

    def _micro_loss(self, needed: int = 1) -> torch.Tensor:
        x0, x1, cond = self._micro_batch(needed)
        t = torch.rand(len(x0), generator=self.step_generator).to(self.device)
        if cond is not None and self.config.cond_drop > 0:
            drop = torch.rand(len(cond), generator=self.step_generator).to(self.device)
            cond = cond.masked_fill(drop < self.config.cond_drop, NULL_LABEL)
        return regression_loss(self.pipeline.path, self.network, x0, x1, t, cond, self.dtype)

    def train_step(self) -> torch.Tensor:
        """One optimizer step; returns the mean loss of its micro-batches (on the device)."""
        self.network.train()
        self.optimizer.zero_grad(set_to_none=True)
        accum = self.config.grad_accum
        total = torch.zeros((), device=self.device)
        left = (self.config.steps - self.step) * accum
        for index in range(accum):
            # DDP averages gradients over processes at the last micro-batch's backward only.
            no_sync = self.dist.active and index < accum - 1
            with self.network.no_sync() if no_sync else contextlib.nullcontext():
                loss = self._micro_loss(needed=left - index)
                (loss / accum).backward()
            total += loss.detach()
        if self.config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            self._update_ema()
        self.step += 1
        return total / accum

    @torch.no_grad()
    def _update_ema(self) -> None:
        """``ema <- ema + (1 - decay) (weights - ema)``; the first update copies the weights
        and buffers are copied, as ``AveragedModel.update_parameters`` does."""
        (ema_params, params), (ema_buffers, buffers) = self.ema_lists
        if self.ema_started:
            torch._foreach_lerp_(ema_params, params, 1.0 - ema_decay(self.config, self.step))
        else:
            torch._foreach_copy_(ema_params, params)
            self.ema_started = True
        if buffers:
            torch._foreach_copy_(ema_buffers, buffers)
        self.ema.n_averaged += 1

    def train(self, progress: bool = True, on_step: Callable[[int], None] | None = None) -> None:
        """Train up to ``config.steps``, logging and checkpointing; Ctrl-C or SIGTERM (on any
        process) ends the current step, saves a checkpoint and stops with a message saying how
        to resume. ``on_step(step)`` runs on the main process after every step.

        The losses stay on the device and are read every :data:`FLUSH_EVERY` steps, at each
        checkpoint and at the end (one host synchronisation each): the log lines of those
        steps are written then, and a non-finite loss stops the run then, naming its step.
        """
        config = self.config
        main = self.dist.is_main
        start = time.perf_counter() - self.elapsed
        bar = progress_bar(config.steps, initial=self.step, desc="train", enabled=progress and main)
        stopping = False
        log = open(self.run_dir / LOG_FILE, "a") if main else contextlib.nullcontext()
        pending: list[tuple[dict[str, Any], torch.Tensor]] = []
        if self.overlap:
            self.stream.start()
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="mfm-coupling")
        try:
            with log, stop_requests() as stop:
                while self.step < config.steps and not stopping:
                    lr = self.optimizer.param_groups[0]["lr"]
                    loss = self.train_step()
                    stopping = self.dist.any(bool(stop))
                    self.first_bad = torch.where(
                        (self.first_bad < 0) & ~torch.isfinite(loss), self.step, self.first_bad
                    )
                    if self.step % config.log_every == 0:
                        seconds = round(time.perf_counter() - start, 4)
                        record = {"step": self.step, "loss": None, "lr": lr, "time": seconds}
                        pending.append((record, loss))
                    bar.update(1)
                    self.elapsed = time.perf_counter() - start
                    save = self.step % config.checkpoint_every == 0 or self.step == config.steps
                    if save or stopping or self.step % FLUSH_EVERY == 0:
                        self._flush(pending, log if main else None, bar)
                        pending = []
                    if save:
                        self.save()
                    if main and on_step is not None:
                        on_step(self.step)
        except BaseException:
            self._stop_coupling(wait_for_result=False)
            raise
        else:
            self._stop_coupling(wait_for_result=True)
        finally:
            bar.close()
            self.stream.close()
        self.check_finite()
        if stopping:
            path = self.save()
            where = f"saved {path}" if path else "saved by the main process"
            cause = f"signal {stop[0]}" if stop else "a signal to another process"
            raise MfmError(
                f"stopped by {cause} at step {self.step}; {where}. "
                f"Continue with: mfm-run --resume {self.run_dir}"
            )

    def _flush(
        self, pending: list[tuple[dict[str, Any], torch.Tensor]], log: Any, bar: Any
    ) -> None:
        """Read the pending losses (averaged over processes) and the first non-finite step in
        one transfer; write the log lines of the steps before it, then raise if there is one."""
        packed = self.first_bad.double()[None]  # the losses, then the first non-finite step
        if pending:
            losses = torch.stack([loss for _, loss in pending])
            packed = torch.cat([self.dist.mean(losses).double(), packed])
        values = packed.tolist()
        first_bad = int(values[-1])
        for (record, _), value in zip(pending, values[:-1], strict=True):
            if 0 <= first_bad <= record["step"]:
                break
            record["loss"] = value
            if log is not None:
                log.write(json.dumps(record) + "\n")
        if log is not None and pending:
            log.flush()
            bar.set_postfix(loss=f"{values[-2]:.4f}", refresh=False)
        if first_bad >= 0:
            self.check_finite()

    def _stop_coupling(self, wait_for_result: bool) -> None:
        """End the background coupling: wait for the batch coupled ahead, which is kept for
        a checkpoint (after a failure elsewhere it is waited for but not kept)."""
        if self._pool is None:
            return
        try:
            if wait_for_result:
                self._settle()
            elif isinstance(self.next_pairs, Future):
                self.next_pairs.cancel()
                with contextlib.suppress(BaseException):
                    self.next_pairs.result()
                self.next_pairs = None
        finally:
            self._pool.shutdown(wait=True)
            self._pool = None


def _verified_up_to(directory: Path, step: int) -> list[Path]:
    """The checkpoints in ``directory`` up to ``step`` that load, oldest first: those a
    resumed run may rotate away (a later or unreadable one is not the run's to delete)."""
    found = []
    for saved, path in reversed(list_checkpoints(directory)):
        if saved > step:
            continue
        try:
            load_checkpoint(path, mmap=True)
        except CheckpointError:
            continue
        found.append(path)
    return found


def _cpu(tensor: torch.Tensor | None) -> torch.Tensor | None:
    # A copy, not a view: saving a view would save the whole batch it was cut from.
    return None if tensor is None else tensor.detach().to("cpu", copy=True)


def _to(tensor: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    return None if tensor is None else tensor.to(device)

"""The pair feed: draws noise and data, couples them, and hands out micro-batches of pairs.

Noise, data (of generator-style data sets) and the shuffles of coupled batches come from the
feed's own ``generator``, which nothing else touches; an indexed data set is read through its
:class:`~mfm_core.runner.training.data.IndexedStream`, whose loader has a generator of its
own. So the pairs are the same whether the next batch is coupled in a background thread
(while the current step trains) or when it is needed, and a resumed feed continues exactly:
its state holds both generators, the stream's position, the unused pairs of the current
coupled batch and the batch coupled ahead.
"""

from __future__ import annotations

import contextlib
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import attrs
import torch

from mfm_core.adapters import blame, ended_process
from mfm_core.errors import ConfigError, MfmError
from mfm_core.protocols import Coupler, Dataset
from mfm_core.runner.training.data import IndexedStream, SampledStream
from mfm_core.runner.training.sizes import BatchSizes

Pairs = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]


def overlaps_coupling(setting: str, coupler: Any, distributed: bool) -> bool:
    """Whether the next batch is coupled in a background thread while the current step
    trains (``train.overlap_coupling``; the pairs and their order are the same either way,
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


@attrs.define
class CouplingTimes:
    """Seconds spent coupling (drawing included) and seconds the step waited for pairs, summed
    since the feed was made; with the background thread the second is the part not hidden.
    Beside them, the sum of the couplings' mean pair costs (``cost``, a host number each
    coupler computes anyway) over the ``costed`` couplings that reported one."""

    coupling: float = 0.0
    waited: float = 0.0
    batches: int = 0
    cost: float = 0.0
    costed: int = 0

    def since(self, earlier: CouplingTimes) -> CouplingTimes:
        """The times spent after ``earlier`` was taken (a copy of these times)."""
        return CouplingTimes(
            coupling=self.coupling - earlier.coupling,
            waited=self.waited - earlier.waited,
            batches=self.batches - earlier.batches,
            cost=self.cost - earlier.cost,
            costed=self.costed - earlier.costed,
        )


class _SideStream:
    """On CUDA, the background coupling runs on a stream of its own, so that its copies to the
    host do not wait for the kernels the step queued; the step's stream waits for an event
    recorded after the coupling, and the pairs are marked as used there (``record_stream``), so
    the allocator does not reuse their memory while the step still reads them. On the CPU:
    nothing to do."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def run(self, work: Any) -> tuple[Any, Any]:
        if self.stream is None:
            return work(), None
        torch.cuda.set_device(self.device)  # a new thread starts on device 0
        with torch.cuda.stream(self.stream):
            pairs = work()
            event = torch.cuda.Event()
            event.record(self.stream)
        return pairs, event

    def hand_over(self, pairs: tuple[Any, ...], event: Any) -> tuple[Any, ...]:
        if event is None:
            return pairs
        current = torch.cuda.current_stream(self.device)
        current.wait_event(event)
        for tensor in pairs:
            if tensor is not None:
                tensor.record_stream(current)
        return pairs


class PairFeed:
    """Micro-batches of coupled pairs for one process.

    ``coupling`` noise and data samples are drawn and coupled at once; the pairs are cut into
    micro-batches of ``micro``. With ``overlap``, the next coupled batch is started in a
    background thread as soon as the pairs in hand will not cover the micro-batches still
    needed.
    """

    def __init__(
        self,
        *,
        source: Dataset,
        coupler: Coupler,
        stream: SampledStream | IndexedStream,
        generator: torch.Generator,
        sizes: BatchSizes,
        device: torch.device,
        conditional: bool,
        overlap: bool,
    ) -> None:
        self.source = source
        self.coupler = coupler
        self.stream = stream
        self.generator = generator
        self.sizes = sizes
        self.device = device
        self.conditional = conditional
        self.overlap = overlap
        self.times = CouplingTimes()
        self._pairs: Pairs | None = None
        # The batch coupled ahead: a Future while the background thread works on it.
        self._ahead: Pairs | Future[Any] | None = None
        # The generator's and stream's states from before the batch coupled ahead.
        self._before_ahead: tuple[torch.Tensor, dict[str, Any]] | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._side = _SideStream(device)
        self._checks: list[torch.Tensor] = []  # see take_intact
        self._failed: tuple[torch.Tensor, dict[str, Any]] | None = (
            None  # see rewind_failed_coupling
        )

    def start(self) -> None:
        """Start the data loader from this (the main) thread, then the coupling thread: loader
        workers must never be forked from the coupling thread while the main one is inside
        torch."""
        self.stream.start()
        if self.overlap and self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="mfm-coupling")

    def couple(self) -> tuple[Pairs, torch.Tensor]:
        """Draw ``coupling`` noise and data samples and couple them (in the background thread
        with overlap: only ``generator`` and the data stream are used here); with the pairs,
        whether the coupler left its inputs unchanged (a boolean on the device)."""
        started = time.perf_counter()
        before = (self.generator.get_state(), self.stream.state())
        count = self.sizes.coupling
        x0 = self.source.sample(count, self.generator).to(self.device, non_blocking=True)
        x1, labels = self.stream.next()
        x1 = x1.to(self.device, non_blocking=True)
        cond = labels.to(self.device) if self.conditional and labels is not None else None
        # The coupler gets copies (a copy on the device costs little beside a step): one that
        # writes into its inputs cannot corrupt the pairs, and is caught by comparing the
        # copies with the originals on the device, read with the losses (no synchronisation).
        given = tuple(None if t is None else t.clone() for t in (x0, x1, cond))
        try:
            coupling = self.coupler(*given)
        except BaseException as exc:
            self._failed = before
            if not isinstance(exc, (SystemExit, KeyboardInterrupt)):
                raise
            # Ctrl-C is deferred while training: a KeyboardInterrupt here is the coupler's
            raise blame(self.coupler, ended_process(exc)) from None
        intact = _unchanged(given, (x0, x1, cond))
        x0, x1, cond = coupling.pairs(x0, x1, cond)
        if len(x0) != count:
            raise MfmError(
                f"coupler '{type(self.coupler).__name__}' returned {len(x0)} pairs for {count} "
                "samples; the runner needs one pair per sample"
            )
        if count > self.sizes.per_rank:
            # The pairs feed several steps: shuffle them so that no step sees only a part of
            # the coupling that the coupler may have ordered (e.g. by class).
            order = torch.randperm(count, generator=self.generator).to(self.device)
            x0, x1 = x0[order], x1[order]
            cond = None if cond is None else cond[order]
        self.times.coupling += time.perf_counter() - started
        self.times.batches += 1
        if coupling.cost is not None:
            self.times.cost += float(coupling.cost)
            self.times.costed += 1
        return (x0, x1, cond), intact

    def rewind_failed_coupling(self) -> bool:
        """After the coupler failed in this thread, go back to before that coupling's draws
        (the pairs in hand were used up, since it was needed), so that :meth:`state_dict`
        is where the feed stood; false (nothing changed) if it did not fail or coupling runs
        in the background."""
        if self._failed is None or self.overlap:
            return False
        generator, stream = self._failed
        self.generator.set_state(generator)
        self.stream.load_state(stream)
        self._pairs = self._ahead = self._failed = None
        return True

    def take_intact(self) -> torch.Tensor | None:
        """Whether the coupler left its inputs unchanged in every coupling handed out since
        the last call (a boolean on the device), or ``None`` when there was none."""
        checks, self._checks = self._checks, []
        return torch.stack(checks).all() if checks else None

    def changed_inputs_error(self) -> MfmError:
        return blame(
            self.coupler,
            "changed its inputs (x0, x1 or cond) in place; a coupler must only read them (the "
            "run stopped: its pairs were coupled from changed samples)",
        )

    def _take_ahead(self) -> Pairs | None:
        ahead, self._ahead = self._ahead, None
        if isinstance(ahead, Future):
            (pairs, intact), event = ahead.result()
            *pairs, intact = self._side.hand_over((*pairs, intact), event)
            self._checks.append(intact)
            return tuple(pairs)
        return ahead

    def micro_batch(self, needed: int = 1) -> Pairs:
        """The next micro-batch of pairs; ``needed`` micro-batches (this one included) are
        left to train in the run."""
        if self._pairs is None:
            waiting = time.perf_counter()
            ahead = self._take_ahead()
            if ahead is None:
                # A run's first coupling is always made here, in the main thread, at the same
                # step on every process: the thread below starts only once pairs are in hand,
                # and a resume restores a stateful coupler's state before it couples. So a
                # coupler may make collectives at its first coupling (semidiscrete's fit
                # broadcasts rank 0's potentials), never later ones.
                ahead, intact = self.couple()
                self._checks.append(intact)
            self._pairs = ahead
            self.times.waited += time.perf_counter() - waiting
        x0, x1, cond = self._pairs
        m = self.sizes.micro
        rest = (x0[m:], x1[m:], None if cond is None else cond[m:])
        self._pairs = rest if len(rest[0]) else None
        in_hand = len(rest[0]) // m
        if self._pool is not None and self._ahead is None and needed - 1 > in_hand:
            self._before_ahead = (self.generator.get_state(), self.stream.state())
            self._ahead = self._pool.submit(self._side.run, self.couple)
        return x0[:m], x1[:m], None if cond is None else cond[:m]

    def _settle(self) -> bool:
        """Wait for the batch being coupled ahead; false if its coupling failed (the error is
        raised when the batch is needed)."""
        if isinstance(self._ahead, Future):
            if self._ahead.exception() is not None:
                return False
            self._ahead = self._take_ahead()
        return True

    def state_dict(self) -> dict[str, Any]:
        """The generator, the stream's position, the unused pairs and the batch coupled ahead
        (on the CPU). If the batch ahead failed, the state from before it: a resume draws it
        again."""
        if self._settle():
            ahead = self._ahead
            generator, stream = self.generator.get_state(), self.stream.state()
        else:
            ahead = None
            generator, stream = self._before_ahead
        return {
            "generator": generator,
            "stream": stream,
            "pairs": None if self._pairs is None else [_cpu(p) for p in self._pairs],
            "next_pairs": None if ahead is None else [_cpu(p) for p in ahead],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.stream.load_state(state["stream"])
        pairs, ahead = state["pairs"], state.get("next_pairs")
        self._pairs = None if pairs is None else tuple(_to(p, self.device) for p in pairs)
        self._ahead = None if ahead is None else tuple(_to(p, self.device) for p in ahead)

    def close(self, *, keep_ahead: bool) -> None:
        """Stop the coupling thread and the loader. With ``keep_ahead`` the batch coupled ahead
        is waited for and kept (for a checkpoint); otherwise (after a failure elsewhere) it is
        waited for and dropped."""
        try:
            if self._pool is not None:
                if keep_ahead:
                    self._settle()
                elif isinstance(self._ahead, Future):
                    self._ahead.cancel()
                    with contextlib.suppress(BaseException):
                        self._ahead.result()
                    self._ahead = None
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
            self.stream.close()


def _unchanged(copies: tuple[Any, ...], originals: tuple[Any, ...]) -> torch.Tensor:
    """Whether ``copies`` still equal ``originals`` (NaN equal to NaN), on the device."""
    same = [
        (c == o) | (c.isnan() & o.isnan()) if c.is_floating_point() else c == o
        for c, o in zip(copies, originals, strict=True)
        if c is not None
    ]
    return torch.stack([s.all() for s in same]).all()


def _cpu(tensor: torch.Tensor | None) -> torch.Tensor | None:
    # A copy, not a view: saving a view would save the whole batch it was cut from.
    return None if tensor is None else tensor.detach().to("cpu", copy=True)


def _to(tensor: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    return None if tensor is None else tensor.to(device)

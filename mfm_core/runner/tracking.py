"""Feeding the run's trackers (``train.trackers``): the training records the loss log has
read, the coupling's time per step, the evaluation's metrics and its pictures. A tracker that
fails is reported once and dropped; the run goes on without it."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np
from PIL import Image

from mfm_core.config import Component
from mfm_core.protocols import Tracker
from mfm_core.registry import Registry
from mfm_core.runner.evaluation.results import sample_keys
from mfm_core.runner.training.feed import CouplingTimes

logger = logging.getLogger(__name__)

TRAINING_KEYS = {"loss": "train/loss", "lr": "train/lr"}


@attrs.frozen
class _Mark:
    """Where the previous report stood: its step, the run's seconds, the coupling's times."""

    step: int
    seconds: float
    times: CouplingTimes


class Trackers:
    """The trackers of one run (main process only), fed values already on the host."""

    def __init__(self, trackers: Sequence[tuple[str, Tracker]] = ()) -> None:
        self._active = dict(trackers)
        self._record: _Mark | None = None
        self._flush: _Mark | None = None

    @classmethod
    def open(
        cls, specs: Sequence[Component], registry: Registry, run_dir: Path, start_step: int
    ) -> Trackers:
        """Build the trackers of ``train.trackers``; a tracker that cannot be built (its
        library missing, a bad parameter) is an error before training starts."""
        built: list[tuple[str, Tracker]] = []
        try:
            for index, spec in enumerate(specs):
                tracker = registry.create(
                    "tracker",
                    spec.name,
                    spec.params,
                    path=f"$.train.trackers[{index}]",
                    provided={"run_dir": run_dir, "start_step": start_step},
                )
                built.append((f"{spec.name}" if index == 0 else f"{spec.name}#{index}", tracker))
        except BaseException:
            cls(built).close()
            raise
        return cls(built)

    def __bool__(self) -> bool:
        return bool(self._active)

    def start(self, step: int, seconds: float, times: CouplingTimes) -> None:
        """Where training (re)starts: the times per step are measured from here."""
        self._record = self._flush = _Mark(step, seconds, attrs.evolve(times))

    def _each(self, call: Callable[[Tracker], None]) -> None:
        for label, tracker in list(self._active.items()):
            try:
                call(tracker)
            except Exception as exc:  # a tracker's bug or its service down: not the run's
                del self._active[label]
                logger.warning(
                    f"warning: tracker '{label}' failed ({type(exc).__name__}: {exc}); it is "
                    "dropped and the run goes on without it"
                )
                try:
                    tracker.close()
                except Exception:  # already reported; closing a broken tracker may fail too
                    pass

    def training(
        self, records: Sequence[Mapping[str, Any]], step: int, times: CouplingTimes
    ) -> None:
        """The log records just read from the device (``train/loss``, ``train/lr`` and
        ``train/step_ms``, the mean time of the steps since the previous record), then the
        coupling's time per step since the previous call (``train/coupling_ms``, drawing
        included, and ``train/coupling_waited_ms``, the part the steps waited for), at
        ``step``."""
        if not self._active:
            return
        for record in records:
            values = {key: float(record[name]) for name, key in TRAINING_KEYS.items()}
            mark = self._record
            if mark is not None and record["step"] > mark.step:
                steps = record["step"] - mark.step
                values["train/step_ms"] = 1000 * (record["time"] - mark.seconds) / steps
            self._record = _Mark(record["step"], record["time"], CouplingTimes())
            self._each(lambda t, r=record, v=values: t.log_scalars(r["step"], v))
        mark = self._flush
        if mark is not None and step > mark.step:
            spent = times.since(mark.times)
            steps = step - mark.step
            coupling = {
                "train/coupling_ms": 1000 * spent.coupling / steps,
                "train/coupling_waited_ms": 1000 * spent.waited / steps,
            }
            self._each(lambda t: t.log_scalars(step, coupling))
        self._flush = _Mark(step, 0.0, attrs.evolve(times))

    def evaluation(self, step: int, metrics: Mapping[str, Any], pictures: Sequence[Path]) -> None:
        """Each solver setting's metrics as ``eval/<setting>/<metric>`` (``eval/euler-4/w2``,
        with its ``nfe``), the solver-independent ones as ``eval/<metric>``, the final loss,
        and the pictures the evaluation drew, at ``step`` (the step of the weights)."""
        if not self._active:
            return
        values = {"eval/final_loss": metrics["final_loss"]}
        rows = metrics["samples"]
        for key, row in zip(sample_keys(rows), rows, strict=True):
            values.update({f"eval/{key}/{name}": v for name, v in _measured(row).items()})
        values.update({f"eval/{name}": v for name, v in metrics.get("run", {}).items()})
        numbers = {k: float(v) for k, v in values.items() if _is_number(v)}
        self._each(lambda t: t.log_scalars(step, numbers))
        for path in pictures:
            self.picture(step, f"pictures/{path.stem}", path)

    def picture(self, step: int, tag: str, path: Path) -> None:
        """The PNG at ``path`` as an (H, W, 3) uint8 image."""
        if not self._active:
            return
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"))
        self._each(lambda t: t.log_image(step, tag, pixels))

    def close(self) -> None:
        self._each(lambda t: t.close())
        self._active.clear()


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _measured(row: Mapping[str, Any]) -> dict[str, Any]:
    """What a row of the sweep measured: its ``nfe`` and the metrics after it (the keys before
    ``nfe`` describe the solver)."""
    names = list(row)
    return {name: row[name] for name in names[names.index("nfe") :]}

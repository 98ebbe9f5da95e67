"""The loss log: losses stay on the device and are read in one transfer every few steps."""

from __future__ import annotations

import json
from typing import Any, TextIO

import torch

from mfm_core.runner.training.distributed import Distributed

FLUSH_EVERY = 50
"""Steps between two reads of the losses from the device (one host synchronisation): the
log lines of those steps are written then, and a non-finite loss is noticed then."""


class LossLog:
    """Buffers one record per logged step with its loss on the device, and the first step whose
    loss was not finite (kept on the device too, so checking every step costs no host
    synchronisation). :meth:`flush` reads them all at once (averaged over processes)."""

    def __init__(self, device: torch.device, dist: Distributed) -> None:
        self.dist = dist
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device)
        self.changed = torch.zeros((), dtype=torch.bool, device=device)
        self.changed_seen = False
        """Whether a coupler changed its inputs, on any process, as of the last flush."""
        self._pending: list[tuple[dict[str, Any], torch.Tensor]] = []
        self.last: dict[str, Any] | None = None
        """The newest record written, with its loss."""
        self.read: list[dict[str, Any]] = []
        """The records the last flush read, with their losses (for the trackers)."""

    def watch(self, step: int, loss: torch.Tensor, intact: torch.Tensor | None = None) -> None:
        """Note ``step`` as the first non-finite one if its loss is not and none was before;
        ``intact``: whether the step's pairs were coupled from unchanged samples."""
        bad = (self.first_bad < 0) & ~torch.isfinite(loss)
        self.first_bad = torch.where(bad, step, self.first_bad)
        if intact is not None:
            self.changed = self.changed | ~intact

    def add(self, record: dict[str, Any], loss: torch.Tensor) -> None:
        """A log line whose ``loss`` is filled in at the next flush."""
        self._pending.append((record, loss))

    def flush(self, log: TextIO | None) -> int | None:
        """Read the pending losses and the first non-finite step in one transfer; write the
        lines of the steps before that step to ``log``. Returns the first non-finite step,
        or ``None``. Every process must call it at the same point (the mean is a collective)."""
        pending, self._pending = self._pending, []
        # The losses and the changed-inputs flag, averaged over processes (a flag above zero:
        # some process saw it), then this process's first non-finite step: one transfer.
        averaged = torch.stack([loss for _, loss in pending] + [self.changed.float()])
        packed = torch.cat([self.dist.mean(averaged).double(), self.first_bad.double()[None]])
        values = packed.tolist()
        first_bad = int(values[-1])
        self.changed_seen = values[-2] > 0
        self.read = []
        for (record, _), value in zip(pending, values[:-2], strict=True):
            if 0 <= first_bad <= record["step"]:
                break
            record["loss"] = value
            self.last = record
            self.read.append(record)
            if log is not None:
                log.write(json.dumps(record) + "\n")
        if log is not None and pending:
            log.flush()
        return first_bad if first_bad >= 0 else None

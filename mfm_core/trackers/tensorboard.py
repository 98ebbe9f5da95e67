"""TensorBoard: event files in ``RUN/tensorboard/`` (``tensorboard --logdir RUN``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

LOG_DIR = "tensorboard"


class TensorBoardTracker:
    """Writes the run's scalars and pictures as TensorBoard events into ``RUN/tensorboard/``.

    A resumed run writes into the same directory; TensorBoard discards the events it had after
    the checkpoint's step (``purge_step``), which the resumed run writes again.
    """

    def __init__(self, run_dir: Path, start_step: int = 0, flush_secs: int = 30) -> None:
        """
        Args:
            flush_secs: seconds between two writes of the events to disk (and at the end).
        """
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise ValueError(
                f"the tensorboard tracker needs the tensorboard package ({exc}): "
                "pip install 'mfm[tensorboard]'"
            ) from None
        if flush_secs < 1:
            raise ValueError(f"flush_secs must be >= 1, got {flush_secs}")
        self.log_dir = Path(run_dir) / LOG_DIR
        self._writer = SummaryWriter(
            str(self.log_dir),
            purge_step=start_step + 1 if start_step else None,
            flush_secs=flush_secs,
        )

    def log_scalars(self, step: int, values: Mapping[str, float]) -> None:
        for tag, value in values.items():
            self._writer.add_scalar(tag, value, step)

    def log_image(self, step: int, tag: str, image: Any) -> None:
        self._writer.add_image(tag, np.asarray(image), step, dataformats="HWC")

    def close(self) -> None:
        self._writer.close()

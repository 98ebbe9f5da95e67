"""``RunSession``: one process's view of a run, what the runner hands the trainer."""

from __future__ import annotations

from pathlib import Path

import attrs
import torch

from mfm_core.config import Config
from mfm_core.runner.assembly.pipeline import Pipeline
from mfm_core.runner.training.distributed import Distributed


@attrs.frozen(kw_only=True)
class RunSession:
    """One process's view of a run: its config, the built pipeline, the run directory, the
    process group it belongs to and its device (by default: one process on the CPU)."""

    config: Config
    pipeline: Pipeline
    run_dir: Path
    env: Distributed = attrs.field(factory=Distributed)
    device: torch.device = attrs.field(factory=lambda: torch.device("cpu"))

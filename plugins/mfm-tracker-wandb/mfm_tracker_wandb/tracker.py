"""An mfm run as a Weights & Biases run, offline by default: ``wandb sync`` uploads it later."""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np

RUN_FILE = "wandb-run.json"
"""In the run directory: the id of the W&B run, which a resume continues."""

STEP = "step"
"""The x-axis of every value: the training step. W&B's own ``_step`` counts calls to ``log``,
and refuses a value for a step older than the newest one it has, which the runner sends
(the losses of a stretch of steps are read after that stretch's last picture)."""


class WandbTracker:
    """Logs an mfm run to Weights & Biases, by default offline into ``RUN/wandb/session-N/``
    (one folder per session: the run, then each resume), with no account or network;
    ``wandb sync RUN/wandb/session-*/wandb/offline-run-*`` uploads it later. The W&B run is
    named after the run directory; a resumed mfm run continues it (same run id).

    Args:
        project: the W&B project of the run.
        entity: the W&B user or team that owns the project; empty: the default one.
        mode: ``offline`` (files only), ``online`` (needs ``wandb login``) or ``disabled``.
    """

    def __init__(
        self,
        run_dir: Path,
        start_step: int = 0,
        project: str = "mfm",
        entity: str = "",
        mode: Literal["offline", "online", "disabled"] = "offline",
    ) -> None:
        # wandb takes a second to import: only a run that uses this tracker pays for it.
        import wandb

        run_dir = Path(run_dir).resolve()
        saved = run_dir / RUN_FILE
        if start_step and saved.is_file():
            run_id = json.loads(saved.read_text())["run_id"]
        else:
            run_id = secrets.token_hex(4)  # W&B run ids: lower-case letters and digits
            saved.write_text(json.dumps({"run_id": run_id}) + "\n")
        # W&B names an offline run's folder after the second it started: a resume within the
        # same second would write over the files of the session before, so each session of the
        # mfm run gets a folder of its own.
        sessions = run_dir / "wandb"
        session = sessions / f"session-{len(list(sessions.glob('session-*')))}"
        session.mkdir(parents=True)
        self._wandb = wandb
        self._run = wandb.init(
            dir=str(session),
            project=project,
            entity=entity or None,
            name=run_dir.name,
            id=run_id,
            resume="allow",
            mode=mode,
            settings=wandb.Settings(
                console="off", silent=True, x_disable_stats=True, reinit="create_new"
            ),
        )
        self._run.define_metric(STEP)
        self._run.define_metric("*", step_metric=STEP)

    def log_scalars(self, step: int, values: Mapping[str, float]) -> None:
        self._run.log({**values, STEP: step})

    def log_image(self, step: int, tag: str, image: Any) -> None:
        self._run.log({tag: self._wandb.Image(np.asarray(image)), STEP: step})

    def close(self) -> None:
        self._run.finish()

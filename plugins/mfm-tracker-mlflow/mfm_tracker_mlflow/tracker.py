"""An mfm run as an MLflow run: scalars as metrics, pictures as image artifacts."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

RUN_FILE = "mlflow-run.json"
"""In the run directory: the tracking URI and the id of the MLflow run, for a resume."""


class MlflowTracker:
    """Logs an mfm run to MLflow, with no server: by default into the SQLite store
    ``mlflow.db`` beside the run directories (``runs/mlflow.db``, its pictures in
    ``runs/mlartifacts/``), which ``mlflow ui --backend-store-uri sqlite:///runs/mlflow.db``
    shows. The MLflow run is named after the run directory; a resumed mfm run continues it.

    Args:
        experiment: the MLflow experiment the run is logged under, made if it does not exist.
        tracking_uri: where MLflow keeps the run: a ``sqlite:///`` file, a tracking server's
            URL, or empty for ``mlflow.db`` beside the run directories.
    """

    def __init__(
        self, run_dir: Path, start_step: int = 0, experiment: str = "mfm", tracking_uri: str = ""
    ) -> None:
        # MLflow takes seconds to import: only a run that uses this tracker pays for it.
        from mlflow.tracking import MlflowClient

        run_dir = Path(run_dir).resolve()
        root = run_dir.parent
        self.tracking_uri = tracking_uri or f"sqlite:///{root / 'mlflow.db'}"
        self._client = MlflowClient(tracking_uri=self.tracking_uri)
        self.run_id = self._continued(run_dir / RUN_FILE) if start_step else None
        if self.run_id is None:
            artifacts = None if tracking_uri else (root / "mlartifacts").as_uri()
            self.run_id = self._start(run_dir, experiment, artifacts)

    def _continued(self, saved: Path) -> str | None:
        """The MLflow run this run directory started in the same store, running again."""
        if not saved.is_file():
            return None
        record = json.loads(saved.read_text())
        if record.get("tracking_uri") != self.tracking_uri:
            return None
        self._client.update_run(record["run_id"], status="RUNNING")
        return record["run_id"]

    def _start(self, run_dir: Path, experiment: str, artifacts: str | None) -> str:
        found = self._client.get_experiment_by_name(experiment)
        if found is not None:
            experiment_id = found.experiment_id
        else:
            experiment_id = self._client.create_experiment(experiment, artifact_location=artifacts)
        run = self._client.create_run(
            experiment_id, run_name=run_dir.name, tags={"mfm.run_dir": str(run_dir)}
        )
        record = {"tracking_uri": self.tracking_uri, "run_id": run.info.run_id}
        (run_dir / RUN_FILE).write_text(json.dumps(record) + "\n")
        return run.info.run_id

    def log_scalars(self, step: int, values: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(key, float(value), now, step) for key, value in values.items()]
        self._client.log_batch(self.run_id, metrics=metrics)

    def log_image(self, step: int, tag: str, image: Any) -> None:
        self._client.log_image(self.run_id, np.asarray(image), key=tag, step=step)

    def close(self) -> None:
        self._client.set_terminated(self.run_id)

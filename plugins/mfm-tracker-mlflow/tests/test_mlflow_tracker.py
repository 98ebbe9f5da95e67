"""The tracker as mfm runs it, read back with MLflow's own client on the local store."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("mfm_tracker_mlflow", reason="pip install -e ./plugins/mfm-tracker-mlflow")
pytest.importorskip("mlflow")
pytest.importorskip("sqlalchemy")
pytest.importorskip("alembic")

from mfm_core.registry import using_registry  # noqa: E402
from mfm_core.runner.run import resume_run  # noqa: E402
from mfm_core.runner.rundir.layout import read_log  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

import mfm_tracker_mlflow.plugin  # noqa: E402
from mfm_tracker_mlflow import RUN_FILE  # noqa: E402

TRACKED = [
    'train.trackers=[{ name = "mlflow", experiment = "tiny" }]',
    "eval.solvers=[{ name = 'euler', steps = 2 }]",
]


def history(client, run_id, key):
    """``{step: value}``; a step logged twice fails (a resume must not repeat one)."""
    metrics = client.get_metric_history(run_id, key)
    steps = [m.step for m in metrics]
    assert len(steps) == len(set(steps)), f"{key}: steps logged twice: {steps}"
    return {m.step: m.value for m in metrics}


def test_a_run_and_its_resume_are_one_mlflow_run(mfm_train, mfm_registry):
    registry = mfm_registry(mfm_tracker_mlflow.plugin)
    run = mfm_train(*TRACKED, steps=2, registry=registry)
    with using_registry(registry):
        resume_run(run.run_dir, ["train.steps=4"], progress=False)

    saved = json.loads((run.run_dir / RUN_FILE).read_text())
    assert saved["tracking_uri"] == f"sqlite:///{run.run_dir.parent / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=saved["tracking_uri"])
    experiment = client.get_experiment_by_name("tiny")
    (mlrun,) = client.search_runs([experiment.experiment_id])
    assert mlrun.info.run_id == saved["run_id"] and mlrun.info.status == "FINISHED"
    assert mlrun.info.run_name == run.run_dir.name

    logged = read_log(run.run_dir)
    assert history(client, mlrun.info.run_id, "train/loss") == pytest.approx(
        {r["step"]: r["loss"] for r in logged}, rel=1e-6
    )
    assert set(history(client, mlrun.info.run_id, "train/coupling_ms")) == {2, 4}
    metrics = json.loads((run.run_dir / "metrics.json").read_text())
    w2 = history(client, mlrun.info.run_id, "eval/euler-2/w2")
    assert set(w2) == {2, 4} and w2[4] == pytest.approx(metrics["samples"][0]["w2"], rel=1e-6)
    pictures = [a.path for a in client.list_artifacts(mlrun.info.run_id, "images")]
    assert any("samples" in path and "step+4" in path for path in pictures), pictures

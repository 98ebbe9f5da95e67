"""The hook mfm finds through this distribution's ``mfm.plugins`` entry point."""

from __future__ import annotations

from mfm_core import Register, hookimpl

from mfm_tracker_mlflow.tracker import MlflowTracker


@hookimpl
def register_trackers(register: Register) -> None:
    register("mlflow", MlflowTracker)

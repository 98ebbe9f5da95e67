"""``mfm fid-stats``: the reference statistics of a data set for the ``fid`` metric, streamed.

A whole training set (1.28 M ImageNet images) does not fit in memory as one tensor, so the
samples go through the feature map in batches and only the float64 sums of the features and
of their outer products are kept: a D x D matrix (32 MB for Inception's 2048 features).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from mfm_core.config import Component, load_config, parse_override
from mfm_core.errors import ConfigError
from mfm_core.registry import get_registry
from mfm_core.runner.assembly.pipeline import build_dataset
from mfm_core.runner.rundir.checkpoint import atomic_write
from mfm_core.runner.rundir.safepath import in_existing_folder
from mfm_core.runner.training.data import is_indexed
from mfm_core.schema import converter


class RunningStatistics:
    """The mean and covariance (``ddof = 1``) of feature batches, accumulated in float64."""

    def __init__(self) -> None:
        self.count = 0
        self.total: np.ndarray | None = None
        self.outer: np.ndarray | None = None

    def add(self, features: torch.Tensor) -> None:
        batch = features.detach().to("cpu", torch.float64).numpy()
        if self.total is None:
            self.total = np.zeros(batch.shape[1])
            self.outer = np.zeros((batch.shape[1], batch.shape[1]))
        self.count += len(batch)
        self.total += batch.sum(0)
        self.outer += batch.T @ batch

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        if self.count < 2:
            raise ConfigError("FID statistics need at least 2 samples")
        mu = self.total / self.count
        sigma = (self.outer - self.count * np.outer(mu, mu)) / (self.count - 1)
        return mu, (sigma + sigma.T) / 2


def _feature_spec(config: Any, features: str | None) -> tuple[Component, str]:
    """``--features`` when given, else the ``features`` of the config's ``fid`` metric, else
    ``inception`` (with its weights from ``MFM_INCEPTION_WEIGHTS``)."""
    if features is not None:
        _, value = parse_override(f"features={features}")  # TOML, or a bare name
        try:
            return converter.structure(value, Component), "--features"
        except Exception as exc:  # noqa: BLE001 - cattrs wraps the hook's error
            raise ConfigError(
                f"--features: expected a feature map name or a TOML table with a name, got "
                f"{features!r}"
            ) from exc
    for index, metric in enumerate(config.eval.metrics or []):
        if metric.name == "fid" and "features" in metric.params:
            spec = converter.structure(metric.params["features"], Component)
            return spec, f"$.eval.metrics[{index}].features"
    return Component(name="inception"), "--features"


MAX_REFERENCE = 10_000_000
"""The most samples ``mfm fid-stats --num`` draws: reference statistics use about 50,000, and
a count far beyond this would run for days rather than fail."""


def fid_statistics(
    config_path: Path,
    overrides: list[str],
    out: Path,
    *,
    num: int | None = None,
    features: str | None = None,
    batch: int = 500,
    seed: int = 0,
) -> int:
    """Write ``out`` (``mu``, ``sigma``, the format of pytorch-fid) for the config's target
    data set: every item of a finite data set in order, or its first ``num``; ``num`` samples
    (required) of a generated one, drawn with ``seed``. Returns the number of samples."""
    if batch < 1:
        raise ConfigError(f"--batch must be positive, got {batch}")
    if num is not None and not 2 <= num <= MAX_REFERENCE:
        raise ConfigError(f"--num must be in 2..{MAX_REFERENCE:,}, got {num}")
    if not 0 <= seed < 2**63:
        raise ConfigError(f"--seed must be in 0..2**63-1, got {seed}")
    out = in_existing_folder(out, "--out")
    config = load_config(config_path, overrides)
    registry = get_registry()
    target = build_dataset(registry, config.data.target, "$.data.target", config.data.root)
    spec, where = _feature_spec(config, features)
    feature_map = registry.create("feature_map", spec.name, spec.params, path=where)
    statistics = RunningStatistics()
    if is_indexed(target):
        count = len(target) if num is None else min(num, len(target))
        for start in range(0, count, batch):
            items = [target[i][0] for i in range(start, min(start + batch, count))]
            statistics.add(feature_map(torch.stack(items)))
    else:
        if num is None:
            raise ConfigError(
                f"--num: the target data set '{config.data.target.name}' is generated, not "
                "finite: say how many samples to draw"
            )
        generator = torch.Generator().manual_seed(seed)
        for start in range(0, num, batch):
            statistics.add(feature_map(target.sample(min(batch, num - start), generator)))
    mu, sigma = statistics.result()
    atomic_write(out, lambda handle: np.savez(handle, mu=mu, sigma=sigma))
    return statistics.count

"""Pictures of a run: samples at each solver setting beside the data, the flow's
trajectories, the loss curve, and every metric against NFE; the same side by side for the
runs of a comparison. Written atomically with matplotlib's file-only backend."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from mfm_core.runner.checkpoint import atomic_write  # noqa: E402


def metric_columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The metric columns of the rows of metrics.json: every key after ``nfe`` (the keys
    before it describe the solver), in order of first appearance."""
    columns: list[str] = []
    for row in rows:
        keys = list(row)
        for key in keys[keys.index("nfe") + 1 :] if "nfe" in keys else ():
            if key not in columns:
                columns.append(key)
    return columns


def setting(row: Mapping[str, Any]) -> str:
    """``euler 4``, ``dopri5``: a solver setting without its NFE."""
    return f"{row['solver']} {row['steps']}" if "steps" in row else str(row["solver"])


def _label(row: dict[str, Any]) -> str:
    steps = f" {row['steps']} steps" if "steps" in row else ""
    score = f"\nW2 {row['w2']:.3f}" if "w2" in row else ""
    return f"{row['solver']}{steps} (NFE {row['nfe']}){score}"


def _limits(points: Any, tail: float = 0.001, pad: float = 0.1) -> tuple[float, float]:
    """Shared x and y limits for 2-D points (any array-like (..., 2)): their ``tail`` and
    ``1 - tail`` quantiles, widened by ``pad`` of the range."""
    low, high = np.quantile(np.asarray(points).reshape(-1), [tail, 1 - tail])
    margin = pad * (high - low)
    return float(low - margin), float(high + margin)


def _scatter_panel(
    ax: Any, points: Any, title: str, limits: tuple[float, float], size: float = 1.0
) -> None:
    ax.scatter(points[:, 0], points[:, 1], s=size, alpha=0.5, color="C0", rasterized=True)
    ax.set_title(title, fontsize=8)
    ax.set_xlim(limits)
    ax.set_ylim(limits)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])


def _draw_paths(ax: Any, paths: np.ndarray, size: float, width: float, legend: bool) -> None:
    """Paths (T, n, 2) from noise (grey) to samples (blue)."""
    ax.plot(paths[:, :, 0], paths[:, :, 1], color="olive", alpha=0.25, linewidth=width)
    ax.scatter(paths[0, :, 0], paths[0, :, 1], s=size, color="grey", label="noise (t=0)")
    ax.scatter(paths[-1, :, 0], paths[-1, :, 1], s=size, color="C0", label="sample (t=1)")
    ax.set_aspect("equal")
    if legend:
        ax.legend(fontsize=7, loc="upper right")


def _running_mean(
    log: Sequence[Mapping[str, Any]],
) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
    """Steps, losses, the window (1/50 of the log) and the running mean of a training log;
    the mean belongs to ``steps[window - 1:]``."""
    steps = np.array([r["step"] for r in log])
    loss = np.array([r["loss"] for r in log])
    window = max(1, len(loss) // 50)
    return steps, loss, window, np.convolve(loss, np.ones(window) / window, mode="valid")


def _save(fig: Any, path: Path) -> None:
    """Write the figure as a PNG, atomically, and free it."""
    atomic_write(path, lambda handle: fig.savefig(handle, dpi=110, format="png"))
    plt.close(fig)


def plot_samples(path: Path, reference: torch.Tensor, generated: list, rows: list) -> None:
    """One panel per solver setting, the data first; 2-D samples only."""
    panels = [("data", reference), *((_label(r), g) for r, g in zip(rows, generated, strict=True))]
    limits = _limits(reference)
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 3.0), squeeze=False)
    for ax, (title, points) in zip(axes[0], panels, strict=True):
        _scatter_panel(ax, points, title, limits)
    fig.tight_layout()
    _save(fig, path)


def plot_trajectories(path: Path, trajectory: torch.Tensor, title: str) -> None:
    """Paths of the learned flow from noise (grey) to samples (blue); 2-D only."""
    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    _draw_paths(ax, trajectory.float().cpu().numpy(), size=3, width=0.6, legend=True)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    _save(fig, path)


def plot_loss(path: Path, log: list[dict[str, Any]]) -> None:
    """Training loss per step and its running mean, on a log scale."""
    steps, loss, window, smooth = _running_mean(log)
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(steps, loss, alpha=0.3, linewidth=0.6, label="loss")
    ax.plot(steps[window - 1 :], smooth, linewidth=1.2, label=f"mean of {window}")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)


def plot_metrics(path: Path, series: Mapping[str, Sequence[Mapping[str, Any]]]) -> bool:
    """Every metric against the NFE, one line per run (``series``: label -> rows) and fixed-step
    solver, the adaptive solver as a star at the NFE it used; log-scaled NFE. Returns False
    (and writes nothing) when there is no metric to plot."""
    rows = [r for rows in series.values() for r in rows]
    columns = [c for c in metric_columns(rows) if not _constant(c, rows)]
    if not columns:
        return False
    width = min(len(columns), 3)
    height = math.ceil(len(columns) / width)
    fig, axes = plt.subplots(height, width, figsize=(4.2 * width, 3.2 * height), squeeze=False)
    for ax, column in zip(axes.flat, columns, strict=False):
        for index, (label, rows) in enumerate(series.items()):
            color = f"C{index % 10}"
            families: dict[str, list[tuple[int, float]]] = {}
            for row in rows:
                value = row.get(column)
                if value is None or not math.isfinite(value):
                    continue
                if "steps" in row:
                    families.setdefault(row["solver"], []).append((row["nfe"], value))
                else:
                    ax.plot(row["nfe"], value, "*", color=color, markersize=10)
            styles = itertools.cycle(("-o", "--s", ":^", "-.v"))
            for style, (solver, points) in zip(styles, families.items(), strict=False):
                points.sort()
                name = label if len(families) == 1 else f"{label} ({solver})"
                ax.plot(*zip(*points, strict=True), style, color=color, label=name, markersize=4)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("NFE (star: adaptive)")
        ax.set_title(column, fontsize=9)
        if _positive_values(ax):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=7)
    for ax in list(axes.flat)[len(columns) :]:
        ax.axis("off")
    fig.tight_layout()
    _save(fig, path)
    return True


def _constant(column: str, rows: Sequence[Mapping[str, Any]]) -> bool:
    """A column with one value in every row (e.g. ``transport_cost.w2_squared``, a property
    of the data): nothing to plot against NFE."""
    values = {row[column] for row in rows if column in row}
    return len(rows) > 1 and len(values) == 1


def _positive_values(ax: Any) -> bool:
    """Log-scale a panel whose values are non-negative and whose positive values span more
    than a factor of 20 (zeros, e.g. the consistency of the reference solver with itself,
    are then left off the panel)."""
    values = np.concatenate([line.get_ydata() for line in ax.get_lines()] or [np.zeros(0)])
    positive = values[values > 0]
    return len(positive) > 1 and values.min() >= 0 and positive.max() / positive.min() > 20


def plot_losses(path: Path, logs: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
    """The training loss of each run (running mean over 1/50 of the run), log scale."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for index, (label, log) in enumerate(logs.items()):
        if not log:
            continue
        steps, _, window, smooth = _running_mean(log)
        ax.plot(steps[window - 1 :], smooth, color=f"C{index % 10}", label=label, linewidth=1.2)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (running mean)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, path)


def plot_trajectories_side_by_side(
    path: Path, trajectories: Mapping[str, np.ndarray], titles: Mapping[str, str]
) -> None:
    """2-D trajectories (T, n, 2) of each run next to each other, on shared axes."""
    count = len(trajectories)
    fig, axes = plt.subplots(1, count, figsize=(3.4 * count, 3.6), squeeze=False)
    limits = _limits(np.concatenate([t.reshape(-1, 2) for t in trajectories.values()]), 0.002, 0.05)
    for ax, (label, paths) in zip(axes[0], trajectories.items(), strict=True):
        _draw_paths(ax, paths, size=2, width=0.5, legend=False)
        ax.set_title(titles.get(label, label), fontsize=8)
        ax.set_xlim(limits)
        ax.set_ylim(limits)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    _save(fig, path)


def plot_sample_grid(
    path: Path, reference: np.ndarray, runs: Mapping[str, Sequence[tuple[Mapping, np.ndarray]]]
) -> None:
    """2-D samples: one row per run, one column per solver setting, the data first."""
    columns = max(len(v) for v in runs.values()) + 1
    fig, axes = plt.subplots(
        len(runs), columns, figsize=(2.2 * columns, 2.3 * len(runs)), squeeze=False
    )
    limits = _limits(reference)
    for axes_row, (label, panels) in zip(axes, runs.items(), strict=True):
        cells = [("data", reference), *((f"{setting(r)} (NFE {r['nfe']})", x) for r, x in panels)]
        for ax in axes_row:
            ax.axis("off")
        for ax, (title, points) in zip(axes_row, cells, strict=False):
            ax.axis("on")
            _scatter_panel(ax, points, title, limits, size=0.5)
        axes_row[0].set_ylabel(label, fontsize=8)
        axes_row[0].axis("on")
    fig.tight_layout()
    _save(fig, path)

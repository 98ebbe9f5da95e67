"""Pictures of a run: samples at each solver setting beside the data, the flow's
trajectories, the loss curve, and every metric against NFE; the same side by side for the
runs of a comparison.

Figures are built on ``matplotlib.figure.Figure`` with no pyplot state and no backend switch,
so drawing a report inside a notebook leaves its backend alone; files are written atomically.
Every picture carries a title, axis labels and a legend, so it can be read on its own.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from mfm_core.runner.rundir.checkpoint import atomic_write

DPI = 120
ADAPTIVE_MARKER = "*"


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


def metric_title(column: str, better: Mapping[str, str]) -> str:
    """``w2 (lower is better)``: the column with the direction its metric declares."""
    direction = better.get(column)
    return f"{column} ({direction} is better)" if direction else column


def _label(row: Mapping[str, Any]) -> str:
    count = row.get("steps")
    steps = "" if count is None else f" {count} step{'s' if count != 1 else ''}"
    score = f"\nW2 {row['w2']:.3f}" if isinstance(row.get("w2"), (int, float)) else ""
    return f"{row['solver']}{steps} (NFE {row['nfe']}){score}"


def _limits(points: Any, tail: float = 0.001, pad: float = 0.1) -> tuple[float, float]:
    """Shared x and y limits for 2-D points (any array-like (..., 2)): their ``tail`` and
    ``1 - tail`` quantiles (``tail = 0``: the extremes), widened by ``pad`` of the range."""
    low, high = np.quantile(np.asarray(points, dtype=np.float64).reshape(-1), [tail, 1 - tail])
    margin = pad * (high - low) or 1.0
    return float(low - margin), float(high + margin)


def _scatter_panel(
    ax: Any, points: Any, title: str, limits: tuple[float, float], size: float = 1.0
) -> None:
    ax.scatter(points[:, 0], points[:, 1], s=size, alpha=0.5, color="C0", rasterized=True)
    ax.set_title(title, fontsize=9)
    ax.set_xlim(limits)
    ax.set_ylim(limits)
    ax.set_aspect("equal")
    ax.tick_params(labelsize=7)


def _draw_paths(ax: Any, paths: np.ndarray, size: float, width: float) -> None:
    """Paths (T, n, 2) from noise (grey) to samples (blue), in data coordinates."""
    ax.plot(paths[:, :, 0], paths[:, :, 1], color="olive", alpha=0.25, linewidth=width)
    ax.scatter(paths[0, :, 0], paths[0, :, 1], s=size, color="grey", label="noise (t = 0)")
    ax.scatter(paths[-1, :, 0], paths[-1, :, 1], s=size, color="C0", label="sample (t = 1)")
    ax.plot([], [], color="olive", alpha=0.6, label="path")
    ax.set_aspect("equal")
    ax.set_xlabel("x[0]", fontsize=8)
    ax.set_ylabel("x[1]", fontsize=8)
    ax.tick_params(labelsize=7)


def _paths_legend(fig: Figure, ax: Any) -> None:
    """The legend of ``_draw_paths`` under the panels: inside one it covers paths."""
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=3, fontsize=7)


def _running_mean(
    log: Sequence[Mapping[str, Any]],
) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
    """Steps, losses, the window (1/50 of the log) and the running mean of a training log;
    the mean belongs to ``steps[window - 1:]``."""
    steps = np.array([r["step"] for r in log])
    loss = np.array([r["loss"] for r in log], dtype=np.float64)
    window = max(1, len(loss) // 50)
    return steps, loss, window, np.convolve(loss, np.ones(window) / window, mode="valid")


def _save(fig: Figure, path: Path) -> None:
    """Write the figure as a PNG, atomically."""
    atomic_write(path, lambda handle: fig.savefig(handle, dpi=DPI, format="png"))


def plot_samples(
    path: Path, reference: torch.Tensor, generated: list, rows: list, title: str = ""
) -> None:
    """One panel per solver setting, the data first, on shared axes; 2-D samples only."""
    panels = [("data (held out)", reference)]
    panels += [(_label(r), g) for r, g in zip(rows, generated, strict=True)]
    limits = _limits(reference)
    fig = Figure(figsize=(2.7 * len(panels), 3.3), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (name, points) in zip(axes, panels, strict=True):
        _scatter_panel(ax, points, name, limits)
    fig.suptitle(title or "Samples at each solver setting (NFE: network evaluations)", fontsize=10)
    _save(fig, path)


def plot_trajectories(path: Path, trajectory: torch.Tensor, title: str) -> None:
    """Paths of the learned flow from noise (grey) to samples (blue); 2-D only. The frame
    holds every path whole."""
    paths = trajectory.float().cpu().numpy()
    fig = Figure(figsize=(4.6, 4.6), layout="constrained")
    ax = fig.subplots()
    _draw_paths(ax, paths, size=3, width=0.6)
    _paths_legend(fig, ax)
    limits = _limits(paths.reshape(-1, 2), tail=0.0, pad=0.03)
    ax.set_xlim(limits)
    ax.set_ylim(limits)
    ax.set_title(title, fontsize=9)
    _save(fig, path)


def plot_loss(path: Path, log: Sequence[Mapping[str, Any]], title: str = "") -> None:
    """Training loss per logged step and its running mean, on a log scale."""
    steps, loss, window, smooth = _running_mean(log)
    fig = Figure(figsize=(5.6, 3.4), layout="constrained")
    ax = fig.subplots()
    ax.plot(steps, loss, alpha=0.3, linewidth=0.6, label="loss of each logged step")
    ax.plot(steps[window - 1 :], smooth, linewidth=1.4, label=f"running mean of {window}")
    if np.all(loss[np.isfinite(loss)] > 0):
        ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("flow-matching loss")
    ax.set_title(title or "Training loss", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    _save(fig, path)


def plot_metrics(
    path: Path,
    series: Mapping[str, Sequence[Mapping[str, Any]]],
    *,
    better: Mapping[str, str] | None = None,
    floors: Mapping[str, float] | None = None,
    title: str = "",
) -> bool:
    """Every metric against the NFE, one line per run (``series``: label -> rows) and
    fixed-step solver; the adaptive solver as a star at the NFE it used. ``better`` gives a
    column's direction (``"lower"``, ``"higher"``, ``"closer to 1"``) for its title;
    ``floors`` a level the metric cannot beat at this sample size (e.g. W2 between two draws
    of the data), drawn as a band. Returns False (and writes nothing) when there is no metric
    to plot."""
    better = better or {}
    floors = floors or {}
    rows = [r for rows in series.values() for r in rows]
    columns = [c for c in metric_columns(rows) if not _constant(c, rows)]
    if not columns:
        return False
    width = min(len(columns), 3)
    height = math.ceil(len(columns) / width)
    fig = Figure(figsize=(4.6 * width, 3.6 * height + 0.5), layout="constrained")
    axes = fig.subplots(height, width, squeeze=False)
    for ax, column in zip(axes.flat, columns, strict=False):
        _metric_panel(ax, column, series)
        ax.set_title(metric_title(column, better), fontsize=9)
        floor = floors.get(column)
        if floor is not None and math.isfinite(floor):
            ax.axhspan(0, floor, color="grey", alpha=0.15, label="noise floor (data vs data)")
        _metric_scale(ax, floor)
        ax.set_xlabel("NFE (network evaluations)", fontsize=8)
        ax.set_ylabel(column, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    handles, labels = _legend_entries(axes.flat)
    # As many legend columns as fit under the panels, so the legend is never cut off.
    fig.legend(
        handles, labels, loc="outside lower center", ncols=min(len(labels), 2 * width), fontsize=8
    )
    for ax in list(axes.flat)[len(columns) :]:
        ax.axis("off")
    fig.suptitle(title or "Metrics against the number of solver steps", fontsize=10)
    _save(fig, path)
    return True


def _metric_panel(ax: Any, column: str, series: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
    for index, (label, rows) in enumerate(series.items()):
        color = f"C{index % 10}"
        families: dict[str, list[tuple[int, float]]] = {}
        for row in rows:
            value = row.get(column)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                continue
            if "steps" in row:
                families.setdefault(row["solver"], []).append((row["nfe"], value))
            else:
                ax.plot(
                    row["nfe"],
                    value,
                    ADAPTIVE_MARKER,
                    color=color,
                    markersize=11,
                    label=f"{label}, {row['solver']} (adaptive)",
                )
        styles = itertools.cycle(("-o", "--s", ":^", "-.v"))
        for style, (solver, points) in zip(styles, families.items(), strict=False):
            points.sort()
            name = f"{label}, {solver}"
            ax.plot(*zip(*points, strict=True), style, color=color, label=name, markersize=4)
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(lambda value, _position: f"{value:g}")  # 1, 2, 4, not 2^n


def _metric_scale(ax: Any, floor: float | None) -> None:
    """A log scale when the values span more than a factor of 20 and are positive (zeros, e.g.
    the consistency of the reference solver with itself, are then left off); otherwise a
    linear scale from zero, so noise is not zoomed into."""
    values = np.concatenate([line.get_ydata() for line in ax.get_lines()] or [np.zeros(0)])
    values = values[np.isfinite(values)]
    if not len(values):
        return
    positive = values[values > 0]
    if len(positive) > 1 and values.min() >= 0 and positive.max() / positive.min() > 20:
        ax.set_yscale("log")
        return
    top = max(values.max(), floor or 0.0)
    if values.min() >= 0:
        ax.set_ylim(0, top * 1.08 if top > 0 else 1.0)


def _legend_entries(axes: Any) -> tuple[list[Any], list[str]]:
    """One legend entry per label across all panels."""
    seen: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(label, handle)
    return list(seen.values()), list(seen)


def _constant(column: str, rows: Sequence[Mapping[str, Any]]) -> bool:
    """A column with one value in every row (e.g. ``transport_cost.w2_squared``, a property
    of the data): nothing to plot against NFE."""
    values = {row[column] for row in rows if column in row}
    return len(rows) > 1 and len(values) == 1


def plot_losses(path: Path, logs: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
    """The training loss of each run (running mean over 1/50 of the run), log scale."""
    fig = Figure(figsize=(6.4, 3.8), layout="constrained")
    ax = fig.subplots()
    for index, (label, log) in enumerate(logs.items()):
        if not log:
            continue
        steps, _, window, smooth = _running_mean(log)
        ax.plot(steps[window - 1 :], smooth, color=f"C{index % 10}", label=label, linewidth=1.2)
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("flow-matching loss (running mean)")
    ax.set_title("Training loss of each run", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    _save(fig, path)


def plot_trajectories_side_by_side(
    path: Path, trajectories: Mapping[str, np.ndarray], titles: Mapping[str, str]
) -> None:
    """2-D trajectories (T, n, 2) of each run next to each other, on shared axes that hold
    every path whole."""
    count = len(trajectories)
    fig = Figure(figsize=(3.6 * count, 4.0), layout="constrained")
    axes = fig.subplots(1, count, squeeze=False)[0]
    limits = _limits(np.concatenate([t.reshape(-1, 2) for t in trajectories.values()]), 0.0, 0.03)
    for ax, (label, paths) in zip(axes, trajectories.items(), strict=True):
        _draw_paths(ax, paths, size=2, width=0.5)
        ax.set_title(titles.get(label, label), fontsize=8)
        ax.set_xlim(limits)
        ax.set_ylim(limits)
    _paths_legend(fig, axes[0])
    fig.suptitle("Paths of the learned flows, noise (t = 0) to samples (t = 1)", fontsize=10)
    _save(fig, path)


def plot_sample_grid(
    path: Path, reference: np.ndarray, runs: Mapping[str, Sequence[tuple[Mapping, np.ndarray]]]
) -> None:
    """2-D samples: one row per run, one column per solver setting, the data first."""
    columns = max(len(v) for v in runs.values()) + 1
    fig = Figure(figsize=(2.4 * columns, 2.5 * len(runs) + 0.4), layout="constrained")
    axes = fig.subplots(len(runs), columns, squeeze=False)
    limits = _limits(reference)
    for axes_row, (label, panels) in zip(axes, runs.items(), strict=True):
        cells = [("data", reference), *((_label(r), x) for r, x in panels)]
        for ax in axes_row:
            ax.axis("off")
        for ax, (name, points) in zip(axes_row, cells, strict=False):
            ax.axis("on")
            _scatter_panel(ax, points, name, limits, size=0.5)
            ax.set_xticks([])
            ax.set_yticks([])
        axes_row[0].set_ylabel(label, fontsize=9)
    fig.suptitle("Samples of each run (rows) at each solver setting (columns)", fontsize=10)
    _save(fig, path)

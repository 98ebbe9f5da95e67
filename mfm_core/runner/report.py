"""Reports of metrics: Markdown tables and metric-against-NFE plots, for one run
(``metrics.md``, ``metrics.png``) and for several side by side (``mfm compare``)."""

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

from mfm_core.runner.checkpoint import atomic_write  # noqa: E402

REPORT_FILE = "metrics.md"
PLOT_FILE = "metrics.png"


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


def fmt(value: Any) -> str:
    if value is None:  # a failed metric (NaN, written as null)
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        if value == 0 or 1e-3 <= abs(value) < 1e5:
            return f"{value:.4g}"
        return f"{value:.3e}"
    return str(value)


def _table(header: Sequence[str], body: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in body]
    return lines


def run_summary(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The figures of a run that do not depend on the solver: final loss, the solver-free
    metrics, training steps and time."""
    summary: dict[str, Any] = {"final loss": metrics.get("final_loss", math.nan)}
    summary.update(metrics.get("run", {}))
    train = metrics.get("train", {})
    if "steps" in train:
        summary["steps"] = train["steps"]
    if "seconds" in train:
        summary["train s"] = train["seconds"]
    return summary


def run_markdown(title: str, metrics: Mapping[str, Any]) -> str:
    """A run's metrics.json as Markdown: the summary, then one row per solver setting."""
    rows = metrics.get("samples", [])
    columns = metric_columns(rows)
    summary = run_summary(metrics)
    lines = [f"# {title}", ""]
    lines += _table(list(summary), [list(summary.values())])
    lines += ["", "Per solver setting (the NFE sweep):", ""]
    lines += _table(
        ["solver", "NFE", *columns],
        [[setting(r), r["nfe"], *(r.get(c, math.nan) for c in columns)] for r in rows],
    )
    lines += _errors(metrics)
    return "\n".join(lines) + "\n"


def _errors(metrics: Mapping[str, Any]) -> list[str]:
    errors = metrics.get("errors", {})
    if not errors:
        return []
    return ["", "Metrics that failed (n/a above):", ""] + [f"- {k}: {v}" for k, v in errors.items()]


def compare_markdown(title: str, results: Mapping[str, Mapping[str, Any]], command: str) -> str:
    """Several runs side by side: a summary row per run, then for every metric a table of runs
    against solver settings (an adaptive solver's cell gives the NFE it used)."""
    lines = [f"# {title}", "", "Made by:", "", "```", command, "```", ""]
    summaries = {label: run_summary(m) for label, m in results.items()}
    keys: list[str] = []
    for summary in summaries.values():
        keys += [k for k in summary if k not in keys]
    lines += _table(
        ["run", *keys],
        [[label, *(s.get(k, math.nan) for k in keys)] for label, s in summaries.items()],
    )
    all_rows = [r for m in results.values() for r in m.get("samples", [])]
    settings: list[str] = []
    for row in all_rows:
        if setting(row) not in settings:
            settings.append(setting(row))
    fixed_nfe = {setting(r): r["nfe"] for r in all_rows if "steps" in r}
    header = [f"{s} (NFE {fixed_nfe[s]})" if s in fixed_nfe else s for s in settings]
    for column in metric_columns(all_rows):
        body = []
        for label, metrics in results.items():
            cells = {setting(r): r for r in metrics.get("samples", [])}
            row = [label]
            for name in settings:
                cell = cells.get(name)
                if cell is None or column not in cell:
                    row.append("")
                elif "steps" in cell:
                    row.append(fmt(cell[column]))
                else:
                    row.append(f"{fmt(cell[column])} (NFE {cell['nfe']})")
            body.append(row)
        lines += ["", f"## {column}", ""] + _table(["run", *header], body)
    for label, metrics in results.items():
        errors = _errors(metrics)
        if errors:
            lines += ["", f"## {label}: failed metrics"] + errors[1:]
    return "\n".join(lines) + "\n"


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


def _save(fig: Any, path: Path) -> None:
    atomic_write(path, lambda handle: fig.savefig(handle, dpi=110, format="png"))
    plt.close(fig)


def plot_losses(path: Path, logs: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
    """The training loss of each run (running mean over 1/50 of the run), log scale."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for index, (label, log) in enumerate(logs.items()):
        if not log:
            continue
        steps = np.array([r["step"] for r in log])
        loss = np.array([r["loss"] for r in log])
        window = max(1, len(loss) // 50)
        smooth = np.convolve(loss, np.ones(window) / window, mode="valid")
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
    everything = np.concatenate([t.reshape(-1, 2) for t in trajectories.values()])
    low, high = np.quantile(everything, [0.002, 0.998])
    pad = 0.05 * (high - low)
    for ax, (label, paths) in zip(axes[0], trajectories.items(), strict=True):
        ax.plot(paths[:, :, 0], paths[:, :, 1], color="olive", alpha=0.25, linewidth=0.5)
        ax.scatter(paths[0, :, 0], paths[0, :, 1], s=2, color="grey")
        ax.scatter(paths[-1, :, 0], paths[-1, :, 1], s=2, color="C0")
        ax.set_title(titles.get(label, label), fontsize=8)
        ax.set_xlim(low - pad, high + pad)
        ax.set_ylim(low - pad, high + pad)
        ax.set_aspect("equal")
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
    low, high = np.quantile(reference, [0.001, 0.999])
    pad = 0.1 * (high - low)
    for axes_row, (label, panels) in zip(axes, runs.items(), strict=True):
        cells = [("data", reference), *((f"{setting(r)} (NFE {r['nfe']})", x) for r, x in panels)]
        for ax in axes_row:
            ax.axis("off")
        for ax, (title, points) in zip(axes_row, cells, strict=False):
            ax.axis("on")
            ax.scatter(points[:, 0], points[:, 1], s=0.5, alpha=0.5, rasterized=True)
            ax.set_xlim(low - pad, high + pad)
            ax.set_ylim(low - pad, high + pad)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(title, fontsize=7)
        axes_row[0].set_ylabel(label, fontsize=8)
        axes_row[0].axis("on")
    fig.tight_layout()
    _save(fig, path)


def write_run_report(run_dir: Path, metrics: Mapping[str, Any]) -> None:
    """``metrics.md`` and ``metrics.png`` (when there are metrics) for one run."""
    text = run_markdown(run_dir.name, metrics).encode()
    atomic_write(run_dir / REPORT_FILE, lambda handle: handle.write(text))
    plot_metrics(run_dir / PLOT_FILE, {run_dir.name: metrics.get("samples", [])})

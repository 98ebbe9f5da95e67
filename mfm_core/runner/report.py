"""Reports of metrics: Markdown tables for one run (``metrics.md``, with ``metrics.png`` from
:mod:`mfm_core.runner.plots`) and for several side by side (``mfm compare``)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mfm_core.runner import plots
from mfm_core.runner.checkpoint import atomic_write
from mfm_core.runner.plots import metric_columns, setting

REPORT_FILE = "metrics.md"
PLOT_FILE = "metrics.png"


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


def write_run_report(run_dir: Path, metrics: Mapping[str, Any]) -> None:
    """``metrics.md`` and ``metrics.png`` (when there are metrics) for one run."""
    text = run_markdown(run_dir.name, metrics).encode()
    atomic_write(run_dir / REPORT_FILE, lambda handle: handle.write(text))
    plots.plot_metrics(run_dir / PLOT_FILE, {run_dir.name: metrics.get("samples", [])})

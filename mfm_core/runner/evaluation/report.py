"""Reports of metrics: Markdown tables for one run (``metrics.md``, with ``metrics.png`` from
:mod:`mfm_core.runner.evaluation.plots`) and for several side by side (``mfm compare``)."""

from __future__ import annotations

import math
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mfm_core.runner.evaluation import plots
from mfm_core.runner.evaluation.plots import metric_columns, setting
from mfm_core.runner.rundir.checkpoint import atomic_write

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


def training_loss(log: Sequence[Mapping[str, Any]]) -> float | None:
    """The training loss at the end of a run: the mean of the last 1/50 of its logged steps
    (the running mean ``loss.png`` draws), or None for an empty log."""
    losses = [r["loss"] for r in log if isinstance(r.get("loss"), (int, float))]
    if not losses:
        return None
    tail = losses[-max(1, len(losses) // 50) :]
    return sum(tail) / len(tail)


def next_steps(run_dir: Path, pictures: Sequence[Path]) -> str:
    """Where the pictures are and the commands a user runs next on ``run_dir``."""
    lines = []
    if pictures:
        lines.append(f"pictures: {', '.join(str(p) for p in pictures)}")
    # Quoted for the shell: a path holding `$(...)` or spaces is pasted as one argument.
    run, config = shlex.quote(str(run_dir)), shlex.quote(str(run_dir / "config.toml"))
    lines += [
        "next:",
        f"  mfm sample {run} --num 10000 --out samples.npz   # draw more samples",
    ]
    if run_dir.suffix == ".safetensors":  # shared weights: no run directory to write into
        lines.append(f"  mfm eval {run} eval.num_samples=5000 --out NEW_FOLDER   # evaluate again")
        return "\n".join(lines)
    lines += [
        f"  mfm eval {run} eval.num_samples=5000             # evaluate again "
        f"(into {run_dir / 'evals'})",
        f"  mfm compare {config} coupler.name=independent,exact"
        "   # the same job with other couplings",
    ]
    return "\n".join(lines)


def weights_label(metrics: Mapping[str, Any]) -> str:
    """``EMA weights (decay 0.999, effective 0.9931) at step 300`` or ``raw weights at step
    300``: which weights the figures are of."""
    weights = metrics.get("weights")
    if not weights:
        return "weights of unrecorded kind"
    step = f" at step {weights['step']}" if "step" in weights else ""
    if weights.get("kind") != "ema":
        return f"raw weights{step}"
    return (
        f"EMA weights (decay {fmt(weights.get('decay'))}, effective "
        f"{fmt(weights.get('effective_decay'))}){step}"
    )


def run_summary(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The figures of a run that do not depend on the solver: the training loss (running mean
    at the end of training) beside the loss of the evaluated weights, the solver-free metrics,
    training steps and time."""
    train = metrics.get("train", {})
    summary: dict[str, Any] = {}
    if "loss" in train:
        summary["train loss (running mean)"] = train["loss"]
    summary["loss of evaluated weights"] = metrics.get("final_loss", math.nan)
    summary.update(metrics.get("run", {}))
    if "steps" in train:
        summary["steps"] = train["steps"]
    if "seconds" in train:
        summary["train s"] = train["seconds"]
    coupling = train.get("coupling_time")
    if coupling:
        # per step, and the coupling's share of it: comparable between runs on a loaded
        # machine, where the wall-clock seconds are not
        summary["ms/step"] = coupling["step_ms"]
        share = 100 * coupling["waited_ms"] / coupling["step_ms"] if coupling["step_ms"] else 0
        summary["coupling ms/step (waited, share of step)"] = (
            f"{coupling['coupling_ms']:.2f} ({coupling['waited_ms']:.2f}, {share:.0f} %) over "
            f"{coupling['steps']} steps"
        )
    return summary


def overlapping_runs(results: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One line per pair of runs whose sessions overlapped in time (from their provenance):
    they shared the machine, so their times per step are not comparable."""
    spans = {
        label: [
            (s["started"], s["finished"])
            for s in metrics.get("provenance", [])
            if s.get("started") and s.get("finished")
        ]
        for label, metrics in results.items()
    }
    labels = list(spans)
    lines = []
    for index, first in enumerate(labels):
        for second in labels[index + 1 :]:
            if any(a0 < b1 and b0 < a1 for a0, a1 in spans[first] for b0, b1 in spans[second]):
                lines.append(
                    f"{first} and {second} ran at the same time: their times per step are "
                    "not comparable"
                )
    return lines


def column_header(column: str, better: Mapping[str, str]) -> str:
    """``w2 (lower better)``."""
    direction = better.get(column)
    return f"{column} ({direction} better)" if direction else column


def floor_lines(metrics: Mapping[str, Any]) -> list[str]:
    """One line per metric with a noise floor: what a perfect model scores at this size."""
    count = metrics.get("eval", {}).get("num_samples")
    size = f" of {count} points" if count else " of the evaluation's size"
    return [
        f"noise floor of {name}: {fmt(value)} (two independent draws of the data{size}; "
        "differences below it are noise)"
        for name, value in metrics.get("floors", {}).items()
    ]


def run_markdown(title: str, metrics: Mapping[str, Any]) -> str:
    """A run's metrics.json as Markdown: the summary, then one row per solver setting."""
    rows = metrics.get("samples", [])
    columns = metric_columns(rows)
    better = metrics.get("better", {})
    summary = run_summary(metrics)
    lines = [f"# {title}", "", f"Evaluated: {weights_label(metrics)}.", ""]
    lines += _table([column_header(k, better) for k in summary], [list(summary.values())])
    lines += ["", "Per solver setting (the NFE sweep):", ""]
    lines += _table(
        ["solver", "NFE", *(column_header(c, better) for c in columns)],
        [[setting(r), r["nfe"], *(r.get(c, math.nan) for c in columns)] for r in rows],
    )
    floors = floor_lines(metrics)
    if floors:
        lines += [""] + floors
    lines += _errors(metrics)
    return "\n".join(lines) + "\n"


def terminal_summary(metrics: Mapping[str, Any]) -> str:
    """What the end of a run (or an evaluation) prints: which weights, the two losses, then a
    small aligned table of every solver setting, its NFE and each metric with its direction,
    and the noise floors."""
    rows = metrics.get("samples", [])
    columns = metric_columns(rows)
    better = metrics.get("better", {})
    lines = [f"evaluated {weights_label(metrics)}"]
    summary = run_summary(metrics)
    lines.append("  ".join(f"{key} {fmt(value)}" for key, value in summary.items()))
    header = ["solver", "NFE", *(column_header(c, better) for c in columns)]
    body = [[setting(r), fmt(r["nfe"]), *(fmt(r.get(c)) for c in columns)] for r in rows]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    for line in [header, *body] if rows else []:
        cells = [line[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(line[1:], widths[1:], strict=True)
        ]
        lines.append("  " + "  ".join(cells))
    if not rows:
        lines.append("no solver settings evaluated (eval.solvers = [])")
    seconds = metrics.get("eval_seconds")
    if seconds:
        each = ", ".join(f"{s:.1f}" for s in seconds["solvers"])
        lines.append(
            f"evaluation {seconds['total']:.1f} s (final loss {seconds['final_loss']:.1f} s"
            + (f"; per solver setting {each} s" if each else "")
            + ")"
        )
    lines += floor_lines(metrics)
    lines += [line for line in _errors(metrics) if line]
    return "\n".join(lines)


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
    better = {k: v for m in results.values() for k, v in m.get("better", {}).items()}
    keys: list[str] = []
    for summary in summaries.values():
        keys += [k for k in summary if k not in keys]
    lines += _table(
        ["run", *(column_header(k, better) for k in keys)],
        [[label, *(s.get(k, math.nan) for k in keys)] for label, s in summaries.items()],
    )
    concurrent = overlapping_runs(results)
    if concurrent:
        lines += [""] + [f"- {line}" for line in concurrent]
    floors: dict[str, Any] = {}
    for metrics in results.values():
        floors.update(metrics.get("floors", {}))
    first = next(iter(results.values()), {})
    lines += [""] + floor_lines({"floors": floors, "eval": first.get("eval", {})}) if floors else []
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
    plots.plot_metrics(
        run_dir / PLOT_FILE,
        {run_dir.name: metrics.get("samples", [])},
        better=metrics.get("better", {}),
        floors=metrics.get("floors", {}),
        title=f"{run_dir.name}: metrics against the number of solver steps",
    )

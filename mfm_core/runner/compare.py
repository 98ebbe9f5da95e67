"""``mfm compare``: run one config once per value of swept keys, with the same seeds, and
report the runs side by side.

``coupler.name=independent,exact,sinkhorn`` sweeps the coupler; any key can be swept, and
several swept keys give every combination. A comparison directory holds ``compare.json`` (the
plan), ``base.toml`` (the config as given), one run directory per variant, and the report:
``comparison.md``, ``comparison.json``, ``metrics.png`` (every metric against NFE),
``loss.png`` (the training losses), and for 2-D data ``trajectories.png`` and ``samples.png``.
An interrupted comparison continues with ``mfm compare --resume DIR``: finished runs are kept,
interrupted ones resume from their checkpoints.

Variant directories are slugs of the swept values, always direct children of the comparison
directory; ``created.json`` lists those this comparison made, and only those are ever removed
(one stopped before its first checkpoint restarts from nothing).
"""

from __future__ import annotations

import itertools
import json
import shlex
import shutil
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from mfm_core.config import parse_override
from mfm_core.errors import ConfigError, StoppedError, Terminated
from mfm_core.runner.assembly.validate import validate_config
from mfm_core.runner.evaluation import plots, report
from mfm_core.runner.evaluation.results import sample_keys
from mfm_core.runner.run import resume_run, start_run
from mfm_core.runner.rundir.checkpoint import atomic_write, list_checkpoints
from mfm_core.runner.rundir.layout import (
    CHECKPOINTS,
    METRICS_FILE,
    SAMPLES_FILE,
    create_run_dir,
    read_log,
    write_json,
)
from mfm_core.runner.rundir.lock import run_lock
from mfm_core.runner.rundir.safepath import child, slug

PLAN_FILE = "compare.json"
BASE_CONFIG = "base.toml"
TABLE_FILE = "comparison.md"
RESULTS_FILE = "comparison.json"
CREATED_FILE = "created.json"


@attrs.frozen(kw_only=True)
class Variant:
    """One run of a comparison: its label, run directory name and overrides."""

    label: str
    directory: str
    overrides: list[str]


def split_values(raw: str) -> list[str]:
    """``a,b,c`` -> ``["a", "b", "c"]``, splitting only at commas outside brackets, braces
    and quotes, so TOML arrays and tables stay whole: ``[1, 2],[3]`` -> ``["[1, 2]", "[3]"]``."""
    values, depth, quote, start = [], 0, "", 0
    for index, char in enumerate(raw):
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            values.append(raw[start:index].strip())
            start = index + 1
    values.append(raw[start:].strip())
    return values


def plan_variants(overrides: list[str]) -> tuple[list[str], list[Variant]]:
    """The fixed overrides and one variant per combination of swept values."""
    fixed: list[str] = []
    sweeps: list[tuple[str, list[str]]] = []
    for text in overrides:
        parse_override(text)  # a malformed override is an error before anything runs
        key, _, raw = text.partition("=")
        values = split_values(raw)
        if len(values) == 1:
            fixed.append(text)
            continue
        if any(not v for v in values):
            raise ConfigError(f"override {text!r}: an empty value in the list of values to sweep")
        if len(set(values)) != len(values):
            raise ConfigError(f"override {text!r}: a value is listed twice")
        if key.strip() in (k for k, _ in sweeps):
            raise ConfigError(f"override {text!r}: {key.strip()} is swept twice")
        sweeps.append((key.strip(), values))
    if not sweeps:
        raise ConfigError(
            "nothing to compare: give at least one key with several values, e.g. "
            "coupler.name=independent,exact"
        )
    variants = []
    for combination in itertools.product(*(values for _, values in sweeps)):
        if len(sweeps) == 1:
            label = combination[0]
        else:
            label = " ".join(
                f"{key.rsplit('.', 1)[-1]}={value}"
                for (key, _), value in zip(sweeps, combination, strict=True)
            )
        directory = slug(label)
        extra = [f"{key}={value}" for (key, _), value in zip(sweeps, combination, strict=True)]
        variants.append(Variant(label=label, directory=directory, overrides=fixed + extra))
    names = [v.directory for v in variants]
    for index, variant in enumerate(variants):
        if names.count(variant.directory) > 1:
            variants[index] = attrs.evolve(variant, directory=f"{index:02d}-{variant.directory}")
    return fixed, variants


def start_compare(
    config_path: Path, overrides: list[str], runs_root: Path, progress: bool = True
) -> Path:
    """Check every variant's config, then run them one after another; returns the comparison
    directory (``runs_root/NNNNN-compare-<config>``)."""
    _, variants = plan_variants(list(overrides))
    for variant in variants:  # every config error before any training
        try:
            validate_config(config_path, variant.overrides)
        except ConfigError as exc:
            raise ConfigError(f"variant {variant.label!r}: {exc}") from None
    directory = create_run_dir(runs_root, f"compare-{config_path.stem}")
    shutil.copyfile(config_path, directory / BASE_CONFIG)
    command = shlex.join(["mfm", "compare", str(config_path), *overrides])
    write_json(
        directory / PLAN_FILE,
        {"command": command, "variants": [attrs.asdict(v) for v in variants]},
    )
    return _run_all(directory, progress)


def resume_compare(directory: Path, progress: bool = True) -> Path:
    """Continue an interrupted comparison."""
    if not (directory / PLAN_FILE).is_file():
        raise ConfigError(f"{str(directory)!r} is not a comparison directory (no {PLAN_FILE})")
    return _run_all(directory, progress)


def _read_plan(directory: Path) -> tuple[str, list[Variant]]:
    """The plan, checked: a hand-edited or hostile ``compare.json`` is an error, and every
    variant directory is a slug directly inside ``directory``."""
    where = directory / PLAN_FILE
    try:
        plan = json.loads(where.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: not a comparison plan ({exc})") from None
    rows = plan.get("variants") if isinstance(plan, dict) else None
    if not isinstance(plan, dict) or not isinstance(plan.get("command"), str) or not rows:
        raise ConfigError(f"{where}: not a comparison plan (expected a command and variants)")
    variants = []
    for row in rows if isinstance(rows, list) else [None]:
        fields = {"label": str, "directory": str, "overrides": list}
        if not (
            isinstance(row, dict)
            and row.keys() == fields.keys()
            and all(isinstance(row[k], t) for k, t in fields.items())
            and all(isinstance(o, str) for o in row["overrides"])
        ):
            raise ConfigError(
                f"{where}: every variant must be {{label, directory, overrides}} with strings; "
                f"got {row!r}"
            )
        try:
            child(directory, row["directory"])
        except ConfigError as exc:
            raise ConfigError(f"{where}: variant {row['label']!r}: {exc}") from None
        variants.append(Variant(**row))
    if len({v.directory for v in variants}) != len(variants):
        raise ConfigError(f"{where}: two variants share a directory")
    return plan["command"], variants


def _created(directory: Path) -> list[str]:
    """The variant directories this comparison made (see :func:`_run_all`)."""
    path = directory / CREATED_FILE
    if not path.is_file():
        return []
    try:
        names = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return []  # unreadable: remove nothing
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []


def _run_all(directory: Path, progress: bool) -> Path:
    """Run (or finish) every variant, then write the report. A stop (Ctrl-C, SIGTERM) says
    how to continue the comparison, not only the variant it stopped in."""
    resume = ["mfm", "compare", "--resume", str(directory)]
    with run_lock(directory):
        command, variants = _read_plan(directory)
        try:
            for variant in variants:
                _run_variant(directory, variant, progress)
        except StoppedError as exc:
            raise exc.advising(resume) from None
        except KeyboardInterrupt as exc:
            name = "SIGTERM" if isinstance(exc, Terminated) else "Ctrl-C"
            raise StoppedError(f"stopped by {name}").advising(resume) from None
        write_comparison(directory, command, variants)
    return directory


def _run_variant(directory: Path, variant: Variant, progress: bool) -> None:
    """Finished: kept; checkpointed: resumed; made by this comparison but stopped before its
    first checkpoint: made anew; anything else in the way: an error, nothing removed."""
    run_dir = child(directory, variant.directory)
    if (run_dir / METRICS_FILE).is_file():
        return
    if list_checkpoints(run_dir / CHECKPOINTS):
        resume_run(run_dir, [], progress=progress)
        return
    created = _created(directory)
    if run_dir.exists() or run_dir.is_symlink():
        if variant.directory not in created or run_dir.is_symlink():
            raise ConfigError(
                f"{str(run_dir)!r} is in the way of variant {variant.label!r} and was not made "
                "by this comparison; move it away, then resume"
            )
        shutil.rmtree(run_dir)
    run_dir.mkdir()
    if variant.directory not in created:
        write_json(directory / CREATED_FILE, [*created, variant.directory])
    start_run(directory / BASE_CONFIG, variant.overrides, directory, progress, run_dir=run_dir)


def write_comparison(directory: Path, command: str, variants: list[Variant]) -> None:
    """The report of a comparison whose runs have finished."""
    results = {
        v.label: json.loads((directory / v.directory / METRICS_FILE).read_text()) for v in variants
    }
    write_json(directory / RESULTS_FILE, {"command": command, "runs": results})
    plots.plot_metrics(
        directory / report.PLOT_FILE,
        {k: m.get("samples", []) for k, m in results.items()},
        better=_merged(results, "better"),
        floors=_merged(results, "floors"),
        title="Metrics of each run against the number of solver steps",
    )
    plots.plot_losses(
        directory / "loss.png", {v.label: read_log(directory / v.directory) for v in variants}
    )
    _plot_2d(directory, variants, results)
    title = f"Comparison: {directory.name}"
    text = report.compare_markdown(title, results, command) + _picture_links(directory)
    atomic_write(directory / TABLE_FILE, lambda handle: handle.write(text.encode()))


PICTURES = {
    report.PLOT_FILE: "every metric against NFE",
    "loss.png": "training loss of each run",
    "samples.png": "samples of each run at each solver setting",
    "trajectories.png": "paths of each learned flow",
}


def _picture_links(directory: Path) -> str:
    """Markdown links to the comparison's pictures, beside comparison.md."""
    found = [(name, what) for name, what in PICTURES.items() if (directory / name).is_file()]
    if not found:
        return ""
    lines = ["", "## Pictures", ""] + [f"- [{what}]({name})" for name, what in found]
    return "\n".join(lines) + "\n"


def _merged(results: dict[str, Any], key: str) -> dict[str, Any]:
    """A metrics.json table (``better``, ``floors``) of every run, merged."""
    merged: dict[str, Any] = {}
    for metrics in results.values():
        merged.update(metrics.get(key) or {})
    return merged


def _plot_2d(directory: Path, variants: list[Variant], results: dict[str, Any]) -> None:
    """Trajectories and samples of every run side by side, for 2-D data."""
    trajectories, titles, samples = {}, {}, {}
    reference = None
    for variant in variants:
        path = directory / variant.directory / SAMPLES_FILE
        if not path.is_file():
            return
        with np.load(path) as arrays:
            if arrays["reference"].ndim != 2 or arrays["reference"].shape[1] != 2:
                return
            reference = arrays["reference"]
            rows = results[variant.label].get("samples", [])
            samples[variant.label] = [
                (row, arrays[key])
                for row, key in zip(rows, sample_keys(rows), strict=True)
                if key in arrays
            ]
            if "trajectory" in arrays:
                trajectories[variant.label] = arrays["trajectory"]
                titles[variant.label] = f"{variant.label} (NFE {int(arrays['trajectory_nfe'])})"
    if trajectories:
        plots.plot_trajectories_side_by_side(directory / "trajectories.png", trajectories, titles)
    if samples and reference is not None:
        plots.plot_sample_grid(directory / "samples.png", reference, samples)

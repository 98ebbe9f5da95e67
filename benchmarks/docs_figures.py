"""Regenerate every table and picture of README.md and docs/results.md from fresh runs.

    python benchmarks/docs_figures.py                      # every section (44 min, idle 2 cores)
    python benchmarks/docs_figures.py --only quickstart,digits
    python benchmarks/docs_figures.py --list               # the sections, one line each
    python benchmarks/docs_figures.py --smoke --root /tmp/docs-copy   # tiny budgets, a copy

Each section runs its commands (``mfm-run``, ``mfm compare``, ``mfm eval``, benchmark
scripts) as subprocesses under ``--runs`` (default ``runs/docs-figures/``), reads the
figures from what they wrote (``metrics.json``, ``comparison.md``, a benchmark's table), and
writes them between markers in the Markdown files it owns::

    <!-- docs_figures:quickstart -->
    ...generated...
    <!-- /docs_figures:quickstart -->

A block is ``NAME`` or ``NAME.PART`` (a section may own several blocks, in several files).
Every block starts with a stamp: the commit, the date, the machine (cores, load average at
the start and the end), the wall time and, in the section's first block, the commands.
Pictures are copied into docs/images/. A section that fails leaves its blocks and pictures as
they were; the command then exits 1 naming the section and its log. Nothing is written when
a marker is missing or duplicated. Add a section with :func:`section` below.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README, RESULTS = "README.md", "docs/results.md"
IMAGES = "docs/images"
BLOCK = re.compile(r"<!-- (/?)docs_figures:([A-Za-z0-9_.-]+) -->")
TABLE_RULE = re.compile(r"^\s*\|(\s*:?-+:?\s*\|)+\s*$")
IMAGE_LINK = re.compile(r"!\[[^\]]*\]\([^)]*\)")


class SectionError(Exception):
    """A section could not produce its figures (a command failed, an output is missing)."""


class Skipped(Exception):
    """A section that cannot run here: its blocks keep their content and their stamp."""


class MarkerError(Exception):
    """A target file lacks a block's markers, or holds them twice."""


# --- The registry ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Section:
    """``build(ctx)`` returns the body of each block it owns, keyed by (file, block)."""

    name: str
    description: str
    blocks: tuple[tuple[str, str], ...]  # (file relative to --root, block name)
    build: Callable[[Context], dict[tuple[str, str], str]]


SECTIONS: dict[str, Section] = {}


def section(name: str, description: str, blocks: list[tuple[str, str]]):
    """Register ``build`` as the section ``name``, owning ``blocks`` (file, block name)."""

    def register(build):
        SECTIONS[name] = Section(name, description, tuple(blocks), build)
        return build

    return register


# --- Running commands ------------------------------------------------------------------------


@dataclass
class Context:
    """What a section gets: where to run, the budget, and helpers that record what it ran."""

    root: Path  # the folder holding README.md and docs/ (the real ones, or a copy)
    runs: Path  # this section's folder under --runs
    log: Path
    smoke: bool
    args: argparse.Namespace
    shared: dict  # what earlier sections of this invocation leave for later ones
    commands: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # said in the stamp (e.g. a reused run)
    images: list[tuple[Path, str]] = field(default_factory=list)  # (source, docs/images name)

    def run(self, display: list[str], argv: list[str]) -> str:
        """Run ``argv`` in the repository, its output appended to the log; ``display`` is the
        command as a user types it (recorded in the stamp). Returns its standard output."""
        shown = shlex.join(display)
        self.commands.append(shown)
        with self.log.open("a") as log:
            log.write(f"\n$ {shown}\n")
            log.flush()
            env = dict(os.environ, PYTHONUNBUFFERED="1")
            done = subprocess.run(
                argv, cwd=REPO, stdout=subprocess.PIPE, stderr=log, text=True, env=env
            )
            log.write(done.stdout)
        if done.returncode != 0:
            raise SectionError(f"`{shown}` exited with {done.returncode}")
        return done.stdout

    def mfm(self, *words: str) -> Path:
        """``mfm WORDS...`` (``mfm-run`` for ``run``); returns the directory it printed last
        (``done: DIR``)."""
        display = ["mfm-run", *words[1:]] if words[0] == "run" else ["mfm", *words]
        out = self.run(display, [sys.executable, "-m", "mfm_core", *words])
        found = re.findall(r"^done: (.+)$", out, flags=re.M)
        if not found:
            raise SectionError(f"`{shlex.join(display)}` printed no 'done: DIR' line")
        return Path(found[-1])

    def script(self, name: str, *words: str, python: str | None = None) -> str:
        """``python benchmarks/NAME WORDS...``; returns its standard output."""
        display = ["python", f"benchmarks/{name}", *words]
        if python:
            display[0] = python
        return self.run(
            display, [python or sys.executable, str(REPO / "benchmarks" / name), *words]
        )

    def where(self, path: Path) -> str:
        """``path`` as the commands show it: relative to the repository when inside it."""
        try:
            return str(path.resolve().relative_to(REPO))
        except ValueError:
            return str(path)

    def image(self, source: Path, name: str, file: str, alt: str) -> str:
        """Stage ``source`` as docs/images/NAME (copied only if the section succeeds) and
        return its Markdown link as seen from ``file``."""
        if not source.is_file():
            raise SectionError(f"no picture at {source}")
        self.images.append((source, name))
        link = os.path.relpath(self.root / IMAGES / name, (self.root / file).parent)
        return f"![{alt}]({Path(link).as_posix()})"


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SectionError(f"cannot read {path}: {exc}") from None


def printed_tables(out: str, what: str) -> list[str]:
    """The Markdown tables a benchmark printed, each as one string (SectionError if none)."""
    tables, current = [], []
    for line in out.splitlines():
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append("\n".join(current))
            current = []
    if current:
        tables.append("\n".join(current))
    if not tables:
        raise SectionError(f"{what} printed no table")
    return tables


# --- Budgets ---------------------------------------------------------------------------------


def solvers(steps: list[int], dopri5: str | None) -> str:
    """An ``eval.solvers=[...]`` override: Euler at ``steps``, then dopri5 at ``dopri5`` tol."""
    rows = [f'{{name="euler",steps={n}}}' for n in steps]
    if dopri5:
        rows.append(f'{{name="dopri5",atol={dopri5},rtol={dopri5}}}')
    return "eval.solvers=[" + ",".join(rows) + "]"


def smoke_2d(ctx: Context, steps: int = 30) -> list[str]:
    """Tiny budgets for the 2-D jobs (figures meaningless, every output still written)."""
    if not ctx.smoke:
        return []
    return [
        f"train.steps={steps}",
        f"train.checkpoint_every={steps}",
        "eval.num_samples=200",
        solvers([1, 2], "1e-3"),
        "solver.atol=1e-3",
        "solver.rtol=1e-3",
    ]


def smoke_paper(ctx: Context) -> list[str]:
    """paper-2d's metrics at smoke size (its W2^2 floor alone takes 17 s per run)."""
    if not ctx.smoke:
        return []
    metrics = (
        '"w2","straightness",{name="transport_cost",ot_samples=200,repeats=2},'
        '{name="grad_variance",batches=2},"consistency","nll"'
    )
    return [*smoke_2d(ctx), f"eval.metrics=[{metrics}]"]


DIGITS_EULER = [1, 2, 4, 8]


def digits_budget(ctx: Context) -> list[str]:
    """Euler only: dopri5 took 16 min per digits run (230 evaluations of 500 samples)."""
    if not ctx.smoke:
        return [solvers(DIGITS_EULER, None)]
    return [
        "train.steps=4",
        "train.checkpoint_every=4",
        "eval.num_samples=40",
        "eval.grid=20",
        "eval.loss_batches=1",
        solvers([1, 2], None),
        'eval.metrics=[{name="digits",epochs=1}]',
    ]


# --- Formatting ------------------------------------------------------------------------------


def num(value, digits: int = 4) -> str:
    """A figure as the docs print it: ``digits`` significant digits."""
    if value is None:
        return "n/a"
    if isinstance(value, int):
        return str(value)
    if value != 0 and not 1e-3 <= abs(value) < 1e5:
        return f"{value:.2e}"
    text = f"{value:#.{digits}g}"  # '#': 1.00, not 1 (trailing zeros are significant)
    return text[:-1] if text.endswith(".") else text


def seconds_text(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def solver_label(row: dict) -> str:
    return f"euler {row['steps']}" if row["solver"] == "euler" else row["solver"]


def by_solver(metrics: dict) -> dict[str, dict]:
    return {solver_label(row): row for row in metrics.get("samples", [])}


def sample(metrics: dict, label: str, key: str):
    row = by_solver(metrics).get(label)
    if row is None or key not in row:
        raise SectionError(f"no {key} at {label} in metrics.json")
    return row[key]


def adaptive(metrics: dict) -> list[dict]:
    return [row for row in metrics.get("samples", []) if row["solver"] != "euler"]


# --- quickstart ------------------------------------------------------------------------------


@section(
    "quickstart",
    "README: exact against independent on the quickstart (W2 over the NFE sweep, pictures)",
    [(README, "quickstart")],
)
def quickstart(ctx: Context) -> dict:
    compare = ctx.mfm(
        "compare",
        "tomlconfigs/quickstart.toml",
        "coupler.name=exact,independent",
        *smoke_2d(ctx),
        "--runs",
        ctx.where(ctx.runs),
        "--quiet",
    )
    runs = {name: read_json(compare / name / "metrics.json") for name in ("exact", "independent")}
    labels = [solver_label(row) for row in runs["exact"]["samples"]]
    header = ["coupling"]
    header += [f"W2, {label} (NFE)" if label == "dopri5" else f"W2, {label}" for label in labels]
    header.append("loss of evaluated weights")
    rows = []
    for name, metrics in runs.items():
        cells = []
        for label in labels:
            row = by_solver(metrics)[label]
            cell = num(row["w2"], 3)
            cells.append(f"{cell} ({row['nfe']})" if row["solver"] != "euler" else cell)
        title = "`exact` (BatchOT)" if name == "exact" else f"`{name}`"
        rows.append([title, *cells, num(metrics["final_loss"], 3)])
    exact, independent = runs["exact"], runs["independent"]
    weights = exact.get("weights") or {}
    text = [
        table(header, rows),
        "",
        f"Training took {num(exact['train']['seconds'], 3)} s with exact OT and "
        f"{num(independent['train']['seconds'], 3)} s without, and the evaluation "
        f"{num(exact['eval_seconds']['total'], 3)} s and "
        f"{num(independent['eval_seconds']['total'], 3)} s (seed 0; "
        f"EMA weights, decay {weights.get('decay')}, effective "
        f"{num(weights.get('effective_decay'))} at step {weights.get('step')}). W2 is between "
        f"{exact['eval']['num_samples']} generated and as many fresh data points; two draws of "
        f"the data itself are {num(exact['floors']['w2'], 2)} apart (the noise floor).",
    ]
    for row_e, row_i in zip(adaptive(exact), adaptive(independent), strict=True):
        text[-1] += (
            f" With {row_e['solver']}, exact OT needs NFE {row_e['nfe']} and independent "
            f"pairs {row_i['nfe']}."
        )
    text += [
        "",
        "Exact OT (BatchOT), samples at each solver setting, next to the data:",
        ctx.image(
            compare / "exact" / "samples.png",
            "quickstart-exact.png",
            README,
            "Samples of the exact-OT run at each solver setting, next to the data",
        ),
        "Independent pairs:",
        ctx.image(
            compare / "independent" / "samples.png",
            "quickstart-independent.png",
            README,
            "The same for independent pairs",
        ),
        "Paths of the learned flows, exact OT on the left, independent pairs on the right:",
        ctx.image(
            compare / "exact" / "trajectories.png",
            "quickstart-exact-trajectories.png",
            README,
            "Trajectories of the exact-OT flow",
        )
        + " "
        + ctx.image(
            compare / "independent" / "trajectories.png",
            "quickstart-independent-trajectories.png",
            README,
            "Trajectories of the independent flow",
        ),
    ]
    return {(README, "quickstart"): "\n".join(text)}


# --- paper-2d --------------------------------------------------------------------------------

PAPER_COUPLERS = "independent,exact,sinkhorn,stable,heuristic"
PAPER_TABLES = {  # block part -> the comparison.md headings it quotes
    "w2": ["w2"],
    "straightness": ["straightness"],
    "consistency": ["consistency"],
    "transport-cost": ["transport_cost.cost", "transport_cost.ratio"],
    "nll": ["nll"],
}


def split_comparison(text: str) -> tuple[list[str], dict[str, str]]:
    """comparison.md: the lines before the first metric heading, and each metric's table."""
    parts = re.split(r"^## (.+)$", text, flags=re.M)
    tables = {}
    for heading, body in zip(parts[1::2], parts[2::2], strict=True):
        tables[heading.strip()] = "\n".join(
            line for line in body.splitlines() if line.startswith("|")
        )
    return parts[0].splitlines(), tables


def first_cell(table_text: str) -> float:
    """The first figure of a comparison table (the first run, the first solver setting)."""
    cell = table_text.splitlines()[2].split("|")[2]
    return float(cell.split()[0])


@section(
    "paper-2d",
    "results.md: the five couplings on the 2-D checkerboard (every metric table, four plots)",
    [(RESULTS, f"paper-2d.{p}") for p in ["runs", *PAPER_TABLES, "plots", "ranking"]],
)
def paper_2d(ctx: Context) -> dict:
    compare = ctx.mfm(
        "compare",
        "tomlconfigs/paper-2d.toml",
        f"coupler.name={PAPER_COUPLERS}",
        *smoke_paper(ctx),
        "--runs",
        ctx.where(ctx.runs),
        "--quiet",
    )
    ctx.shared["paper-2d"] = compare
    head, tables = split_comparison((compare / "comparison.md").read_text())
    missing = [h for hs in PAPER_TABLES.values() for h in hs if h not in tables]
    if missing:
        raise SectionError(f"{compare / 'comparison.md'} has no table for {', '.join(missing)}")
    runs_table = "\n".join(line for line in head if line.startswith("|"))
    floor = [line for line in head if line.startswith("noise floor")]
    out = {(RESULTS, "paper-2d.runs"): "\n\n".join([runs_table, *floor])}
    for part, headings in PAPER_TABLES.items():
        texts = [tables[h] for h in headings]
        if part == "transport-cost":
            w2sq = first_cell(tables["transport_cost.w2_squared"])
            se = first_cell(tables["transport_cost.w2_squared_se"])
            texts = [
                f"The floor `W2^2 = {num(w2sq)} +- {num(se, 2)}` (standard error).",
                texts[0],
                "Ratio to W2^2:",
                texts[1],
            ]
        out[(RESULTS, f"paper-2d.{part}")] = "\n\n".join(texts)
    plots = [
        ("metrics.png", "results-metrics.png", "Every metric against NFE (stars: dopri5)"),
        ("samples.png", "results-samples.png", "Samples at each solver setting (first: data)"),
        ("trajectories.png", "results-trajectories.png", "The learned flows (dopri5)"),
        ("loss.png", "results-loss.png", "Training losses (running means)"),
    ]
    lines = []
    for source, name, what in plots:
        lines += [f"{what}:", ctx.image(compare / source, name, RESULTS, what), ""]
    out[(RESULTS, "paper-2d.plots")] = "\n".join(lines).rstrip()
    out[(RESULTS, "paper-2d.ranking")] = paper_ranking(compare)
    return out


def paper_ranking(compare: Path) -> str:
    """Generated sentences: the orders the paper's claims are about."""
    runs = {}
    for name in PAPER_COUPLERS.split(","):
        runs[name] = read_json(compare / name / "metrics.json")

    def order(values: dict[str, float]) -> str:
        ranked = sorted(values.items(), key=lambda kv: -kv[1])
        return " > ".join(f"{name} ({num(value, 3)})" for name, value in ranked)

    loss = {n: m["final_loss"] for n, m in runs.items()}
    grad = {n: m.get("run", {}).get("grad_variance") for n, m in runs.items()}
    lines = [
        f"- Final loss (loss of the evaluated weights): {order(loss)}; "
        f"independent / exact = {loss['independent'] / loss['exact']:.0f}x.",
    ]
    if all(v is not None for v in grad.values()):
        lines.append(f"- Gradient variance: {order(grad)}.")
    last = {n: adaptive(m)[-1] for n, m in runs.items() if adaptive(m)}
    if last:
        lines.append(
            "- Straightness of the flow (adaptive solver): "
            + order({n: r["straightness"] for n, r in last.items() if "straightness" in r})
            + "; its NFE: "
            + ", ".join(
                f"{n} {r['nfe']}" for n, r in sorted(last.items(), key=lambda kv: kv[1]["nfe"])
            )
            + "."
        )
    first = {n: m["samples"][0] for n, m in runs.items()}
    label = solver_label(next(iter(first.values())))
    lines.append(f"- W2 at {label}: " + order({n: r["w2"] for n, r in first.items()}) + ".")
    if all("consistency" in r for r in first.values()):
        lines.append(
            f"- Consistency at {label}: "
            + order({n: r["consistency"] for n, r in first.items()})
            + "."
        )
    return "\n".join(lines)


# --- baselines -------------------------------------------------------------------------------


def find_teacher(ctx: Context) -> tuple[Path | None, str]:
    """The independent run of paper-2d: this invocation's, else the newest finished one under
    --runs with this budget's steps, else None."""
    if "paper-2d" in ctx.shared:
        compare = ctx.shared["paper-2d"]
        return (
            compare,
            "teacher and the `exact` row: the paper-2d runs of this invocation "
            f"({ctx.where(compare)})",
        )
    steps = 30 if ctx.smoke else 6000
    found = []
    for metrics in Path(ctx.args.runs).glob(
        "*/paper-2d/*-compare-paper-2d/independent/metrics.json"
    ):
        compare = metrics.parents[1]
        if (compare / "comparison.md").is_file() and read_json(metrics)["train"]["steps"] == steps:
            found.append(compare)
    if found:
        compare = max(found, key=lambda p: p.stat().st_mtime)
        return (
            compare,
            f"teacher and the `exact` row: an earlier paper-2d comparison ({ctx.where(compare)})",
        )
    return None, "teacher: trained by this section (no paper-2d comparison of this budget found)"


@section(
    "baselines",
    "results.md: the VP path and rectified flow (reflow of the independent paper-2d run)",
    [(RESULTS, "baselines")],
)
def baselines(ctx: Context) -> dict:
    compare, note = find_teacher(ctx)
    ctx.notes.append(note)
    budget = smoke_paper(ctx)
    runs_arg = ["--runs", ctx.where(ctx.runs), "--quiet"]
    if compare is None:
        teacher = ctx.mfm(
            "run", "tomlconfigs/paper-2d.toml", "coupler.name=independent", *budget, *runs_arg
        )
    else:
        teacher = compare / "independent"
    vp = ctx.mfm(
        "run",
        "tomlconfigs/paper-2d.toml",
        "coupler.name=independent",
        "path.name=vp",
        *budget,
        *runs_arg,
    )
    reflow = ctx.mfm(
        "run",
        "tomlconfigs/paper-2d.toml",
        "coupler.name=reflow",
        f"coupler.run={ctx.where(teacher)}",
        'coupler.solver={name="rk4",steps=8}',
        *budget,
        *runs_arg,
    )
    rows = [
        ("independent, `cond-ot` path (the teacher)", teacher),
        ("independent, `vp` path", vp),
        ("`reflow` of the independent run", reflow),
    ]
    if compare is not None:
        rows.append(("exact (above)", compare / "exact"))
    metrics = {title: read_json(run / "metrics.json") for title, run in rows}
    labels = [solver_label(r) for r in metrics[rows[0][0]]["samples"]]
    header = ["run", "final loss", "grad_variance"]
    header += [
        f"W2, {label}" + (" (NFE)" if not label.startswith("euler") else "") for label in labels
    ]
    header += ["straightness (adaptive)", "train s"]
    body = []
    for title, m in metrics.items():
        cells = [title, num(m["final_loss"]), num(m.get("run", {}).get("grad_variance"))]
        for label in labels:
            r = by_solver(m)[label]
            cells.append(num(r["w2"]) + (f" ({r['nfe']})" if r["solver"] != "euler" else ""))
        last = adaptive(m)
        cells += [num(last[-1].get("straightness")) if last else "n/a", num(m["train"]["seconds"])]
        body.append(cells)
    return {(RESULTS, "baselines"): table(header, body)}


# --- torchcfm --------------------------------------------------------------------------------


@section(
    "torchcfm",
    "results.md: mfm against TorchCFM's OT-CFM (needs --torchcfm-python; skipped without)",
    [(RESULTS, "torchcfm")],
)
def torchcfm(ctx: Context) -> dict:
    python = ctx.args.torchcfm_python
    if not python:
        raise Skipped("no --torchcfm-python PATH (an interpreter that has torchcfm and mfm)")
    probe = subprocess.run(
        [python, "-c", "import torchcfm, mfm_core"], capture_output=True, text=True
    )
    if probe.returncode != 0:
        raise Skipped(f"{python} cannot import torchcfm and mfm_core")
    words = ["--steps", "30"] if ctx.smoke else []
    budget = "smoke budget: 30 steps" if ctx.smoke else "the quickstart's 6000 steps"
    out = ctx.script("vs_torchcfm.py", *words, python=python)
    lines = [line for line in out.splitlines() if line.startswith("|")]
    ratio = re.search(r"mfm / torchcfm training time: ([0-9.]+)", out)
    if len(lines) < 4 or ratio is None:
        raise SectionError("vs_torchcfm.py printed no table")
    return {
        (RESULTS, "torchcfm"): "\n".join(lines)
        + f"\n\nmfm trains in {ratio.group(1)} times TorchCFM's time ({budget})."
    }


# --- digits ----------------------------------------------------------------------------------


@section(
    "digits",
    "results.md and README: digits, exact against independent, guidance 1 and 2 (Euler only)",
    [(RESULTS, "digits"), (RESULTS, "digits.grids"), (README, "digits")],
)
def digits(ctx: Context) -> dict:
    budget = digits_budget(ctx)
    compare = ctx.mfm(
        "compare",
        "tomlconfigs/digits.toml",
        "coupler.name=exact,independent",
        *budget,
        "--runs",
        ctx.where(ctx.runs),
        "--quiet",
    )
    ctx.shared["digits"] = (compare / "exact", budget)
    plain, guided = {}, {}
    for name in ("exact", "independent"):
        plain[name] = read_json(compare / name / "metrics.json")
        out = ctx.runs / f"guided-{name}"
        # --out: the guided evaluation lands beside the runs, not inside them
        ctx.mfm(
            "eval", ctx.where(compare / name), "eval.guidance=2.0", *budget, "--out", ctx.where(out)
        )
        guided[name] = read_json(out / "metrics.json")
    labels = [solver_label(r) for r in plain["exact"]["samples"]]
    floor = sample(plain["exact"], labels[0], "digits.fd_real")
    header = [
        "solver", "NFE", "exact fd", "independent fd", "exact acc", "independent acc",
        "exact fd, w = 2", "independent fd, w = 2", "exact acc, w = 2", "independent acc, w = 2",
    ]  # fmt: skip
    rows = []
    for label in labels:
        cells = [label, str(sample(plain["exact"], label, "nfe"))]
        for key in ("digits.fd", "digits.accuracy"):
            cells += [num(sample(plain[n], label, key), 4) for n in ("exact", "independent")]
        for key in ("digits.fd", "digits.accuracy"):
            cells += [num(sample(guided[n], label, key), 4) for n in ("exact", "independent")]
        rows.append(cells)
    at = "euler 2" if "euler 2" in labels else labels[-1]
    fd = {n: sample(plain[n], at, "digits.fd") for n in plain}
    fd_g = {n: sample(guided[n], at, "digits.fd") for n in guided}
    seconds = {n: plain[n]["train"]["seconds"] for n in plain}
    text = [
        table(header, rows),
        "",
        f"`fd_real` = {num(floor)}: the same distance for real training images, the floor. "
        f"Final loss: exact {num(plain['exact']['final_loss'])}, independent "
        f"{num(plain['independent']['final_loss'])}. Training took {num(seconds['exact'], 3)} s "
        f"(exact) and {num(seconds['independent'], 3)} s (independent); "
        f"{plain['exact']['eval']['num_samples']} samples per evaluation. The sweep is cut to "
        "Euler steps (an adaptive dopri5 solve at tolerance 1e-5 needs a few hundred "
        "evaluations of the U-Net per sample, which would make this command many times longer; "
        "`mfm eval RUN` with the config's own sweep adds it).",
    ]
    grids = []
    for name, title in (("exact", "Exact"), ("independent", "Independent")):
        grids.append(
            f"{title}, w = 1: "
            + ctx.image(
                compare / name / "samples.png", f"digits-{name}.png", RESULTS, f"digits, {name}"
            )
        )
        grids.append(
            f"{title}, w = 2: "
            + ctx.image(
                ctx.runs / f"guided-{name}" / "samples.png",
                f"digits-{name}-guided.png",
                RESULTS,
                f"digits, {name}, guided",
            )
        )
    readme = (
        f"At {at.split()[-1]} Euler steps, exact coupling reaches a distance of "
        f"{num(fd['exact'], 3)} "
        f"({fd['exact'] / floor:.1f}x the {num(floor, 3)} of real images; independent pairing "
        f"{num(fd['independent'], 3)}) and {num(sample(plain['exact'], at, 'digits.accuracy'), 3)} "
        f"accuracy; with guidance `eval.guidance=2`, {num(fd_g['exact'], 3)} and "
        f"{num(sample(guided['exact'], at, 'digits.accuracy'), 3)}. Each run trained in "
        f"{seconds_text(seconds['exact'])} on a {os.cpu_count()}-core CPU.\n\n"
        + ctx.image(
            ctx.runs / "guided-exact" / "samples.png",
            "digits-exact-guided.png",
            README,
            "digits, exact coupling, guidance 2: one row per class, data then each step count",
        )
    )
    return {
        (RESULTS, "digits"): "\n".join(text),
        (RESULTS, "digits.grids"): "\n\n".join(grids),
        (README, "digits"): readme,
    }


# --- semidiscrete ----------------------------------------------------------------------------


def fit_run(ctx: Context, *words: str) -> tuple[Path, str | None]:
    """``mfm-run WORDS...`` of a semidiscrete run: its directory and the coupler's fit report,
    which the run logs to its standard error (so to this section's log)."""
    mark = ctx.log.stat().st_size
    run_dir = ctx.mfm("run", *words)
    with ctx.log.open() as log:
        log.seek(mark)
        found = re.findall(r"semidiscrete potentials: (.+)", log.read())
    return run_dir, (found[-1].strip() if found else None)


@section(
    "semidiscrete",
    "results.md: semi-discrete OT against minibatch exact (quickstart on 2048 points, digits)",
    [(RESULTS, "semidiscrete.quickstart"), (RESULTS, "semidiscrete.digits")],
)
def semidiscrete(ctx: Context) -> dict:
    runs_arg = ["--runs", ctx.where(ctx.runs), "--quiet"]
    points = ctx.runs / "checkerboard-2048.npy"
    ctx.script("points_file.py", "checkerboard", "2048", ctx.where(points))
    target = f'data.target={{name="file",path="{ctx.where(points)}"}}'
    budget = smoke_2d(ctx)
    exact = ctx.mfm("run", "tomlconfigs/quickstart.toml", target, *budget, *runs_arg)
    semi_overrides = [target, *budget]
    if ctx.smoke:
        semi_overrides.append("coupler.iterations=20")
    semi, fit = fit_run(ctx, "tomlconfigs/quickstart-semidiscrete.toml", *semi_overrides, *runs_arg)
    out = {
        (RESULTS, "semidiscrete.quickstart"): semi_table(
            {"exact (k = 256)": exact, "semidiscrete": semi}, "w2", "W2", fit
        )
    }
    budget = digits_budget(ctx)
    reused = ctx.shared.get("digits")
    if reused and reused[1] == budget:
        digits_exact = reused[0]
        ctx.notes.append(f"digits exact row: the digits section's run ({ctx.where(digits_exact)})")
    else:
        digits_exact = ctx.mfm("run", "tomlconfigs/digits.toml", *budget, *runs_arg)
    coupler = 'coupler={name="semidiscrete",iterations=' + ("5" if ctx.smoke else "500") + "}"
    digits_semi, fit = fit_run(ctx, "tomlconfigs/digits.toml", coupler, *budget, *runs_arg)
    out[(RESULTS, "semidiscrete.digits")] = semi_table(
        {"exact (k = 64, within class)": digits_exact, "semidiscrete (per class)": digits_semi},
        "digits.fd",
        "fd",
        fit,
        accuracy=True,
    )
    return out


def semi_table(
    runs: dict[str, Path], key: str, name: str, fit: str | None, accuracy: bool = False
) -> str:
    metrics = {title: read_json(run / "metrics.json") for title, run in runs.items()}
    labels = [solver_label(r) for r in next(iter(metrics.values()))["samples"]]
    header = ["coupler"] + [f"{name} {label}" for label in labels]
    if accuracy:
        header.append("acc " + " / ".join(labels))
    header += ["final loss", "train s"]
    body = []
    for title, m in metrics.items():
        cells = [title]
        for label in labels:
            r = by_solver(m)[label]
            cells.append(num(r[key], 4) + (f" ({r['nfe']})" if r["solver"] != "euler" else ""))
        if accuracy:
            cells.append(
                " / ".join(num(sample(m, label, "digits.accuracy"), 3) for label in labels)
            )
        cells += [num(m["final_loss"], 3), num(m["train"]["seconds"], 3)]
        body.append(cells)
    text = [table(header, body)]
    if fit:
        text.append(f"The semidiscrete fit: {fit}.")
    floor = (next(iter(metrics.values())).get("floors") or {}).get(key)
    if floor is None:
        floor = next(iter(metrics.values()))["samples"][0].get("digits.fd_real")
    if floor is not None:
        text.append(f"Floor of {name} (real data against real data): {num(floor, 3)}.")
    return "\n\n".join(text)


# --- transport-cost --------------------------------------------------------------------------


@section(
    "transport-cost",
    "results.md: transport cost of the learned map in growing dimension (table and plot)",
    [(RESULTS, "transport-cost")],
)
def transport_cost(ctx: Context) -> dict:
    plot = ctx.runs / "transport-cost.png"
    words = ["--plot", ctx.where(plot)]
    if ctx.smoke:
        words += ["--data", "mixture-2", "mixture-8", "--couplers", "independent", "exact"]
        words += ["--steps", "10", "--eval", "100", "--size", "256"]
    out = ctx.script("transport_cost.py", *words)
    rows = printed_tables(out, "transport_cost.py")[0].splitlines()
    if not rows[0].startswith("| data |"):
        raise SectionError("transport_cost.py printed no table")
    ratios = [float(r.split("|")[5]) for r in rows[2:]]
    return {
        (RESULTS, "transport-cost"): "\n".join(rows)
        + f"\n\nEvery ratio lies between {min(ratios):.3f} and {max(ratios):.3f}.\n\n"
        + ctx.image(
            plot,
            "transport-cost.png",
            RESULTS,
            "Transport cost of the learned map over the OT cost, per data set and coupler",
        )
    }


# --- couplers.md: what a coupling costs a run, and the exact routes ---------------------------

COUPLERS = "docs/couplers.md"


@section(
    "overhead",
    "couplers.md: time per step with exact against independent pairs (quickstart, digits)",
    [(COUPLERS, "overhead")],
)
def overhead(ctx: Context) -> dict:
    words = ["--jobs", "quickstart,digits", "--one-thread"]
    words += ["--steps", "20", "--repeats", "1"] if ctx.smoke else ["--repeats", "3"]
    tables = printed_tables(ctx.script("overhead.py", *words), "overhead.py")
    if len(tables) != 2:
        raise SectionError(f"overhead.py printed {len(tables)} tables, expected 2")
    return {(COUPLERS, "overhead"): tables[0] + "\n\nThe floor:\n\n" + tables[1]}


@section(
    "exact-routes",
    "couplers.md: other routes to the exact assignment at k = 256 (warm starts, auction)",
    [(COUPLERS, "exact-routes")],
)
def exact_routes(ctx: Context) -> dict:
    words = ["--ks", "64" if ctx.smoke else "256", "--dims", "2", "3072"]
    words += ["--repeats", "1" if ctx.smoke else "9"]
    tables = printed_tables(ctx.script("exact_routes.py", *words), "exact_routes.py")
    return {(COUPLERS, "exact-routes"): tables[0]}


# --- Blocks in files -------------------------------------------------------------------------


def find_blocks(text: str, where: str) -> dict[str, tuple[int, int]]:
    """Every block of ``text``: name -> (end of its opening marker, start of its closing one).
    Unpaired, nested or duplicated markers are a MarkerError naming ``where``."""
    blocks: dict[str, tuple[int, int]] = {}
    opened: tuple[str, int] | None = None
    for match in BLOCK.finditer(text):
        closing, name = match.group(1) == "/", match.group(2)
        if not closing:
            if opened is not None:
                raise MarkerError(f"{where}: block {opened[0]!r} is not closed before {name!r}")
            if name in blocks:
                raise MarkerError(f"{where}: the marker of block {name!r} appears twice")
            opened = (name, match.end())
        else:
            if opened is None or opened[0] != name:
                raise MarkerError(f"{where}: closing marker of block {name!r} without its opening")
            blocks[name] = (opened[1], match.start())
            opened = None
    if opened is not None:
        raise MarkerError(f"{where}: block {opened[0]!r} has no closing marker")
    return blocks


def check_targets(root: Path, sections: list[Section]) -> None:
    """Every block of ``sections`` is present exactly once in its file (else MarkerError)."""
    for sec in sections:
        for file, name in sec.blocks:
            path = root / file
            if not path.is_file():
                raise MarkerError(f"{path}: no such file (section {sec.name!r})")
            if name not in find_blocks(path.read_text(), str(path)):
                raise MarkerError(
                    f"{path}: no block <!-- docs_figures:{name} --> ... "
                    f"<!-- /docs_figures:{name} --> (section {sec.name!r})"
                )


def replace_blocks(text: str, bodies: dict[str, str], where: str) -> str:
    blocks = find_blocks(text, where)
    for name in sorted(bodies, key=lambda n: -blocks[n][0]):  # from the end: offsets hold
        start, end = blocks[name]
        text = text[:start] + "\n" + bodies[name].strip("\n") + "\n" + text[end:]
    return text


def atomic_write(path: Path, data: bytes) -> None:
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def uncovered(text: str) -> list[str]:
    """Tables (a ``|---|`` rule) and image links outside any docs_figures block, and blocks
    of unknown sections: what this command would not regenerate."""
    problems = []
    blocks = find_blocks(text, "text")
    for name in blocks:
        if name.split(".")[0] not in SECTIONS:
            problems.append(f"block {name!r} belongs to no section")
    inside = [range(start, end) for start, end in blocks.values()]
    offset = 0
    for number, line in enumerate(text.splitlines(keepends=True), 1):
        found = [m.start() + offset for m in IMAGE_LINK.finditer(line)]
        if TABLE_RULE.match(line):
            found.append(offset)
        for position in found:
            if not any(position in r for r in inside):
                problems.append(f"line {number}: {line.strip()[:60]}")
        offset += len(line)
    return problems


# --- The stamp -------------------------------------------------------------------------------


def commit() -> str:
    """``abc1234`` or ``abc1234 with uncommitted changes`` (to tracked files other than the
    ones this command writes: a regenerated README does not change what was measured)."""

    def git(*words):
        return subprocess.run(["git", *words], cwd=REPO, capture_output=True, text=True).stdout

    head = git("rev-parse", "--short", "HEAD").strip() or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!docs", ":!README.md")
    return head + (" with uncommitted changes" if dirty.strip() else "")


def stamp(sec: Section, ctx: Context, measured: dict, first: bool) -> str:
    label = "SMOKE RUN (tiny budgets: these figures mean nothing). " if ctx.smoke else ""
    line = (
        f"<sub>{label}Generated by `python benchmarks/docs_figures.py --only {sec.name}` at "
        f"commit {measured['commit']}, {measured['date']}, on {os.cpu_count()} cores (load "
        f"average {measured['load'][0]:.1f} at the start, {measured['load'][1]:.1f} at the end), "
        f"in {seconds_text(measured['seconds'])}"
    )
    if not first:
        return line + "; its commands are in this section's first block.</sub>"
    line += "".join(f"; {note}" for note in ctx.notes) + ". Commands:</sub>"
    return line + "\n\n```bash\n" + "\n".join(ctx.commands) + "\n```"


# --- Main ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="sections to run, comma-separated (default: all)")
    parser.add_argument("--list", action="store_true", help="list the sections and exit")
    parser.add_argument("--runs", type=Path, default=REPO / "runs" / "docs-figures")
    parser.add_argument("--root", type=Path, default=REPO, help="the folder of README.md, docs/")
    parser.add_argument("--smoke", action="store_true", help="tiny budgets, labelled as smoke")
    parser.add_argument("--torchcfm-python", help="a Python that imports torchcfm and mfm")
    return parser.parse_args(argv)


def selected(only: str | None) -> list[Section]:
    if not only:
        return list(SECTIONS.values())
    names = [n.strip() for n in only.split(",") if n.strip()]
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        print(
            f"error: unknown section {', '.join(map(repr, unknown))}; known: {', '.join(SECTIONS)}",
            file=sys.stderr,
        )
        raise SystemExit(2)
    return [SECTIONS[n] for n in SECTIONS if n in names]  # in the registry's order


def invocation_dir(runs: Path) -> Path:
    """A new ``runs/NNNNN`` for this invocation (never one that exists)."""
    runs.mkdir(parents=True, exist_ok=True)
    numbers = [int(p.name) for p in runs.iterdir() if p.name.isdigit()]
    number = max(numbers, default=-1) + 1
    while True:
        path = runs / f"{number:05d}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            number += 1


def run_section(sec: Section, args, directory: Path, shared: dict, measured_commit: str) -> None:
    """Build ``sec``, then copy its pictures and rewrite its blocks; raises on failure."""
    folder = directory / sec.name
    folder.mkdir()
    ctx = Context(args.root, folder, folder / "log.txt", args.smoke, args, shared)
    ctx.log.touch()
    load = os.getloadavg()[0]
    started = time.perf_counter()
    bodies = sec.build(ctx)
    measured = {
        "commit": measured_commit,
        "date": datetime.date.today().isoformat(),
        "load": (load, os.getloadavg()[0]),
        "seconds": time.perf_counter() - started,
    }
    if set(bodies) != set(sec.blocks):
        raise SectionError(f"built blocks {sorted(bodies)}, owns {sorted(sec.blocks)}")
    for source, name in ctx.images:
        target = args.root / IMAGES / name
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, source.read_bytes())
    for file in dict.fromkeys(f for f, _ in sec.blocks):
        path = args.root / file
        named = {}
        for index, (f, name) in enumerate(sec.blocks):
            if f == file:
                named[name] = (
                    stamp(sec, ctx, measured, first=index == 0) + "\n\n" + bodies[(f, name)]
                )
        atomic_write(path, replace_blocks(path.read_text(), named, str(path)).encode())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for sec in SECTIONS.values():
            print(f"{sec.name:16} {sec.description}")
        return 0
    sections = selected(args.only)
    args.root = args.root.resolve()
    args.runs = args.runs.resolve()
    try:
        check_targets(args.root, sections)
    except MarkerError as exc:
        print(f"error: {exc}; nothing was written", file=sys.stderr)
        return 2
    directory = invocation_dir(args.runs)
    measured_commit = commit()
    print(f"docs_figures: {len(sections)} section(s), runs in {directory}", flush=True)
    shared: dict = {}
    failed = []
    total = time.perf_counter()
    for sec in sections:
        print(f"[{sec.name}] started", flush=True)
        started = time.perf_counter()
        log = directory / sec.name / "log.txt"
        try:
            run_section(sec, args, directory, shared, measured_commit)
        except Skipped as exc:
            print(f"[{sec.name}] SKIPPED: {exc}; its blocks keep their content and stamp")
            continue
        except (SectionError, OSError, KeyError, ValueError, MarkerError) as exc:
            print(f"[{sec.name}] FAILED after {seconds_text(time.perf_counter() - started)}: "
                  f"{exc}; its blocks are unchanged; read {log}", flush=True)  # fmt: skip
            failed.append(sec.name)
            continue
        print(f"[{sec.name}] finished in {seconds_text(time.perf_counter() - started)}", flush=True)
    print(f"docs_figures: total {seconds_text(time.perf_counter() - total)}", flush=True)
    if failed:
        print(
            f"error: failed sections: {', '.join(failed)} (logs under {directory})", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

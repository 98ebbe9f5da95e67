"""What several commands share: the common options, the job arguments of ``run`` and
``compare``, and the end-of-run summary."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--traceback", action="store_true", help="show the Python traceback on errors"
    )


def add_job_arguments(
    parser: argparse.ArgumentParser, *, metavar: str, help: str, resume: str, runs: str
) -> None:
    """A config with overrides, ``--resume DIR`` (``resume``: its metavar, then its help),
    ``--runs`` and ``--quiet``: what ``run`` and ``compare`` take."""
    resume_metavar, _, resume_help = resume.partition(" ")
    parser.add_argument("args", nargs="*", metavar=metavar, help=help)
    parser.add_argument("--resume", type=Path, metavar=resume_metavar, help=resume_help)
    parser.add_argument("--runs", type=Path, default=Path("runs"), help=runs)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_common(parser)


def is_main_process() -> bool:
    """False in the processes torchrun starts besides rank 0: they do not report."""
    return os.environ.get("RANK", "0") == "0"


def print_results(directory: Path, run_dir: Path | None = None) -> None:
    """The end of a run or an evaluation: the summary table, the pictures, what to run next."""
    from mfm_core.runner.evaluation import report
    from mfm_core.runner.rundir.layout import METRICS_FILE

    metrics = json.loads((directory / METRICS_FILE).read_text())
    pictures = [
        directory / name
        for name in ("samples.png", "trajectories.png", "loss.png", report.PLOT_FILE)
        if (directory / name).is_file()
    ]
    print(report.terminal_summary(metrics))
    print(report.next_steps(run_dir or directory, pictures))

"""``mfm eval``: evaluate a trained run again, into a folder of its own."""

from __future__ import annotations

import argparse
from pathlib import Path

from mfm_core.commands.common import add_common, print_results


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "eval",
        help="evaluate a run's latest checkpoint again, into RUN/evals/NNNNN-eval (or --out): "
        "metrics.json, metrics.md, metrics.png",
    )
    parser.add_argument("run_dir", type=Path, help="a run directory or FILE.safetensors")
    parser.add_argument(
        "--step", type=int, help="the checkpoint's step (default: the newest that loads)"
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help='e.g. \'eval.metrics=["w2", "straightness"]\' eval.num_samples=1000',
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="a new or empty folder for the results (RUN/evals/NNNNN-eval; required for a "
        ".safetensors file)",
    )
    add_common(parser)
    parser.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    from mfm_core.runner.evaluation.reevaluate import eval_run

    evaluation = eval_run(args.run_dir, list(args.overrides), args.out, step=args.step)
    print_results(evaluation.directory, args.run_dir)
    print(f"done: {evaluation.directory}")
    return 0

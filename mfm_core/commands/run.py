"""``mfm run`` and ``mfm-run``: train a config (or continue a run), then sample and evaluate."""

from __future__ import annotations

import argparse

from mfm_core.commands.common import add_job_arguments, is_main_process, print_results
from mfm_core.errors import MfmError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_job_arguments(
        parser,
        metavar="CONFIG.toml [KEY=VALUE ...]",
        help="the config file, then overrides such as train.steps=500 coupler.name=independent",
        resume="RUN_DIR continue RUN_DIR from its checkpoint",
        runs="where new run directories go (runs/)",
    )
    parser.set_defaults(func=command)


def add_parser(sub: argparse._SubParsersAction) -> None:
    add_arguments(sub.add_parser("run", help="train a config, then sample and evaluate"))


def command(args: argparse.Namespace) -> int:
    from mfm_core.runner.run import resume_run, start_run

    if args.resume is not None:
        run_dir = resume_run(args.resume, args.args, progress=not args.quiet)
    else:
        if not args.args or "=" in args.args[0]:
            raise MfmError("give a config file first: mfm-run CONFIG.toml [KEY=VALUE ...]")
        config, *overrides = args.args
        run_dir = start_run(config, overrides, args.runs, progress=not args.quiet)
    if is_main_process():
        print_results(run_dir)
        print(f"done: {run_dir}")
    return 0

"""``mfm compare``: run a config once per value of swept keys and compare the runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from mfm_core.commands.common import add_job_arguments
from mfm_core.errors import MfmError


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "compare", help="run a config once per value of swept keys and compare the runs"
    )
    add_job_arguments(
        parser,
        metavar="CONFIG.toml KEY=V1,V2 [KEY=VALUE ...]",
        help="the config, then overrides; a value list (commas outside brackets and quotes) "
        "is swept, e.g. coupler.name=independent,exact,sinkhorn,stable,heuristic",
        resume="COMPARE_DIR continue an interrupted comparison",
        runs="where the comparison goes (runs/)",
    )
    parser.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    from mfm_core.runner.compare import TABLE_FILE, resume_compare, start_compare

    if args.resume is not None:
        if args.args:
            raise MfmError(
                "--resume continues a comparison as planned: give no config or overrides"
            )
        directory = resume_compare(args.resume, progress=not args.quiet)
    else:
        if not args.args or "=" in args.args[0]:
            raise MfmError(
                "give a config file first: mfm compare CONFIG.toml KEY=V1,V2[,...] [KEY=VALUE ...]"
            )
        config, *overrides = args.args
        directory = start_compare(Path(config), overrides, args.runs, progress=not args.quiet)
    print((directory / TABLE_FILE).read_text(), end="")
    print(f"done: {directory}")
    return 0

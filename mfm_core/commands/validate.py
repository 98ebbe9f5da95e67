"""``mfm validate``: build every component of a config and push one batch through; train
nothing."""

from __future__ import annotations

import argparse
from pathlib import Path

from mfm_core.commands.common import add_common


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("validate", help="build every component, train nothing")
    parser.add_argument("config", type=Path)
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    add_common(parser)
    parser.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    from mfm_core.runner.assembly.validate import validate_config

    lines = validate_config(args.config, args.overrides)
    print(f"{args.config}: OK")
    for line in lines:
        print(f"  {line}")
    return 0

"""``mfm fid-stats``: FID reference statistics (mu, sigma) of a config's target data set."""

from __future__ import annotations

import argparse
from pathlib import Path

from mfm_core.commands.common import add_common


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "fid-stats",
        help="write FID reference statistics (mu, sigma) of a config's target data set",
    )
    parser.add_argument("config", type=Path)
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. data.root=...")
    parser.add_argument("--out", type=Path, required=True, help="the .npz file to write")
    parser.add_argument(
        "--num", type=int, help="at most this many samples (default: the whole data set)"
    )
    parser.add_argument(
        "--features",
        metavar="SPEC",
        help="the feature map, a name or a TOML table (default: the config's fid features, "
        "else inception)",
    )
    parser.add_argument("--batch", type=int, default=500, help="samples per forward pass (500)")
    parser.add_argument("--seed", type=int, default=0, help="seed for a generated data set (0)")
    add_common(parser)
    parser.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    from mfm_core.runner.evaluation.statistics import fid_statistics

    count = fid_statistics(
        args.config,
        list(args.overrides),
        args.out,
        num=args.num,
        features=args.features,
        batch=args.batch,
        seed=args.seed,
    )
    print(f"wrote {args.out}: mu and sigma of {count} samples")
    return 0

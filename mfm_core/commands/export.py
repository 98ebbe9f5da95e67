"""``mfm export``: a run's weights as one safetensors file, its config in the metadata."""

from __future__ import annotations

import argparse
from pathlib import Path

from mfm_core.commands.common import add_common


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "export",
        help="write a run's weights (EMA by default) to a .safetensors file with its config "
        "and provenance, for mfm sample, mfm eval and load_run",
    )
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="the file, FILE.safetensors")
    parser.add_argument(
        "--step", type=int, help="the checkpoint's step (default: the newest that loads)"
    )
    parser.add_argument(
        "--raw", action="store_true", help="the trained weights, not their EMA average"
    )
    add_common(parser)
    parser.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    from mfm_core.runner.assembly.export import export_run

    shared = export_run(args.run_dir, args.out, step=args.step, raw=args.raw)
    record = shared.record
    kind = "EMA" if record["kind"] == "ema" else "raw"
    count = sum(t.numel() for t in shared.weights.values())
    print(f"wrote {args.out}: the {kind} weights of step {record['step']} ({count:,} parameters)")
    return 0

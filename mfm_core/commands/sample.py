"""``mfm sample``: draw samples from a trained run's checkpoint or a shared weights file."""

from __future__ import annotations

import argparse
from pathlib import Path

from mfm_core.commands.common import add_common


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "sample", help="sample from a run's checkpoint, or from a .safetensors of mfm export"
    )
    parser.add_argument("run_dir", type=Path, help="a run directory or FILE.safetensors")
    parser.add_argument(
        "--step", type=int, help="the checkpoint's step (default: the newest that loads)"
    )
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. solver.steps=4")
    parser.add_argument("--num", type=int, required=True, help="number of samples")
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        help="vectors: a .npy or .npz file; images: a directory of PNG files, or a .npz",
    )
    parser.add_argument(
        "--format",
        choices=("png", "npz"),
        help="images: PNG files (default) or one .npz with uint8 arr_0 (N, H, W, C)",
    )
    parser.add_argument(
        "--solver",
        metavar="SPEC",
        help="the solver: a name or a TOML table, e.g. euler or '{name=\"euler\", steps=4}'; "
        "overrides set its parameters: --solver heun solver.steps=2",
    )
    parser.add_argument(
        "--guidance", type=float, help="classifier-free guidance scale (default eval.guidance)"
    )
    parser.add_argument("--label", type=int, help="the class of every sample (default: uniform)")
    parser.add_argument(
        "--batch", type=int, help="samples per solve (default eval.batch_size, else 256 images)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise and labels (0)")
    add_common(parser)
    parser.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    from mfm_core.runner.evaluation.report import weights_label
    from mfm_core.runner.evaluation.sampling import sample_run

    # --solver first: the overrides then set its parameters (`--solver heun solver.steps=2`)
    # instead of being dropped with the component --solver replaces.
    chosen = [] if args.solver is None else [f"solver={args.solver}"]
    overrides = [*chosen, *args.overrides]
    result = sample_run(
        args.run_dir,
        overrides,
        args.num,
        args.out,
        args.seed,
        fmt=args.format,
        guidance=args.guidance,
        batch=args.batch,
        label=args.label,
        step=args.step,
    )
    label = weights_label({"weights": result.weights})
    print(f"wrote {args.num} samples to {result.path} (NFE {result.nfe}) with the {label}")
    return 0

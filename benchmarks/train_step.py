"""Time per training step of the image U-Net with each coupler, and the coupling's share.

A step is what the runner does per optimizer step on one GPU: draw the coupling of a batch
of noise and data, then forward, backward and AdamW update of the U-Net on the coupled pairs
(``mfm_core.runner.training.objective.regression_loss``, under bf16 autocast on CUDA). The
data are random images already on the device: data loading overlaps with the step in the runner
and is left out. Defaults are the paper's ImageNet 64x64 setting per GPU: the 295 M-parameter
ADM U-Net and 50 images (800 over 16 GPUs); ``--preset in32`` is ImageNet 32x32 at 256 per GPU
(1024 over 4).

    python benchmarks/train_step.py                          # on a GPU: the paper's settings
    python benchmarks/train_step.py --device cpu --channels 32 --channel-mult 1,2,2 \\
        --num-res-blocks 1 --attention 16 --head-channels 32 --steps 3   # a small CPU check
"""

from __future__ import annotations

import argparse
import time

import torch

from mfm_core import create
from mfm_core.errors import MfmError
from mfm_core.registry import get_registry
from mfm_core.runner.training.objective import autocast_dtype, regression_loss

PRESETS = {
    "in64": dict(resolution=64, batch=50, channels=192, channel_mult="1,2,3,4",
                 num_res_blocks=3, attention="32,16,8", head_channels=64),
    "in32": dict(resolution=32, batch=256, channels=256, channel_mult="1,2,2,2",
                 num_res_blocks=3, attention="16,8", head_channels=64),
}  # fmt: skip


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_step(coupler, model, path, optimizer, args, device, dtype) -> tuple[float, float]:
    """Seconds of one whole step and of its coupling."""
    shape = (args.batch, 3, args.resolution, args.resolution)
    x0 = torch.randn(shape, device=device)
    x1 = torch.rand(shape, device=device) * 2 - 1
    t = torch.rand(args.batch, device=device)
    _sync(device)
    start = time.perf_counter()
    x0, x1, _ = coupler(x0, x1).pairs(x0, x1)
    _sync(device)
    coupled = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    regression_loss(path, model, x0, x1, t, None, dtype).backward()
    optimizer.step()
    _sync(device)
    return time.perf_counter() - start, coupled - start


def build_couplers(names: list[str]) -> dict[str, object]:
    """The couplers that can be built; the others are reported and left out."""
    available = get_registry().names("coupler")
    couplers = {}
    for name in names:
        if name not in available:
            print(f"({name}: not installed)")
            continue
        try:
            couplers[name] = create("coupler", name)
        except MfmError as exc:  # e.g. a plugin built for another version of mfm
            print(f"({name}: {exc})")
    return couplers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="in64")
    parser.add_argument("--resolution", type=int)
    parser.add_argument("--batch", type=int, help="images per GPU (per process)")
    parser.add_argument("--channels", type=int)
    parser.add_argument("--channel-mult")
    parser.add_argument("--num-res-blocks", type=int)
    parser.add_argument("--attention", help="attention resolutions, e.g. 32,16,8")
    parser.add_argument("--head-channels", type=int)
    parser.add_argument("--couplers", default="independent,exact,sinkhorn")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per coupler")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    args = parser.parse_args()
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    dtype = autocast_dtype(args.precision, device)
    torch.manual_seed(0)
    model = create(
        "vector_field",
        "unet",
        data_shape=(3, args.resolution, args.resolution),
        channels=args.channels,
        channel_mult=_ints(args.channel_mult),
        num_res_blocks=args.num_res_blocks,
        attention_resolutions=_ints(args.attention),
        head_channels=args.head_channels,
    ).to(device)
    path = create("path", "cond-ot")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    parameters = sum(p.numel() for p in model.parameters())
    print(
        f"U-Net {parameters / 1e6:.1f} M parameters, {args.batch} images of "
        f"{args.resolution}x{args.resolution} per step, {device}, "
        f"{'bf16' if dtype else 'fp32'}, {torch.get_num_threads()} CPU threads, "
        f"mean of {args.steps} steps after {args.warmup}"
    )
    couplers = build_couplers(args.couplers.split(","))
    # Round robin, one step of each coupler in turn: a machine whose load drifts (a shared
    # CPU) slows every coupler alike, so the comparison between them stays fair.
    totals = {name: [0.0, 0.0] for name in couplers}
    for step in range(args.warmup + args.steps):
        for name, coupler in couplers.items():
            seconds = timed_step(coupler, model, path, optimizer, args, device, dtype)
            if step >= args.warmup:
                totals[name][0] += seconds[0] / args.steps
                totals[name][1] += seconds[1] / args.steps
    base = totals.get("independent", [None])[0]
    print("\n| coupler | step (ms) | coupling (ms) | coupling share | step vs independent |")
    print("|---|---|---|---|---|")
    for name, (step, coupling) in totals.items():
        versus = f"{100 * (step / base - 1):+.1f} %" if base else "-"
        print(
            f"| {name} | {1000 * step:.1f} | {1000 * coupling:.2f} | "
            f"{100 * coupling / step:.2f} % | {versus} |"
        )


if __name__ == "__main__":
    try:
        main()
    except MfmError as exc:
        raise SystemExit(f"error: {exc}") from None

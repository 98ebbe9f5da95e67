"""Check and time mfm's CUDA paths on one GPU, in one command (a few minutes).

    python benchmarks/gpu_check.py                  # every check
    python benchmarks/gpu_check.py --only couplers sinkhorn

Checks (each one a row of the table; any failure makes the exit status 1):

- couplers: a bf16 training step of an ImageNet-64 U-Net (the paper's widths at reduced
  depth: one residual block per level) on a batch of 50, with every installed coupler but
  reflow; each row gives the step, its coupling and the coupling's share of the step (the
  paper's overhead: +0.8 % on ImageNet-32, +4 % on ImageNet-64; mfm's target: under 2 %).
- compile: a torch.compile'd step of a small U-Net; its output must match eager's.
- torchrun: a one-process `torchrun` with the NCCL backend: a `scope = "global"` exact
  coupling (gathered and broadcast over NCCL) must equal the local one, and a DDP step runs.
- dopri5: adaptive sampling on the device of dx/dt = c x, against the closed form e^c x0.
- resume: a quickstart run on the device is killed (SIGKILL) after its first checkpoint and
  resumed; its logged losses must equal an uninterrupted run's.
- sinkhorn: the entropic plan of a (1024, 1024) device cost matrix through 500 iterations,
  counting host synchronisations (allowed: one per convergence check, every 10 iterations).

Without a CUDA device it says so and exits 0 at once.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

CHECKS = ("couplers", "compile", "torchrun", "dopri5", "resume", "overlap", "sinkhorn")
SHARE_TARGET = 0.02  # the coupling's share of a training step
ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Row:
    """One line of the table: a check (or one coupler of it), whether it passed, its time."""

    check: str
    ok: bool
    seconds: float
    detail: str


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=CHECKS, default=list(CHECKS))
    parser.add_argument("--batch", type=int, default=50, help="images per U-Net step")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per coupler")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # the torchrun child's entry
    args = parser.parse_args(argv)
    if args.batch < 2 or args.steps < 1:
        parser.error("--batch must be at least 2 and --steps at least 1")
    return args


def run_check(name: str, function: Callable[[], list[Row]]) -> list[Row]:
    """The rows of one check; an exception is a failed row naming it, and the next check runs."""
    start = time.perf_counter()
    try:
        return function()
    except Exception as exc:  # a failed check must not hide the others
        detail = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
        return [Row(name, False, time.perf_counter() - start, detail)]


def format_table(rows: Sequence[Row]) -> str:
    lines = ["| check | status | seconds | detail |", "|---|---|---:|---|"]
    for row in rows:
        status = "ok" if row.ok else "FAIL"
        lines.append(f"| {row.check} | {status} | {row.seconds:.1f} | {row.detail} |")
    return "\n".join(lines)


def exit_code(rows: Sequence[Row]) -> int:
    """0 when every row passed, 1 otherwise (and when nothing ran)."""
    return 0 if rows and all(row.ok for row in rows) else 1


def _sync() -> None:
    torch.cuda.synchronize()


def _unet(resolution: int, channels: int, mult: tuple[int, ...], attention: tuple[int, ...]):
    from mfm_core import create

    return create(
        "vector_field",
        "unet",
        data_shape=(3, resolution, resolution),
        channels=channels,
        channel_mult=mult,
        num_res_blocks=1,
        attention_resolutions=attention,
        head_channels=64,
    ).cuda()


def check_couplers(args: argparse.Namespace) -> list[Row]:
    from mfm_core import create, get_registry
    from mfm_core.runner.training.objective import regression_loss

    torch.manual_seed(0)
    model = _unet(64, 192, (1, 2, 3, 4), (32, 16, 8))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    path = create("path", "cond-ot")
    shape = (args.batch, 3, 64, 64)
    rows = []
    for name in get_registry().names("coupler"):
        if name == "reflow":  # it needs a trained run to pair with
            continue
        coupler = create("coupler", name)
        steps, couplings = [], []
        for index in range(2 + args.steps):
            x0 = torch.randn(shape, device="cuda")
            x1 = torch.rand(shape, device="cuda") * 2 - 1
            t = torch.rand(args.batch, device="cuda")
            _sync()
            start = time.perf_counter()
            x0, x1, _ = coupler(x0, x1).pairs(x0, x1)
            _sync()
            coupled = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss = regression_loss(path, model, x0, x1, t, None, torch.bfloat16)
            loss.backward()
            optimizer.step()
            _sync()
            if not math.isfinite(loss.item()):
                raise RuntimeError(f"{name}: the loss is {loss.item()}")
            if index >= 2:  # two warm-up steps
                steps.append(time.perf_counter() - start)
                couplings.append(coupled - start)
        step, coupling = sorted(steps)[len(steps) // 2], sorted(couplings)[len(couplings) // 2]
        share = coupling / step
        target = "under" if share < SHARE_TARGET else "OVER"
        rows.append(
            Row(
                f"couplers: {name}",
                True,
                sum(steps),
                f"step {1e3 * step:.1f} ms, coupling {1e3 * coupling:.2f} ms = "
                f"{100 * share:.2f} % ({target} the 2 % target)",
            )
        )
    return rows


def check_compile(args: argparse.Namespace) -> list[Row]:
    torch.manual_seed(0)
    model = _unet(32, 64, (1, 2), (16,))
    compiled = torch.compile(model)
    x = torch.randn(8, 3, 32, 32, device="cuda")
    t = torch.rand(8, device="cuda")
    start = time.perf_counter()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = compiled(x, t)
        out.float().pow(2).mean().backward()
    _sync()
    first = time.perf_counter() - start
    start = time.perf_counter()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = compiled(x, t)
    _sync()
    again = time.perf_counter() - start
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        eager = model(x, t)
    error = (out.float() - eager.float()).abs().max().item()
    scale = eager.float().abs().max().item()
    if not error <= 0.05 * scale + 1e-3:
        raise RuntimeError(f"compiled output differs from eager by {error:.3g} (scale {scale})")
    detail = (
        f"first step (compiling) {first:.1f} s, then {1e3 * again:.1f} ms; max diff {error:.2g}"
    )
    return [Row("compile", True, first + again, detail)]


def check_torchrun(args: argparse.Namespace) -> list[Row]:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "1",
        __file__,
        "--worker",
        "torchrun",
    ]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    seconds = time.perf_counter() - start
    if done.returncode:
        last = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-1]
        raise RuntimeError(f"torchrun exited with {done.returncode}: {last}")
    return [Row("torchrun", True, seconds, done.stdout.strip().splitlines()[-1])]


def torchrun_worker() -> int:
    """The torchrun child: NCCL, a global exact coupling against the local one, a DDP step."""
    import torch.distributed as dist

    from mfm_core.couplers import ExactCoupler

    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl")
    try:
        generator = torch.Generator().manual_seed(0)
        x0 = torch.randn(256, 8, generator=generator).to(device)
        x1 = torch.randn(256, 8, generator=generator).to(device)
        coupling = ExactCoupler(scope="global")(x0, x1)
        local = ExactCoupler()(x0, x1)
        if coupling.samples is None or coupling.i.device != device:
            raise RuntimeError("the global coupling did not gather the batch on the device")
        if not (torch.equal(coupling.i, local.i) and torch.equal(coupling.j, local.j)):
            raise RuntimeError("the global coupling differs from the local one on one process")
        model = torch.nn.parallel.DistributedDataParallel(
            torch.nn.Linear(8, 8).to(device), device_ids=[device.index]
        )
        model(x0).pow(2).mean().backward()
        _sync()
        print(f"nccl {dist.get_backend()}, global exact coupling = local, DDP step done")
    finally:
        dist.destroy_process_group()
    return 0


def check_dopri5(args: argparse.Namespace) -> list[Row]:
    from mfm_core.solvers import Dopri5Solver

    c = 0.8
    x0 = torch.randn(4096, 16, device="cuda", dtype=torch.float64)
    start = time.perf_counter()
    result = Dopri5Solver(atol=1e-8, rtol=1e-8)(lambda x, t: c * x, x0)
    _sync()
    seconds = time.perf_counter() - start
    if result.x1.device.type != "cuda":
        raise RuntimeError(f"the solution came back on {result.x1.device}")
    error = (result.x1 - math.exp(c) * x0).abs().max().item()
    if not error < 1e-6:
        raise RuntimeError(f"max error {error:.3g} against e^c x0")
    return [Row("dopri5", True, seconds, f"{result.nfe} evaluations, max error {error:.2g}")]


RESUME = [
    "train.steps=3000",
    "train.checkpoint_every=100",
    "train.device=cuda",
    "eval.num_samples=200",
    'eval.solvers=[{ name = "euler", steps = 1 }]',
]


def check_resume(args: argparse.Namespace) -> list[Row]:
    from mfm_core.runner.run import resume_run, start_run
    from mfm_core.runner.rundir.checkpoint import list_checkpoints
    from mfm_core.runner.rundir.layout import read_log

    config = ROOT / "tomlconfigs" / "quickstart.toml"
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        whole = start_run(config, RESUME, Path(tmp) / "a", progress=False)
        runs = Path(tmp) / "b"
        command = [sys.executable, "-m", "mfm_core", "run", str(config), *RESUME]
        process = subprocess.Popen(
            [*command, "--runs", str(runs), "--quiet"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        run_dir = runs / "00000-quickstart"
        deadline = time.monotonic() + 120
        while not list_checkpoints(run_dir / "checkpoints") and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        killed_at = max(step for step, _ in list_checkpoints(run_dir / "checkpoints"))
        if killed_at >= 3000:
            raise RuntimeError("the run finished before it could be killed")
        resume_run(run_dir, [], progress=False)
        before = [(r["step"], r["loss"]) for r in read_log(whole)]
        after = [(r["step"], r["loss"]) for r in read_log(run_dir)]
    if before != after:
        differ = sum(a != b for a, b in zip(before, after, strict=False))
        raise RuntimeError(f"{differ} of {len(before)} logged losses differ after the resume")
    detail = f"killed after the checkpoint at step {killed_at}; {len(after)} losses equal"
    return [Row("resume", True, time.perf_counter() - start, detail)]


def check_overlap(args: argparse.Namespace) -> list[Row]:
    """The quickstart on the device for 300 steps with the coupling in a background thread
    and without: the logged losses must be equal."""
    from mfm_core.runner.run import start_run
    from mfm_core.runner.rundir.layout import read_log

    config = ROOT / "tomlconfigs" / "quickstart.toml"
    short = [*RESUME, "train.steps=300"]
    start = time.perf_counter()
    losses, seconds = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for overlap in ("on", "off"):
            began = time.perf_counter()
            overrides = [*short, f"train.overlap_coupling={overlap!r}"]
            run = start_run(config, overrides, Path(tmp) / overlap, progress=False)
            seconds[overlap] = time.perf_counter() - began
            losses[overlap] = [(r["step"], r["loss"]) for r in read_log(run)]
    if losses["on"] != losses["off"]:
        differ = sum(a != b for a, b in zip(losses["on"], losses["off"], strict=False))
        raise RuntimeError(f"{differ} of {len(losses['off'])} losses differ with the thread")
    detail = (
        f"{len(losses['on'])} losses equal; run {seconds['on']:.1f} s with the thread, "
        f"{seconds['off']:.1f} s without"
    )
    return [Row("overlap", True, time.perf_counter() - start, detail)]


def check_sinkhorn(args: argparse.Namespace) -> list[Row]:
    from mfm_coupling_sinkhorn.sinkhorn import sinkhorn_plan

    from mfm_core.couplers import cost_matrix

    generator = torch.Generator().manual_seed(0)
    x0 = torch.randn(1024, 64, generator=generator).cuda()
    x1 = torch.randn(1024, 64, generator=generator).cuda() + 1
    costs = cost_matrix(x0, x1)
    iterations, check_every = 500, 10
    _sync()
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            result = sinkhorn_plan(
                costs, reg=0.01, max_iter=iterations, tol=1e-12, check_every=check_every
            )
        finally:
            torch.cuda.set_sync_debug_mode("default")
    _sync()
    seconds = time.perf_counter() - start
    syncs = sum("synchroniz" in str(w.message) for w in caught)
    allowed = result.iterations // check_every + 10
    if result.plan.device.type != "cuda" or syncs > allowed:
        raise RuntimeError(
            f"{syncs} host synchronisations in {result.iterations} iterations "
            f"(allowed {allowed}), plan on {result.plan.device}"
        )
    detail = f"{result.iterations} iterations, {syncs} host synchronisations"
    return [Row("sinkhorn", True, seconds, detail)]


FUNCTIONS = {
    "couplers": check_couplers,
    "compile": check_compile,
    "torchrun": check_torchrun,
    "dopri5": check_dopri5,
    "resume": check_resume,
    "overlap": check_overlap,
    "sinkhorn": check_sinkhorn,
}


def main(
    argv: Sequence[str] | None = None, cuda_available: Callable[[], bool] = torch.cuda.is_available
) -> int:
    args = parse_args(argv)
    if args.worker == "torchrun":
        return torchrun_worker()
    if not cuda_available():
        print("no CUDA device here: the GPU check needs one CUDA GPU; nothing was checked")
        return 0
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else "a device"
    print(f"{name}, torch {torch.__version__}")
    rows: list[Row] = []
    for name in args.only:
        rows.extend(run_check(name, lambda name=name: FUNCTIONS[name](args)))
        print(format_table(rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(format_table(rows))
    return exit_code(rows)


if __name__ == "__main__":
    raise SystemExit(main())

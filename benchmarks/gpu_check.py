"""Check mfm's CUDA paths on a GPU machine, or rehearse every check on the CPU.

    python benchmarks/gpu_check.py                       # every row on the GPU (about 10 min)
    python benchmarks/gpu_check.py --only compile bf16
    python benchmarks/gpu_check.py --device cpu          # the rehearsal: small sizes, gloo

Rows (any failure, and a run without CUDA that was not asked to rehearse, exit non-zero):

- compile: a U-Net with perturbed, non-zero weights (its zero-initialised output layers would
  make any two models agree): torch.compile'd outputs and gradients against eager fp32.
- bf16: N training steps under bf16 autocast against fp32 from the same non-zero weights and
  batches: the losses stay close; dopri5's NFE on the model's field under both.
- resume: an image config through the DataLoader (ImageNet npz files) with dropout 0.1,
  stopped and resumed: the logged losses equal an uninterrupted run's.
- kill-rank: the same under torchrun (min(GPUs, 2) processes; 2 on the CPU): one rank is
  killed (SIGKILL) after the first checkpoint and the run resumed; losses equal.
- global: a `scope = "global"` exact coupling over the processes (NCCL on GPU, gloo on the
  CPU): the ranks' shares form a permutation of the gathered batch and equal a one-process
  solve of it; then a DDP step.
- overhead: the coupling's cost measured inside the trainer on the image configs' per-GPU
  batches: exact against independent, with the background thread on and off, beside the
  paper's +0.8 % (ImageNet-32) and +4 % (ImageNet-64).
- memory: peak memory of each image config at its per-GPU batch (allocated and reserved),
  training and then resuming from its checkpoint (the resume spike).
- throughput: steps/s and images/s of the full-depth ImageNet-32 and -64 U-Nets at the
  configs' per-GPU batch, bf16.
- dopri5: adaptive sampling on the device against the closed form of dx/dt = c x.
- sinkhorn: the entropic plan of a (1024, 1024) device cost matrix through 500 iterations,
  counting host synchronisations (allowed: one per convergence check, every 10 iterations);
  on the CPU there is nothing to synchronise with, so it only checks the plan's marginals.

On the CPU every row runs at small sizes and says so; the figures then only show the row
works. docs/training.md says what each row proves.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import attrs
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "tomlconfigs"
CHECKS = (
    "compile", "bf16", "resume", "kill-rank", "global", "overhead", "memory", "throughput",
    "dopri5", "sinkhorn",
)  # fmt: skip
PAPER_OVERHEAD = {"imagenet32": 0.8, "imagenet64": 4.0}  # % of training time, BatchOT
PER_GPU = {"imagenet32": 256, "imagenet64": 50}  # the configs' batch per GPU


@dataclass(frozen=True)
class Row:
    """One line of the table: a check (or one case of it), whether it passed, its time."""

    check: str
    ok: bool
    seconds: float
    detail: str


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--only", nargs="+", choices=CHECKS, default=list(CHECKS))
    parser.add_argument("--steps", type=int, default=10, help="training steps per measurement")
    parser.add_argument(
        "--compile-backend", default="inductor", help="torch.compile backend (inductor)"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # a torchrun child's entry
    args = parser.parse_args(argv)
    if args.steps < 2:
        parser.error("--steps must be at least 2")
    return args


def run_check(name: str, function: Callable[[], list[Row]]) -> list[Row]:
    """The rows of one check; an exception is a failed row naming it, and the next check runs."""
    start = time.perf_counter()
    try:
        return function()
    except Exception as exc:  # a failed check must not hide the others
        detail = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _small(args: argparse.Namespace) -> bool:
    return args.device == "cpu"


def _resolution(args: argparse.Namespace) -> int:
    return 8 if _small(args) else 32


def _unet(args: argparse.Namespace):
    """A small U-Net with perturbed weights: every layer, the zero-initialised ones too,
    contributes to the output."""
    from mfm_core import create

    resolution = _resolution(args)
    torch.manual_seed(0)
    model = create(
        "vector_field",
        "unet",
        data_shape=(3, resolution, resolution),
        channels=32 if _small(args) else 64,
        channel_mult=(1, 2),
        num_res_blocks=1,
        attention_resolutions=(resolution // 2,),
        head_channels=32,
    )
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return model.to(args.device)


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def check_compile(args: argparse.Namespace, compile_fn: Callable | None = None) -> list[Row]:
    model = _unet(args)
    compiled = (compile_fn or (lambda m: torch.compile(m, backend=args.compile_backend)))(model)
    generator = torch.Generator().manual_seed(1)
    r = _resolution(args)
    x = torch.randn(4, 3, r, r, generator=generator).to(args.device)
    t = torch.rand(4, generator=generator).to(args.device)
    results = []
    for network in (model, compiled):
        model.zero_grad(set_to_none=True)
        out = network(x, t)
        out.pow(2).mean().backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters()])
        results.append((out.detach(), grads))
    (eager, eager_grads), (out, grads) = results
    if eager.abs().max() == 0 or eager_grads.abs().max() == 0:
        raise RuntimeError("the eager output or gradient is zero: the comparison means nothing")
    tolerance = 1e-4 if args.device == "cpu" else 2e-3  # TF32 and fused kernels on the GPU
    errors = _relative(out, eager), _relative(grads, eager_grads)
    if max(errors) > tolerance:
        raise RuntimeError(
            f"compiled differs from eager: outputs by {errors[0]:.2g}, gradients by "
            f"{errors[1]:.2g} (relative, allowed {tolerance:g})"
        )
    detail = f"outputs within {errors[0]:.1g}, gradients within {errors[1]:.1g} of eager fp32"
    return [Row("compile", True, 0.0, detail)]


def check_bf16(args: argparse.Namespace, loss_fn: Callable | None = None) -> list[Row]:
    from mfm_core import create
    from mfm_core.runner.training.objective import model_field, regression_loss

    loss_fn = loss_fn or regression_loss
    path = create("path", "cond-ot")
    r, tolerance = _resolution(args), 1e-3 if _small(args) else 1e-5
    losses, nfe = {}, {}
    for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        model = _unet(args)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        generator = torch.Generator().manual_seed(2)
        losses[name] = []
        for _ in range(args.steps):
            x0 = torch.randn(8, 3, r, r, generator=generator).to(args.device)
            x1 = torch.rand(8, 3, r, r, generator=generator).to(args.device) * 2 - 1
            t = torch.rand(8, generator=generator).to(args.device)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(path, model, x0, x1, t, None, dtype)
            loss.backward()
            optimizer.step()
            losses[name].append(loss.item())
        solver = create("solver", "dopri5", atol=tolerance, rtol=tolerance)
        with torch.no_grad():
            x0 = torch.randn(4, 3, r, r, generator=generator).to(args.device)
            nfe[name] = solver(model_field(model.eval(), None, 1.0, dtype), x0).nfe
    gap = max(abs(a - b) / abs(b) for a, b in zip(losses["bf16"], losses["fp32"], strict=True))
    if not all(math.isfinite(v) for v in losses["bf16"]) or gap > 0.05:
        raise RuntimeError(f"bf16 losses leave fp32's by {gap:.1%} over {args.steps} steps")
    if nfe["bf16"] > 3 * nfe["fp32"]:
        raise RuntimeError(f"dopri5 needs {nfe['bf16']} NFE in bf16 against {nfe['fp32']}")
    detail = (
        f"{args.steps} steps: losses within {gap:.2%} of fp32; dopri5 NFE {nfe['fp32']} fp32, "
        f"{nfe['bf16']} bf16"
    )
    return [Row("bf16", True, 0.0, detail)]


def write_npz(root: Path, resolution: int, count: int) -> Path:
    """``count`` random images as one official downsampled-ImageNet training batch."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (count, 3 * resolution * resolution), dtype=np.uint8)
    labels = rng.integers(1, 1001, count)
    np.savez(root / "train_data_batch_1.npz", data=data, labels=labels, mean=data.mean(0))
    return root


def image_overrides(
    args: argparse.Namespace, root: Path, batch: int, workers: int = 1
) -> list[str]:
    """The ImageNet-32 config through its loader with dropout 0.1, at a size the device takes."""
    small = ["model.channels=32", "model.channel_mult=[1,2]", "model.num_res_blocks=1"]
    return [
        f"data.root={root}",
        f"data.workers={workers}",
        "model.dropout=0.1",
        "model.attention_resolutions=[16]",
        *(small if _small(args) else []),
        f"train.batch_size={batch}",
        f"train.device={args.device}",
        "train.checkpoint_every=2",
        "train.log_every=1",
        "train.warmup_steps=0",
        "train.lr_schedule='constant'",
        "eval.grid=1",
        "eval.loss_batches=1",
        "eval.solvers=[{name='euler',steps=1}]",
    ]


def _losses(run_dir: Path) -> list[tuple[int, float]]:
    from mfm_core.runner.rundir.layout import read_log

    return [(r["step"], r["loss"]) for r in read_log(run_dir)]


def _compare(resumed: list, whole: list, what: str) -> str:
    if not whole or resumed != whole:
        differ = sum(a != b for a, b in zip(resumed, whole, strict=False))
        raise RuntimeError(f"{differ} of {len(whole)} logged losses differ after {what}")
    return f"{len(whole)} losses equal after {what}"


def check_resume(args: argparse.Namespace) -> list[Row]:
    from mfm_core.runner.run import resume_run, start_run

    config = CONFIGS / "imagenet32.toml"
    with tempfile.TemporaryDirectory() as tmp:
        overrides = image_overrides(args, write_npz(Path(tmp) / "data", 32, 64), 8)
        whole = start_run(config, [*overrides, "train.steps=6"], Path(tmp) / "a", progress=False)
        part = start_run(config, [*overrides, "train.steps=3"], Path(tmp) / "b", progress=False)
        resume_run(part, ["train.steps=6"], progress=False)
        detail = _compare(_losses(part), _losses(whole), "a resume at step 3 (dropout 0.1)")
    return [Row("resume", True, 0.0, detail)]


def _processes(args: argparse.Namespace) -> int:
    return 2 if args.device == "cpu" else min(torch.cuda.device_count(), 2)


def _torchrun(args: argparse.Namespace, *rest: str) -> list[str]:
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc_per_node={_processes(args)}", *rest,
    ]  # fmt: skip


def _kill_rank(parent: int, rank: str) -> bool:
    """SIGKILL the child of ``parent`` whose environment says ``RANK=rank``."""
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError):
            if entry.name.isdigit() and int((entry / "stat").read_text().split()[3]) == parent:
                if f"RANK={rank}".encode() in (entry / "environ").read_bytes().split(b"\0"):
                    os.kill(int(entry.name), signal.SIGKILL)
                    return True
    return False


def check_kill_rank(args: argparse.Namespace) -> list[Row]:
    from mfm_core.runner.rundir.checkpoint import list_checkpoints

    config = str(CONFIGS / "imagenet32.toml")
    nproc = _processes(args)
    with tempfile.TemporaryDirectory() as tmp:
        root = write_npz(Path(tmp) / "data", 32, 128)
        workers = 0 if _small(args) else 1  # the loader's worker seeds: the `resume` row
        overrides = [*image_overrides(args, root, 4 * nproc, workers), "train.steps=8", "--quiet"]
        run = ["-m", "mfm_core", "run", config, *overrides]
        whole = subprocess.run(
            _torchrun(args, *run, "--runs", f"{tmp}/a"), capture_output=True, text=True
        )
        if whole.returncode:
            raise RuntimeError(f"torchrun failed: {whole.stderr.strip().splitlines()[-1:]}")
        agent = subprocess.Popen(
            _torchrun(args, *run, "--runs", f"{tmp}/b"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        run_dir = Path(tmp) / "b" / "00000-imagenet32"
        deadline = time.monotonic() + 300
        while not list_checkpoints(run_dir / "checkpoints") and time.monotonic() < deadline:
            time.sleep(0.02)
        victim = str(nproc - 1)
        if not _kill_rank(agent.pid, victim):
            agent.kill()
            raise RuntimeError(f"rank {victim} was not found to kill")
        agent.wait(timeout=120)
        killed_at = max((step for step, _ in list_checkpoints(run_dir / "checkpoints")), default=0)
        if killed_at >= 8:
            raise RuntimeError("the run finished before a rank could be killed")
        resumed = subprocess.run(
            _torchrun(args, "-m", "mfm_core", "run", "--resume", str(run_dir), "--quiet"),
            capture_output=True,
            text=True,
        )
        if resumed.returncode:
            raise RuntimeError(f"the resume failed: {resumed.stderr.strip().splitlines()[-1:]}")
        detail = _compare(
            _losses(run_dir),
            _losses(Path(tmp) / "a" / "00000-imagenet32"),
            f"killing rank {victim} of {nproc} after step {killed_at}",
        )
    return [Row("kill-rank", True, 0.0, detail)]


def check_global(args: argparse.Namespace, fault: str = "") -> list[Row]:
    env = {**os.environ, "GPU_CHECK_FAULT": fault, "GPU_CHECK_DEVICE": args.device}
    done = subprocess.run(
        _torchrun(args, __file__, "--worker", "global"), capture_output=True, text=True, env=env
    )
    if done.returncode:
        lines = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()
        said = [line for line in lines if "Error" in line or "terminate" in line] or lines
        raise RuntimeError(f"torchrun exited with {done.returncode}: {said[-1].strip()}")
    return [Row("global", True, 0.0, done.stdout.strip().splitlines()[-1])]


def global_worker() -> int:
    """A torchrun child: a global exact coupling's shares against a one-process solve."""
    import torch.distributed as dist

    from mfm_core.couplers import ExactCoupler

    rank = int(os.environ["RANK"])
    if os.environ["GPU_CHECK_DEVICE"] == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        world, k = dist.get_world_size(), 64
        generator = torch.Generator().manual_seed(10 + rank)
        x0 = torch.randn(k, 8, generator=generator).to(device)
        x1 = torch.randn(k, 8, generator=generator).to(device) + 1
        coupling = ExactCoupler(scope="global")(x0, x1)
        share = torch.stack([coupling.i, coupling.j])
        if os.environ.get("GPU_CHECK_FAULT") == "wrong-share" and rank == world - 1:
            share = share.roll(1, dims=1) if world == 1 else share - k  # another rank's pairs
        shares = [torch.empty_like(share) for _ in range(world)]
        dist.all_gather(shares, share)
        pairs = torch.cat(shares, 1).cpu()
        gathered_x0, gathered_x1, _ = coupling.samples
        alone = ExactCoupler()(gathered_x0, gathered_x1)
        n = world * k
        if not (torch.equal(pairs[0].sort().values, torch.arange(n))):
            raise RuntimeError("the shares' noise indices are not a permutation of the batch")
        if not (torch.equal(pairs[1].sort().values, torch.arange(n))):
            raise RuntimeError("the shares' data indices are not a permutation of the batch")
        mine = dict(zip(pairs[0].tolist(), pairs[1].tolist(), strict=True))
        theirs = dict(zip(alone.i.cpu().tolist(), alone.j.cpu().tolist(), strict=True))
        if mine != theirs:
            raise RuntimeError("the shares differ from a one-process solve of the gathered batch")
        ddp = torch.nn.parallel.DistributedDataParallel(
            torch.nn.Linear(8, 8).to(device), device_ids=None if device.type == "cpu" else [rank]
        )
        ddp(x0).pow(2).mean().backward()
        # Free DDP (it holds the group's gloo threads) and meet before the group goes: left to
        # the collector at exit, a process can abort ("terminate called ...").
        del ddp
        gc.collect()
        dist.barrier()
        if rank == 0:
            print(
                f"{dist.get_backend()}, {world} processes: the shares of {n} pairs form a "
                "permutation equal to a one-process solve; DDP step done"
            )
    finally:
        dist.destroy_process_group()
    return 0


def _trainer_run(args: argparse.Namespace, name: str, overrides: list[str], tmp: Path):
    """A Trainer of an image config: two warm-up steps, then ``args.steps`` measured ones;
    returns it, its seconds per measured step and its coupling record of those steps."""
    from mfm_core.config import load_config
    from mfm_core.runner.assembly.loading import seeded_pipeline
    from mfm_core.runner.assembly.session import RunSession
    from mfm_core.runner.training.loop import Trainer

    config = load_config(CONFIGS / f"{name}.toml", [*overrides, f"train.steps={2 + args.steps}"])
    run_dir = tmp / f"run-{len(list(tmp.iterdir()))}"
    run_dir.mkdir()
    session = RunSession(
        config=config,
        pipeline=seeded_pipeline(config),
        run_dir=run_dir,
        device=torch.device(args.device),
    )
    trainer = Trainer(session)
    trainer.config = attrs.evolve(config.train, steps=2)  # the warm-up, then the rest
    trainer.train(progress=False)
    trainer.config = config.train
    trainer.train(progress=False)
    record = trainer.coupling_record()
    return trainer, record["step_ms"] / 1000, record


def _sized(args: argparse.Namespace, name: str, root: Path) -> list[str]:
    """The config at its per-GPU batch on the GPU, tiny on the CPU."""
    resolution = 32 if name == "imagenet32" else 64
    small = [
        "model.channels=32", "model.channel_mult=[1,2]", "model.num_res_blocks=1",
        "model.attention_resolutions=[16]", "train.batch_size=8",
    ]  # fmt: skip
    batch = [] if _small(args) else [f"train.batch_size={PER_GPU[name]}"]
    return [
        f"data.root={write_npz(root / name, resolution, 64 if _small(args) else 512)}",
        f"train.device={args.device}",
        "train.checkpoint_every=1000000",
        *([*small, "data.workers=0"] if _small(args) else batch),
    ]


def check_overhead(args: argparse.Namespace) -> list[Row]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, paper in PAPER_OVERHEAD.items():
            base = _sized(args, name, Path(tmp))
            times = {}
            for label, extra in (
                ("independent", ["coupler.name=independent"]),
                ("exact, thread", ["train.overlap_coupling='on'"]),
                ("exact, no thread", ["train.overlap_coupling='off'"]),
            ):
                _, seconds, record = _trainer_run(args, name, [*base, *extra], Path(tmp))
                times[label] = (seconds, record)
            plain = times["independent"][0]
            parts = [f"independent {1e3 * plain:.1f} ms/step"]
            for label in ("exact, thread", "exact, no thread"):
                seconds, record = times[label]
                parts.append(
                    f"{label} {1e3 * seconds:.1f} ms ({100 * (seconds / plain - 1):+.1f} %, "
                    f"coupling {record['coupling_ms']:.1f} ms, waited {record['waited_ms']:.1f})"
                )
            size = "CPU rehearsal sizes" if _small(args) else f"batch {PER_GPU[name]} per GPU"
            detail = f"{size}: " + "; ".join(parts) + f"; paper: +{paper} %"
            rows.append(Row(f"overhead: {name}", True, 0.0, detail))
    return rows


def _peak(device: torch.device) -> str:
    if device.type == "cuda":
        allocated, reserved = torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()
        torch.cuda.reset_peak_memory_stats()
        return f"{allocated / 2**30:.2f} GiB allocated, {reserved / 2**30:.2f} GiB reserved"
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return f"{peak:.2f} GiB peak RSS of the process so far (the CPU keeps no per-phase peak)"


def check_memory(args: argparse.Namespace) -> list[Row]:
    device = torch.device(args.device)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in PER_GPU:
            _sync(device)
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            trainer, _, _ = _trainer_run(args, name, _sized(args, name, Path(tmp)), Path(tmp))
            trainer.save()
            run_dir, session = trainer.run_dir, trainer.session
            del trainer
            training = _peak(device)
            from mfm_core.runner.training.loop import Trainer

            resumed = Trainer(session)
            resumed.resume()
            resumed.train_step()
            _sync(device)
            detail = f"training: {training}; resume and one step: {_peak(device)}"
            rows.append(Row(f"memory: {name}", True, 0.0, detail))
            del resumed, run_dir
    return rows


def check_throughput(args: argparse.Namespace) -> list[Row]:
    from mfm_core import create
    from mfm_core.config import load_config
    from mfm_core.runner.training.objective import regression_loss

    device = torch.device(args.device)
    path = create("path", "cond-ot")
    rows = []
    for name, batch in PER_GPU.items():
        config = load_config(CONFIGS / f"{name}.toml")
        params = dict(config.model.params)
        resolution = 32 if name == "imagenet32" else 64
        if _small(args):  # the full depth does not fit a CPU rehearsal
            params.update(channels=32, channel_mult=[1, 2], num_res_blocks=1)
            params.update(attention_resolutions=[16])
            batch = 4
        model = create("vector_field", "unet", data_shape=(3, resolution, resolution), **params)
        model = model.to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        x0 = torch.randn(batch, 3, resolution, resolution, device=device)
        x1 = torch.rand_like(x0) * 2 - 1
        dtype = torch.bfloat16 if device.type == "cuda" else None
        for index in range(2 + args.steps):
            if index == 2:  # two warm-up steps
                _sync(device)
                start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            t = torch.rand(batch, device=device)
            regression_loss(path, model, x0, x1, t, None, dtype).backward()
            optimizer.step()
        _sync(device)
        per_second = args.steps / (time.perf_counter() - start)
        size = "CPU rehearsal sizes" if _small(args) else "full depth, bf16"
        detail = (
            f"{size}, batch {batch}: {per_second:.2f} steps/s, {per_second * batch:.0f} images/s "
            f"({sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters)"
        )
        rows.append(Row(f"throughput: {name}", True, 0.0, detail))
    return rows


def check_dopri5(args: argparse.Namespace) -> list[Row]:
    from mfm_core.solvers import Dopri5Solver

    c = 0.8
    x0 = torch.randn(4096, 16, device=args.device, dtype=torch.float64)
    result = Dopri5Solver(atol=1e-8, rtol=1e-8)(lambda x, t: c * x, x0)
    if result.x1.device.type != args.device:
        raise RuntimeError(f"the solution came back on {result.x1.device}")
    error = (result.x1 - math.exp(c) * x0).abs().max().item()
    if not error < 1e-6:
        raise RuntimeError(f"max error {error:.3g} against e^c x0")
    return [Row("dopri5", True, 0.0, f"{result.nfe} evaluations, max error {error:.2g}")]


def check_sinkhorn(args: argparse.Namespace) -> list[Row]:
    import warnings

    from mfm_coupling_sinkhorn.sinkhorn import sinkhorn_plan

    from mfm_core.couplers import cost_matrix

    n = 256 if _small(args) else 1024
    generator = torch.Generator().manual_seed(0)
    x0 = torch.randn(n, 64, generator=generator).to(args.device)
    x1 = torch.randn(n, 64, generator=generator).to(args.device) + 1
    costs = cost_matrix(x0, x1)
    iterations, check_every = 500, 10
    on_gpu = args.device == "cuda"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if on_gpu:
            torch.cuda.set_sync_debug_mode("warn")
        try:
            result = sinkhorn_plan(
                costs, reg=0.05, max_iter=iterations, tol=1e-12, check_every=check_every
            )
        finally:
            if on_gpu:
                torch.cuda.set_sync_debug_mode("default")
    syncs = sum("synchroniz" in str(w.message) for w in caught)
    allowed = result.iterations // check_every + 10
    if result.plan.device.type != args.device or syncs > allowed:
        raise RuntimeError(
            f"{syncs} host synchronisations in {result.iterations} iterations "
            f"(allowed {allowed}), plan on {result.plan.device}"
        )
    marginal = (result.plan.sum(1) * n - 1).abs().max().item()
    if marginal > 1e-3:
        raise RuntimeError(f"the plan's rows sum to 1/n within {marginal:.2g} only")
    counted = f"{syncs} host synchronisations" if on_gpu else "no synchronisations on the CPU"
    detail = f"{result.iterations} iterations, {counted}, row marginals within {marginal:.1g}"
    return [Row("sinkhorn", True, 0.0, detail)]


FUNCTIONS = {
    "compile": check_compile,
    "bf16": check_bf16,
    "resume": check_resume,
    "kill-rank": check_kill_rank,
    "global": check_global,
    "overhead": check_overhead,
    "memory": check_memory,
    "throughput": check_throughput,
    "dopri5": check_dopri5,
    "sinkhorn": check_sinkhorn,
}


def timed(function: Callable[[], list[Row]]) -> Callable[[], list[Row]]:
    """The check with its wall time in rows that did not time themselves."""

    def run() -> list[Row]:
        start = time.perf_counter()
        rows = function()
        seconds = (time.perf_counter() - start) / max(1, len(rows))
        return [Row(r.check, r.ok, r.seconds or seconds, r.detail) for r in rows]

    return run


def main(
    argv: Sequence[str] | None = None, cuda_available: Callable[[], bool] = torch.cuda.is_available
) -> int:
    args = parse_args(argv)
    if args.worker == "global":
        return global_worker()
    if args.device == "cuda" and not cuda_available():
        print(
            "error: no CUDA device here, so nothing was checked; run it on a GPU machine, or "
            "rehearse every row on the CPU with --device cpu",
            file=sys.stderr,
        )
        return 2
    where = torch.cuda.get_device_name() if args.device == "cuda" else "CPU rehearsal"
    print(f"{where}, torch {torch.__version__}")
    rows: list[Row] = []
    for name in args.only:
        new = run_check(name, timed(lambda name=name: FUNCTIONS[name](args)))
        rows.extend(new)
        for line in format_table(new).splitlines()[2:]:
            print(line, flush=True)
    print()
    print(format_table(rows))
    return exit_code(rows)


if __name__ == "__main__":
    raise SystemExit(main())

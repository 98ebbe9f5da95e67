"""What a coupling costs a training run: time per step with each coupler against independent
pairs, on the quickstart (2-D MLP, batch 256) and the digits U-Net (batch 64, within class).

    python benchmarks/overhead.py                          # both jobs, independent and exact
    python benchmarks/overhead.py --jobs quickstart --steps 3000 --repeats 3
    python benchmarks/overhead.py --couplers independent,exact,sinkhorn --markdown

Each run trains ``--steps`` steps of the job's own config through ``mfm_core.train`` (no
evaluation, no checkpoint but the last), and reads the run's ``metrics.json``
``train.coupling_time``: milliseconds per step, the coupling's milliseconds per step (drawing
included; in the background thread when the run couples ahead), and the part of it the step
waited for. Runs are interleaved (independent, exact, independent, exact, ...) and the median
of ``--repeats`` is reported, so a change of load affects every coupler alike; the load
average before and after is printed, since a loaded machine hides a coupling (the step slows
down and the background thread catches up).

The second table is the floor the machine sets: one coupling of the job's batch timed alone
(``--probe`` calls on fresh batches, one thread), beside independent pairs' step. With ``c``
cores, a step that trains in ``s`` ms of one core's time and couples in ``t`` ms cannot take
less than ``(s + t) / c``, whatever overlaps what.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import mfm_core

ROOT = Path(__file__).resolve().parent.parent
JOBS = {
    "quickstart": {
        "config": "tomlconfigs/quickstart.toml",
        "steps": 3000,
        "overrides": ["train.device=cpu"],
    },
    "digits": {
        "config": "tomlconfigs/digits.toml",
        "steps": 150,
        "overrides": ["train.device=cpu", "train.log_every=50", "eval.loss_batches=1"],
    },
}
QUIET = ["eval.solvers=[]", "eval.metrics=[]", "eval.trajectories=0"]


def run_once(
    job: str, coupler: str, steps: int, runs: Path, extra: tuple[str, ...] = ()
) -> dict[str, float]:
    spec = JOBS[job]
    overrides = [
        *spec["overrides"],
        *extra,
        *QUIET,
        f"coupler.name={coupler}",
        f"train.steps={steps}",
        f"train.checkpoint_every={steps}",
    ]
    run = mfm_core.train(ROOT / spec["config"], overrides=overrides, runs=runs, name=job)
    record = run.metrics["train"]["coupling_time"]
    return {key: float(record[key]) for key in ("step_ms", "coupling_ms", "waited_ms")} | {
        "background": bool(record["background"])
    }


def run_threads(threads: int | None, *args) -> dict[str, float]:
    """``run_once`` with torch limited to ``threads`` threads (``None``: as it is)."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return run_once(*args)
    finally:
        torch.set_num_threads(before)


def median_runs(plan: list[tuple], steps: int, repeats: int, runs: Path) -> dict[tuple, dict]:
    """Each (label, job, coupler, threads, extra overrides) of ``plan`` run ``repeats`` times,
    interleaved; the median of each figure per label."""
    results: dict[tuple, list[dict[str, float]]] = {}
    for job in dict.fromkeys(key[1] for key in plan):  # warm-up: imports, first allocations
        run_once(job, "independent", min(steps, 50), runs)
    for repeat in range(repeats):
        for key in plan:
            label, job, coupler, threads, extra = key
            started = time.perf_counter()
            figures = run_threads(threads, job, coupler, steps, runs, extra)
            results.setdefault(key, []).append(figures)
            print(
                f"  [{repeat + 1}/{repeats}] {job} {label}: {figures['step_ms']:.2f} ms/step "
                f"(coupling {figures['coupling_ms']:.2f}, waited {figures['waited_ms']:.2f}; "
                f"{time.perf_counter() - started:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
    return {
        key: {
            name: statistics.median(r[name] for r in rows)
            for name in ("step_ms", "coupling_ms", "waited_ms")
        }
        | {"background": rows[0]["background"]}
        for key, rows in results.items()
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--jobs", default="quickstart,digits", help="comma-separated: " + ", ".join(JOBS)
    )
    parser.add_argument("--couplers", default="exact", help="couplers to set against independent")
    parser.add_argument("--steps", type=int, default=None, help="steps per run (default: per job)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--one-thread",
        action="store_true",
        help="also run each coupler with torch on one thread (a core left to the coupling)",
    )
    parser.add_argument("--no-floor", action="store_true", help="skip the one-thread floor runs")
    args = parser.parse_args()
    jobs = [j for j in args.jobs.split(",") if j]
    unknown = [j for j in jobs if j not in JOBS]
    if unknown:
        parser.error(f"unknown job(s) {unknown}; choose from {', '.join(JOBS)}")
    couplers = [c for c in args.couplers.split(",") if c and c != "independent"]
    if args.repeats < 1 or (args.steps is not None and args.steps < 10):
        parser.error("--repeats must be >= 1 and --steps >= 10")
    cores = os.cpu_count() or 1
    load = os.getloadavg()[0]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {cores} cores; "
        f"load average {load:.2f} at start",
        file=sys.stderr,
    )
    rows, floors = [], []
    with tempfile.TemporaryDirectory(prefix="mfm-overhead-") as tmp:
        for job in jobs:
            steps = args.steps or JOBS[job]["steps"]
            plan = [("independent", job, "independent", None, ())]
            plan += [(name, job, name, None, ()) for name in couplers]
            if args.one_thread:
                plan += [(f"{name}, torch on 1 thread", job, name, 1, ()) for name in couplers]
            alone = ("train.overlap_coupling=off",)
            if not args.no_floor:
                plan += [("independent, 1 thread", job, "independent", 1, ())]
                plan += [(f"{name}, alone", job, name, 1, alone) for name in couplers]
            figures = median_runs(plan, steps, args.repeats, Path(tmp))
            base = figures[plan[0]]["step_ms"]
            shown = 1 + len(couplers) * (2 if args.one_thread else 1)
            for key in plan[:shown]:
                f = figures[key]
                share = f"{100 * (f['step_ms'] / base - 1):+.0f} %" if key != plan[0] else ""
                rows.append(
                    f"| {job} | {key[0]} | {steps} | {f['step_ms']:.2f} | {f['coupling_ms']:.2f} "
                    f"| {f['waited_ms']:.2f} | {'yes' if f['background'] else 'no'} | {share} |"
                )
            if not args.no_floor:
                single = figures[plan[shown]]
                one = single["step_ms"] - single["coupling_ms"]
                for name in couplers:
                    couple = figures[(f"{name}, alone", job, name, 1, alone)]["coupling_ms"]
                    floor = max((one + couple) / cores, couple, base)
                    floors.append(
                        f"| {job} | {name} | {base:.2f} | {one:.2f} | {couple:.2f} | "
                        f"{floor:.2f} | {100 * (floor / base - 1):+.0f} % |"
                    )
    print(f"load average {os.getloadavg()[0]:.2f} at the end", file=sys.stderr)
    print(
        "| job | coupler | steps | ms/step | coupling ms/step | waited ms/step | background "
        "| vs independent |"
    )
    print("|---|---|---:|---:|---:|---:|---|---:|")
    print("\n".join(rows))
    if floors:
        print()
        print(
            "| job | coupler | independent ms/step | its training on 1 thread, ms "
            "| one coupling alone, ms "
            "| floor ms/step | floor vs independent |"
        )
        print("|---|---|---:|---:|---:|---:|---:|")
        print("\n".join(floors))
    return 0


if __name__ == "__main__":
    sys.exit(main())

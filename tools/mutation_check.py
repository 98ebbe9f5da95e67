"""Plant plausible one-line bugs in the numeric core and report which the test suite misses.

A developer tool, not part of CI. Each mutation replaces one exact snippet of one source file
(a sign flip, a mean instead of a root mean square, an off-by-one node, a missing square
root, swapped arguments, a plain write instead of an atomic one), runs the tests that cover
that file, and restores the file. A mutation is "killed" when those tests fail, "survived"
when they pass. Run from the repository, in its environment::

    python tools/mutation_check.py            # every mutation
    python tools/mutation_check.py -k w2 -v   # those whose name contains "w2", with output
    python tools/mutation_check.py -k reliability   # the promises of docs/reliability.md

Besides the numeric core, the ``reliability:`` mutations plant bugs where the hostile batteries
found them: the loss under gradient accumulation, Sinkhorn's convergence at small epsilon,
checkpoint rotation after a resume, validators, messages, read-back checks, output paths,
recorded outcomes, a coupler's inputs, and what a resume may change.

The mutations are planted in a scratch copy of the working tree (first on ``PYTHONPATH``), so
the tree itself is never modified and can be worked on meanwhile. A snippet that is no
longer in its file is reported as "stale" (the list needs updating). Exit status: 0 when
every mutation is killed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str
    original: str
    mutant: str
    tests: tuple[str, ...]


W2_TESTS = ("tests/metrics/test_w2.py",)
SOLVER_TESTS = ("tests/solvers",)
FLOW_TESTS = ("tests/metrics/test_flow_metrics.py",)
LIKELIHOOD_TESTS = ("tests/metrics/test_likelihood.py",)
FID_TESTS = ("tests/metrics/test_fid.py",)
COUPLER_TESTS = ("tests/couplers/test_exact.py", "tests/couplers/test_costs.py")
PATH_TESTS = ("tests/paths",)
CHECKPOINT_TESTS = ("tests/runner/test_checkpoint_atomic.py",)
GUIDANCE_TESTS = ("tests/runner/test_model_field.py",)
# The reliability promises of docs/reliability.md, and the areas the hostile batteries found.
ACCUM_TESTS = ("tests/runner/test_grad_accum.py",)
ROTATION_TESTS = ("tests/faults/test_checkpoints.py",)
SINKHORN_TESTS = ("plugins/mfm-coupling-sinkhorn/tests/test_sinkhorn_plan.py",)
VALIDATOR_TESTS = ("tests/test_validated_keys.py",)
MESSAGE_TESTS = ("tests/faults/test_messages.py",)
READBACK_TESTS = ("tests/faults/test_readback.py",)
PATH_OPTION_TESTS = ("tests/faults/test_paths.py",)
OUTCOME_TESTS = ("tests/faults/test_outcomes.py",)
RESUME_CHANGE_TESTS = ("tests/faults/test_resume_changes.py",)

MUTATIONS = (
    Mutation(
        "w2: mean of distances instead of the root mean square",
        "mfm_core/metrics/w2.py",
        "return math.sqrt(costs[rows, cols].mean())",
        "return float((costs[rows, cols] ** 0.5).mean())",
        W2_TESTS,
    ),
    Mutation(
        "w2: missing square root",
        "mfm_core/metrics/w2.py",
        "return math.sqrt(costs[rows, cols].mean())",
        "return float(costs[rows, cols].mean())",
        W2_TESTS,
    ),
    Mutation(
        "w2: sum instead of mean",
        "mfm_core/metrics/w2.py",
        "return math.sqrt(costs[rows, cols].mean())",
        "return math.sqrt(costs[rows, cols].sum())",
        W2_TESTS,
    ),
    Mutation(
        "w2: the given order instead of the optimal matching",
        "mfm_core/metrics/w2.py",
        "rows, cols = linear_sum_assignment(costs)",
        "rows = cols = list(range(len(costs)))",
        W2_TESTS,
    ),
    Mutation(
        "euler: field at the end of the step (c = 1)",
        "mfm_core/solvers/fixed_step.py",
        "EULER = ButcherTableau(a=((),), b=(1.0,), c=(0.0,))",
        "EULER = ButcherTableau(a=((),), b=(1.0,), c=(1.0,))",
        SOLVER_TESTS,
    ),
    Mutation(
        "midpoint: second node at the end of the step",
        "mfm_core/solvers/fixed_step.py",
        "MIDPOINT = ButcherTableau(a=((), (0.5,)), b=(0.0, 1.0), c=(0.0, 0.5))",
        "MIDPOINT = ButcherTableau(a=((), (0.5,)), b=(0.0, 1.0), c=(0.0, 1.0))",
        SOLVER_TESTS,
    ),
    Mutation(
        "heun: second node at the start of the step",
        "mfm_core/solvers/fixed_step.py",
        "HEUN = ButcherTableau(a=((), (1.0,)), b=(0.5, 0.5), c=(0.0, 1.0))",
        "HEUN = ButcherTableau(a=((), (1.0,)), b=(0.5, 0.5), c=(0.0, 0.0))",
        SOLVER_TESTS,
    ),
    Mutation(
        "rk4: third stage from the first slope",
        "mfm_core/solvers/fixed_step.py",
        "a=((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),",
        "a=((), (0.5,), (0.5, 0.0), (0.0, 0.0, 1.0)),",
        SOLVER_TESTS,
    ),
    Mutation(
        "fixed step: off-by-one step index in the stage time",
        "mfm_core/solvers/fixed_step.py",
        "x0.shape[:1], (step + c) / self.steps, dtype=x0.dtype, device=x0.device",
        "x0.shape[:1], (step + 1 + c) / self.steps, dtype=x0.dtype, device=x0.device",
        SOLVER_TESTS,
    ),
    Mutation(
        "guidance: sign of the difference flipped",
        "mfm_core/runner/training/objective.py",
        "return v_null + guidance * (v_cond - v_null)",
        "return v_cond + guidance * (v_null - v_cond)",
        GUIDANCE_TESTS,
    ),
    Mutation(
        "checkpoint: plain write instead of temporary file and rename",
        "mfm_core/runner/rundir/checkpoint.py",
        "    path.parent.mkdir(exist_ok=True)\n    fd, tmp",
        "    path.parent.mkdir(exist_ok=True)\n"
        "    with open(path, 'wb') as handle:\n        return write(handle)\n    fd, tmp",
        CHECKPOINT_TESTS,
    ),
    Mutation(
        "cond-OT path: target with the sign of x0 flipped",
        "mfm_core/paths/cond_ot.py",
        "d_sigma_t=torch.full_like(t, -shrink),",
        "d_sigma_t=torch.full_like(t, shrink),",
        PATH_TESTS,
    ),
    Mutation(
        "cond-OT path: x_t with t and 1 - t swapped",
        "mfm_core/paths/cond_ot.py",
        "alpha_t=t,\n            sigma_t=1.0 - shrink * t,",
        "alpha_t=1.0 - shrink * t,\n            sigma_t=t,",
        PATH_TESTS,
    ),
    Mutation(
        "sqeuclidean cost: inner product added instead of subtracted",
        "mfm_core/couplers/costs.py",
        "a, b.T, alpha=-2.0",
        "a, b.T, alpha=2.0",
        COUPLER_TESTS,
    ),
    Mutation(
        "exact coupler: maximises the cost",
        "mfm_core/couplers/exact.py",
        "rows, cols = linear_sum_assignment(matrix)",
        "rows, cols = linear_sum_assignment(matrix, maximize=True)",
        COUPLER_TESTS,
    ),
    Mutation(
        "exact coupler: swapped arguments (the transposed assignment)",
        "mfm_core/couplers/exact.py",
        "rows, cols = linear_sum_assignment(matrix)",
        "rows, cols = linear_sum_assignment(matrix.T)",
        COUPLER_TESTS,
    ),
    Mutation(
        "straightness: chord with the wrong sign",
        "mfm_core/metrics/flow.py",
        "chord = path[-1] - path[0]",
        "chord = path[-1] + path[0]",
        FLOW_TESTS,
    ),
    Mutation(
        "straightness: plain mean over times instead of the trapezoid",
        "mfm_core/metrics/flow.py",
        "return float(torch.trapezoid(errors, times))",
        "return float(errors.mean())",
        FLOW_TESTS,
    ),
    Mutation(
        "transport cost: noise added instead of subtracted",
        "mfm_core/metrics/flow.py",
        "cost = float(_sum_sq(ctx.generated.cpu() - ctx.noise.cpu()).mean())",
        "cost = float(_sum_sq(ctx.generated.cpu() + ctx.noise.cpu()).mean())",
        FLOW_TESTS,
    ),
    Mutation(
        "transport cost: W2 instead of W2 squared as the floor",
        "mfm_core/metrics/flow.py",
        "draws.append(w2_distance(x0, x1) ** 2)",
        "draws.append(w2_distance(x0, x1))",
        FLOW_TESTS,
    ),
    Mutation(
        "consistency: not divided by the feature width",
        "mfm_core/metrics/flow.py",
        "return float(_sum_sq(features - accurate).mean() / features.shape[1])",
        "return float(_sum_sq(features - accurate).mean())",
        FLOW_TESTS,
    ),
    Mutation(
        "grad variance: biased (divided by the number of batches)",
        "mfm_core/metrics/flow.py",
        "return float(m2 / (self.batches - 1))",
        "return float(m2 / self.batches)",
        FLOW_TESTS,
    ),
    Mutation(
        "likelihood: divergence term added instead of subtracted",
        "mfm_core/metrics/likelihood.py",
        "return log_prob0(z1[:, :-1].reshape(x1.shape)) - z1[:, -1]",
        "return log_prob0(z1[:, :-1].reshape(x1.shape)) + z1[:, -1]",
        LIKELIHOOD_TESTS,
    ),
    Mutation(
        "likelihood: field integrated forwards in reversed time",
        "mfm_core/metrics/likelihood.py",
        "return torch.cat([-v.detach().flatten(1), div.detach()[:, None]], dim=1).to(z.dtype)",
        "return torch.cat([v.detach().flatten(1), div.detach()[:, None]], dim=1).to(z.dtype)",
        LIKELIHOOD_TESTS,
    ),
    Mutation(
        "likelihood: field evaluated at s instead of 1 - s",
        "mfm_core/metrics/likelihood.py",
        "v = field(y, 1 - s)",
        "v = field(y, s)",
        LIKELIHOOD_TESTS,
    ),
    Mutation(
        "bpd: dequantisation offset missing",
        "mfm_core/metrics/likelihood.py",
        "return nll + dim * math.log(1 / PIXEL_BIN) if dequantize else nll",
        "return nll",
        LIKELIHOOD_TESTS,
    ),
    Mutation(
        "fid: trace term added instead of subtracted",
        "mfm_core/metrics/fid.py",
        "np.trace(sigma2) - 2.0 * trace_sqrt",
        "np.trace(sigma2) + 2.0 * trace_sqrt",
        FID_TESTS,
    ),
    Mutation(
        "reliability: the loss reported under grad_accum is the sum of the micro-batches",
        "mfm_core/runner/training/loop.py",
        "return total / accum",
        "return total",
        ACCUM_TESTS,
    ),
    Mutation(
        "reliability: a resumed run rotates its newest old checkpoint away first",
        "mfm_core/runner/rundir/checkpoint.py",
        "for saved, path in reversed(list_checkpoints(directory)):",
        "for saved, path in list_checkpoints(directory):",
        ROTATION_TESTS,
    ),
    Mutation(
        "reliability: sinkhorn without epsilon scaling",
        "plugins/mfm-coupling-sinkhorn/mfm_coupling_sinkhorn/sinkhorn.py",
        "while schedule[0] * 4.0 < _EASY * mean_cost:",
        "while False:",
        SINKHORN_TESTS,
    ),
    Mutation(
        "reliability: sinkhorn without over-relaxation",
        "plugins/mfm-coupling-sinkhorn/mfm_coupling_sinkhorn/sinkhorn.py",
        "_MAX_OMEGA = 1.95",
        "_MAX_OMEGA = 1.0",
        SINKHORN_TESTS,
    ),
    Mutation(
        "reliability: the positive validator accepts zero",
        "mfm_core/schema.py",
        "if value is not None and value <= 0:",
        "if value is not None and value < 0:",
        VALIDATOR_TESTS,
    ),
    Mutation(
        "reliability: the non-negative validator rejects zero",
        "mfm_core/schema.py",
        "if value is not None and value < 0:",
        "if value is not None and value <= 0:",
        VALIDATOR_TESTS,
    ),
    Mutation(
        "reliability: decay rates may be 1",
        "mfm_core/schema.py",
        "if not 0 <= value < 1:",
        "if not 0 <= value <= 1:",
        VALIDATOR_TESTS,
    ),
    Mutation(
        "reliability: integers beyond int64 pass the config",
        "mfm_core/config.py",
        "INT64 = (-(2**63), 2**63 - 1)",
        "INT64 = (-(2**64), 2**64)",
        MESSAGE_TESTS,
    ),
    Mutation(
        "reliability: long words in error lines quoted whole",
        "mfm_core/cli.py",
        'return re.sub(rf"\\S{{{LONGEST_WORD + 1},}}", cut, text)',
        "return text",
        MESSAGE_TESTS,
    ),
    Mutation(
        "reliability: a torch file mfm did not write is taken for a checkpoint",
        "mfm_core/runner/rundir/checkpoint.py",
        "    if missing:\n        raise CheckpointError(",
        "    if missing and False:\n        raise CheckpointError(",
        READBACK_TESTS,
    ),
    Mutation(
        "reliability: a bad line in the middle of log.jsonl ends the log",
        "mfm_core/runner/rundir/layout.py",
        "                problems.append(number)\n            continue",
        "                problems.append(number)\n            break",
        READBACK_TESTS,
    ),
    Mutation(
        "reliability: eval --out not resolved before the emptiness check",
        "mfm_core/runner/evaluation/reevaluate.py",
        'out = in_existing_folder(out, "--out")',
        'in_existing_folder(out, "--out")',
        PATH_OPTION_TESTS,
    ),
    Mutation(
        "reliability: eval --out written without its lock",
        "mfm_core/runner/evaluation/reevaluate.py",
        "held.enter_context(run_lock(directory))",
        "pass",
        PATH_OPTION_TESTS,
    ),
    Mutation(
        "reliability: sample --out makes its missing folder",
        "mfm_core/runner/evaluation/sampling.py",
        'resolved = in_existing_folder(out, "--out")',
        "resolved = out.resolve()",
        PATH_OPTION_TESTS,
    ),
    Mutation(
        "reliability: a failed run recorded as done",
        "mfm_core/runner/rundir/outcome.py",
        '    if error is None:\n        return "done"',
        '    if True:\n        return "done"',
        OUTCOME_TESTS,
    ),
    Mutation(
        "reliability: the coupler gets the original x0 and x1",
        "mfm_core/runner/training/feed.py",
        "given = tuple(None if t is None else t.clone() for t in (x0, x1, cond))",
        "given = (x0, x1, cond)",
        OUTCOME_TESTS,
    ),
    Mutation(
        "reliability: a coupler's KeyboardInterrupt taken for the user's Ctrl-C",
        "mfm_core/runner/training/feed.py",
        "if not isinstance(exc, (SystemExit, KeyboardInterrupt)):",
        "if not isinstance(exc, SystemExit):",
        OUTCOME_TESTS,
    ),
    Mutation(
        "reliability: a coupler's SystemExit ends the process",
        "mfm_core/adapters/coupler.py",
        "except SystemExit as exc:  # never the user's",
        "except ArithmeticError as exc:  # never the user's",
        OUTCOME_TESTS,
    ),
    Mutation(
        "reliability: a failed coupling's draws are kept in the saved generator",
        "mfm_core/runner/training/feed.py",
        "        self.generator.set_state(generator)\n",
        "",
        OUTCOME_TESTS,
    ),
    Mutation(
        "reliability: a resume may change every key",
        "mfm_core/runner/assembly/experiment.py",
        "return [k for k in keys if not _changeable(k) and before.get(k) != after.get(k)]",
        "return []",
        RESUME_CHANGE_TESTS,
    ),
    Mutation(
        "reliability: a resume may end before the run's step",
        "mfm_core/runner/assembly/experiment.py",
        "if isinstance(steps, int) and steps < step:",
        "if isinstance(steps, int) and steps < step - 1:",
        RESUME_CHANGE_TESTS,
    ),
)


def run(mutation: Mutation, tree: Path, verbose: bool, timeout: float) -> str:
    """Apply ``mutation`` in ``tree``, run its tests, restore the file: "killed", "survived"
    or "stale"."""
    path = tree / mutation.path
    source = path.read_text()
    if source.count(mutation.original) != 1:
        return "stale"
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider"]
    command += list(mutation.tests)
    path.write_text(source.replace(mutation.original, mutation.mutant))
    try:
        done = subprocess.run(
            command, cwd=tree, env=_env(tree), capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return "killed (timeout)"
    finally:
        path.write_text(source)
    if verbose:
        print(done.stdout[-2000:])
    return "survived" if done.returncode == 0 else "killed"


def _env(tree: Path) -> dict[str, str]:
    """The environment of the tests: the scratch copy's packages come first on the path, for
    the tests and for the processes they start."""
    paths = [str(tree), str(tree / "plugins" / "mfm-coupling-sinkhorn")]
    if os.environ.get("PYTHONPATH"):
        paths.append(os.environ["PYTHONPATH"])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def _copy_tree(scratch: Path) -> Path:
    """The working tree without version control, environments or caches."""
    tree = scratch / "tree"
    ignore = shutil.ignore_patterns(".git", ".venv*", "__pycache__", "*.egg-info", "runs")
    shutil.copytree(ROOT, tree, ignore=ignore)
    probe = "import mfm_core, mfm_coupling_sinkhorn; print(mfm_core.__file__)"
    found = subprocess.run(
        [sys.executable, "-c", probe], cwd=tree, env=_env(tree), capture_output=True, text=True
    )
    if not found.stdout.startswith(str(tree)):
        raise SystemExit(f"error: the scratch copy's mfm_core is not the one imported: {found}")
    return tree


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "-k", action="append", help="only mutations whose name contains this (repeatable)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="print the test output")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per mutation")
    args = parser.parse_args()
    words = [word.lower() for word in args.k or [""]]
    chosen = [m for m in MUTATIONS if any(word in m.name.lower() for word in words)]
    results = []
    with tempfile.TemporaryDirectory(prefix="mfm-mutation-") as scratch:
        tree = _copy_tree(Path(scratch))
        for mutation in chosen:
            start = time.monotonic()
            outcome = run(mutation, tree, args.verbose, args.timeout)
            results.append(outcome)
            print(f"{outcome:17} {time.monotonic() - start:6.0f} s  {mutation.name}", flush=True)
    killed = sum(r.startswith("killed") for r in results)
    print(f"score: {killed}/{len(results)} mutations killed")
    return 0 if killed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())

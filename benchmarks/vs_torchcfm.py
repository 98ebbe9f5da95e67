"""mfm's quickstart against TorchCFM's OT-CFM, side by side in one run: training time and W2.

TorchCFM is not a dependency of mfm: run this in a benchmark environment that has both
(never in the project's own environment), e.g.

    python3 -m venv --system-site-packages /tmp/cfmvenv
    /tmp/cfmvenv/bin/pip install --no-deps torchcfm
    /tmp/cfmvenv/bin/pip install --no-deps -e .
    /tmp/cfmvenv/bin/python benchmarks/vs_torchcfm.py            # the quickstart's 6000 steps
    /tmp/cfmvenv/bin/python benchmarks/vs_torchcfm.py --steps 500  # a quick look

Both train on the same data: noise N(0, I) in 2-D and mfm's checkerboard, drawn on the CPU
from generators with the same seed, with the quickstart's budget: its steps, batch (256),
width (an MLP of three hidden layers of 256), learning rate (3e-3) and exact minibatch OT.
mfm trains as `mfm-run tomlconfigs/quickstart.toml` does (its Trainer: cosine schedule
with warmup, EMA, logging and checkpoints into a temporary run directory; evaluation left
out). TorchCFM trains as its README's loop does: ExactOptimalTransportConditionalFlowMatcher
(POT's ot.emd, pairs drawn from the plan) and its MLP under Adam at a constant learning rate.
Each model then integrates the same 2000 noise samples with 1, 2 and 4 Euler steps; W2 is
the exact W2 to the same 2000 checkerboard samples (mfm's w2_distance for both).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from mfm_core.config import load_config
from mfm_core.datasets.toy2d import Checkerboard
from mfm_core.metrics.w2 import w2_distance
from mfm_core.runner.assembly.pipeline import build_pipeline
from mfm_core.runner.assembly.session import RunSession
from mfm_core.runner.training.loop import Trainer

try:
    from torchcfm.conditional_flow_matching import ExactOptimalTransportConditionalFlowMatcher
    from torchcfm.models.models import MLP
except ImportError:
    ExactOptimalTransportConditionalFlowMatcher = MLP = None

QUICKSTART = Path(__file__).parents[1] / "tomlconfigs" / "quickstart.toml"
EULER_STEPS = (1, 2, 4)
EVAL_SAMPLES = 2000


def euler(field, x: torch.Tensor, steps: int) -> torch.Tensor:
    """``steps`` Euler steps of ``dx/dt = field(x, t)`` from t = 0 to 1."""
    for index in range(steps):
        t = torch.full((len(x), 1), index / steps)
        x = x + field(x, t) / steps
    return x


def train_mfm(steps: int, seed: int, run_dir: Path) -> tuple[float, torch.nn.Module]:
    config = load_config(QUICKSTART, [f"train.steps={steps}", f"train.seed={seed}"])
    torch.manual_seed(seed)
    trainer = Trainer(RunSession(config=config, pipeline=build_pipeline(config), run_dir=run_dir))
    start = time.perf_counter()
    trainer.train(progress=False)
    return time.perf_counter() - start, trainer.eval_model.eval()


def train_torchcfm(steps: int, seed: int, batch: int, lr: float) -> tuple[float, torch.nn.Module]:
    torch.manual_seed(seed)
    model = MLP(dim=2, w=256, time_varying=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    matcher = ExactOptimalTransportConditionalFlowMatcher(sigma=0.0)
    target = Checkerboard()
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.zero_grad()
        x0 = torch.randn(batch, 2, generator=generator)
        x1 = target.sample(batch, generator)
        t, xt, ut = matcher.sample_location_and_conditional_flow(x0, x1)
        vt = model(torch.cat([xt, t[:, None]], dim=-1))
        loss = torch.mean((vt - ut) ** 2)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start, model.eval()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if MLP is None:
        print("error: TorchCFM is not installed here; see this script's docstring for a venv")
        return 2
    config = load_config(QUICKSTART)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.steps} steps of "
        f"{config.train.batch_size}, lr {config.train.lr}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        mfm_seconds, mfm_model = train_mfm(args.steps, args.seed, Path(tmp))
    cfm_seconds, cfm_model = train_torchcfm(
        args.steps, args.seed, config.train.batch_size, config.train.lr
    )
    generator = torch.Generator().manual_seed(args.seed + 1)
    noise = torch.randn(EVAL_SAMPLES, 2, generator=generator)
    data = Checkerboard().sample(EVAL_SAMPLES, generator)
    fields = {
        "mfm": lambda x, t: mfm_model(x, t[:, 0]),
        "torchcfm": lambda x, t: cfm_model(torch.cat([x, t], dim=-1)),
    }
    seconds = {"mfm": mfm_seconds, "torchcfm": cfm_seconds}
    print("| | train s | " + " | ".join(f"W2 Euler {n}" for n in EULER_STEPS) + " |")
    print("|---|---:|" + "---:|" * len(EULER_STEPS))
    with torch.no_grad():
        for name, field in fields.items():
            w2 = [w2_distance(euler(field, noise, n), data) for n in EULER_STEPS]
            print(f"| {name} | {seconds[name]:.1f} | " + " | ".join(f"{v:.3f}" for v in w2) + " |")
    print(f"mfm / torchcfm training time: {mfm_seconds / cfm_seconds:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A shortened quickstart reports trained weights: the EMA warm-up at work (the EMA trap)."""

from __future__ import annotations

import json
from pathlib import Path

from mfm_core.cli import main

QUICKSTART = str(Path(__file__).parents[2] / "tomlconfigs" / "quickstart.toml")
SHORT = [
    "train.device=cpu",
    "eval.num_samples=1000",
    'eval.solvers=[{name="euler",steps=1},{name="euler",steps=2}]',
    "eval.trajectories=0",
    "eval.loss_batches=2",
    "train.checkpoint_every=1000",
    "--quiet",
]


def _w2(directory: Path) -> list[float]:
    metrics = json.loads((directory / "metrics.json").read_text())
    return [row["w2"] for row in metrics["samples"]]


def test_a_short_run_with_the_shipped_ema_beats_the_untrained_model_and_separates_couplings(
    tmp_path, capsys
) -> None:
    runs = tmp_path / "runs"
    assert main(["run", QUICKSTART, "train.steps=1", *SHORT, "--runs", str(runs)]) == 0
    assert main(["compare", QUICKSTART, "coupler.name=exact,independent", "train.steps=300",
                 *SHORT, "--runs", str(runs)]) == 0  # fmt: skip
    out = capsys.readouterr().out
    untrained, comparison = runs / "00000-quickstart", runs / "00001-compare-quickstart"
    exact, independent = _w2(comparison / "exact"), _w2(comparison / "independent")
    floor = _w2(untrained)
    # 300 steps at ema = 0.999 evaluate averaged trained weights, not the initialisation.
    assert max(exact) < 0.6 * min(floor), (exact, floor)
    # ... and show the paper's effect at one Euler step.
    assert exact[0] < 0.6 * independent[0], (exact, independent)
    weights = json.loads((comparison / "exact" / "metrics.json").read_text())["weights"]
    assert weights == {
        "kind": "ema",
        "decay": 0.999,
        "effective_decay": 300 / 309,
        "step": 300,
    }
    report = (comparison / "exact" / "metrics.md").read_text()
    assert "Evaluated: EMA weights (decay 0.999, effective 0.9709) at step 300." in report
    assert "evaluated EMA weights (decay 0.999, effective 0.1) at step 1" in out

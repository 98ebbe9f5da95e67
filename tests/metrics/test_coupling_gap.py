"""coupling_gap: the run's coupling against the full OT plan of a reference set, in
metrics.json and `mfm compare`'s table, as trained (semidiscrete's potentials, also under
`mfm eval`), leaving the coupler and the random streams as they were."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from mfm_core import ConfigError, PrepareContext, create
from mfm_core.cli import main
from mfm_core.datasets.file import Points
from mfm_core.datasets.toy2d import Checkerboard, Gaussian
from mfm_core.metrics.context import context_for_field
from mfm_core.runner.assembly.loading import load_seeded
from mfm_core.runner.evaluation.reevaluate import eval_run
from mfm_core.runner.run import start_run
from mfm_core.testing import write_tiny_config

GAP = '{name="coupling_gap",reference_size=192,repeats=1}'
QUICK = [
    "train.steps=4",
    "eval.num_samples=40",
    "eval.trajectories=0",
    "eval.loss_batches=1",
    'eval.solvers=[{name="euler",steps=1}]',
]


def test_exact_is_closer_to_the_plan_than_independent_in_compares_table(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    config = write_tiny_config(tmp_path)
    sweep = ["compare", str(config), "coupler.name=independent,exact", f"eval.metrics=[{GAP}]"]
    assert main([*sweep, *QUICK, "--runs", str(runs), "--quiet"]) == 0
    (directory,) = [p for p in runs.iterdir() if p.name.endswith("-compare-tiny")]
    ratio = {}
    for label in ("independent", "exact"):
        metrics = json.loads((directory / label / "metrics.json").read_text())
        figures = metrics["run"]
        assert metrics["better"]["coupling_gap.ratio"] == "closer to 1"
        ratio[label] = figures["coupling_gap.ratio"]
        assert ratio[label] == pytest.approx(
            figures["coupling_gap.pair_cost"] / figures["coupling_gap.ot_cost"]
        )
    # Batches of 32 of a set of 192: the union of the batches' pairs is one permutation of
    # the set, so never below its optimum; exact's batches are far closer than independent's.
    assert 1.0 - 1e-9 <= ratio["exact"] < ratio["independent"]
    assert ratio["exact"] < 0.7 * ratio["independent"]
    table = (directory / "comparison.md").read_text()
    header = next(line for line in table.splitlines() if line.startswith("| run"))
    assert "coupling_gap.ratio (closer to 1 better)" in header
    assert f"{ratio['exact']:.4g}" in table and f"{ratio['independent']:.4g}" in table


def test_semidiscrete_is_measured_as_trained_and_again_under_mfm_eval(
    tmp_path: Path, caplog
) -> None:
    points = tmp_path / "points.npy"
    np.save(points, Checkerboard().sample(200, torch.Generator().manual_seed(0)).numpy())
    overrides = [
        f'data.target={{name="file",path="{points}"}}',
        'coupler={name="semidiscrete",iterations=1000,batch=256,check_draws=512}',
        'eval.metrics=[{name="coupling_gap",reference_size=1024,repeats=1}]',
        *QUICK,
    ]
    with caplog.at_level(logging.INFO, logger="mfm_core.couplers.semidiscrete"):
        run_dir = start_run(write_tiny_config(tmp_path), overrides, tmp_path / "runs")
        fits = len([r for r in caplog.records if "semidiscrete potentials" in r.getMessage()])
        assert fits == 1  # at the first coupling; the evaluation used those potentials
        trained = json.loads((run_dir / "metrics.json").read_text())["run"]
        again = eval_run(run_dir, []).metrics["run"]
        refits = len([r for r in caplog.records if "semidiscrete potentials" in r.getMessage()])
    assert refits == 1  # `mfm eval` loaded the potentials from the checkpoint
    assert again == trained
    # A converged fit maps noise to the 200 points at about the OT cost of a large
    # reference set (a small one's OT cost is biased high: the ratio then falls below 1).
    assert trained["coupling_gap.ratio"] == pytest.approx(1.0, abs=0.05)


def test_the_coupler_and_the_global_random_stream_are_left_as_they_were() -> None:
    target = Points(Checkerboard().sample(100, torch.Generator().manual_seed(2)))
    coupler = create("coupler", "semidiscrete", iterations=30, batch=128, check_draws=256)
    generator = torch.Generator().manual_seed(0)
    coupler.prepare(PrepareContext(source=Gaussian(shape=(2,)), target=target, generator=generator))
    noise = torch.randn(8, 2)
    coupler(noise, noise)  # fitted: its trained state
    before, report = coupler.state_dict(), coupler.report
    torch.manual_seed(11)
    rng = torch.get_rng_state()
    ctx = context_for_field(
        lambda x, t: x,
        create("solver", "euler", steps=1),
        noise,
        source=Gaussian(shape=(2,)),
        target=target,
        coupler=coupler,
        coupling_batch=16,
    )
    figures = create("metric", "coupling_gap", reference_size=64)(ctx)
    assert torch.equal(torch.get_rng_state(), rng)
    after = coupler.state_dict()
    assert torch.equal(after["potentials"][-2], before["potentials"][-2])
    assert torch.equal(after["generator"], before["generator"])
    assert after["report"] == before["report"]
    assert coupler.report == report and report.seconds is not None  # its fit time kept too
    # The same figures again: a fixed reference set and splits, from the metric's own seed.
    assert create("metric", "coupling_gap", reference_size=64)(ctx) == figures


def test_without_a_coupler_the_metric_says_what_it_needs() -> None:
    noise = torch.randn(8, 2)
    ctx = context_for_field(lambda x, t: x, create("solver", "euler", steps=1), noise)
    with pytest.raises(ValueError, match="EvalContext.coupler"):
        create("metric", "coupling_gap")(ctx)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "reference_size: expected a positive integer of at most 8192"),
        ("100000", "reference_size: expected a positive integer of at most 8192"),
        ("2.5", "reference_size"),
        ('"big"', "reference_size"),
    ],
)
def test_a_bad_reference_size_is_a_config_error_naming_the_key(
    tmp_path: Path, value: str, message: str
) -> None:
    metric = f'eval.metrics=[{{name="coupling_gap",reference_size={value}}}]'
    with pytest.raises(ConfigError, match=r"\$\.eval\.metrics\[0\]\." + message):
        load_seeded(write_tiny_config(tmp_path), [metric])

"""`mfm eval` and `mfm compare`: the files they write and what is in them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from mfm_core.cli import main
from mfm_core.runner.compare import plan_variants, split_values

# Every metric, at sizes that keep the test quick (each metric's own values are pinned by
# tests/metrics; here the runner's plumbing is under test).
METRICS = (
    'eval.metrics=["w2","straightness",{name="transport_cost",ot_samples=300,repeats=1},'
    '{name="grad_variance",batches=8},"consistency","nll"]'
)
CHEAP = ["eval.num_samples=60", "train.steps=12", "eval.trajectories=10"]


def _compare_dir(runs: Path) -> Path:
    (directory,) = [p for p in runs.iterdir() if p.name.endswith("-compare-tiny")]
    return directory


def test_split_values_keeps_arrays_tables_and_strings_whole() -> None:
    assert split_values("a,b ,c") == ["a", "b", "c"]
    assert split_values("[1, 2],[3]") == ["[1, 2]", "[3]"]
    assert split_values('{name = "euler", steps = 2},"x,y"') == [
        '{name = "euler", steps = 2}',
        '"x,y"',
    ]
    assert split_values("exact") == ["exact"]


def test_plan_sweeps_every_combination_and_keeps_fixed_overrides() -> None:
    fixed, variants = plan_variants(
        ["train.steps=5", "coupler.name=independent,exact", "train.lr=1e-3,2e-3"]
    )
    assert fixed == ["train.steps=5"]
    assert [v.label for v in variants] == [
        "name=independent lr=1e-3",
        "name=independent lr=2e-3",
        "name=exact lr=1e-3",
        "name=exact lr=2e-3",
    ]
    assert variants[3].overrides == ["train.steps=5", "coupler.name=exact", "train.lr=2e-3"]
    assert len({v.directory for v in variants}) == 4


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.steps=5"], "nothing to compare"),
        (["coupler.name=exact,,independent"], "an empty value"),
        (["coupler.name=exact,exact"], "listed twice"),
        (["coupler.name=exact,independent", "coupler.name=a,b"], "swept twice"),
    ],
)
def test_bad_sweeps_are_errors(capsys, tiny_config, tmp_path, overrides, message) -> None:
    runs = tmp_path / "runs"
    assert main(["compare", str(tiny_config), *overrides, "--runs", str(runs)]) == 2
    assert message in capsys.readouterr().err
    assert not runs.exists()


def test_a_bad_value_stops_the_comparison_before_any_training(capsys, tiny_config, tmp_path):
    runs = tmp_path / "runs"
    code = main(["compare", str(tiny_config), "coupler.name=exact,exakt", "--runs", str(runs)])
    err = capsys.readouterr().err
    assert code == 2
    assert "variant 'exakt'" in err and "did you mean 'exact'" in err
    assert not runs.exists()


def test_compare_writes_a_side_by_side_report(capsys, tiny_config, tmp_path) -> None:
    runs = tmp_path / "runs"
    args = ["compare", str(tiny_config), "coupler.name=independent,exact", METRICS, *CHEAP]
    assert main([*args, "--runs", str(runs), "--quiet"]) == 0
    directory = _compare_dir(runs)
    for name in ("comparison.md", "comparison.json", "metrics.png", "loss.png"):
        assert (directory / name).stat().st_size > 0, name
    for name in ("trajectories.png", "samples.png"):  # 2-D data
        assert (directory / name).stat().st_size > 0, name
    table = (directory / "comparison.md").read_text()
    assert table == capsys.readouterr().out.split("done: ")[0]
    assert "mfm compare" in table and "coupler.name=independent,exact" in table
    for heading in ("## w2", "## straightness", "## transport_cost.ratio", "## consistency"):
        assert heading in table
    assert "| independent |" in table and "| exact |" in table
    assert "- [every metric against NFE](metrics.png)" in table  # the pictures are linked
    assert "- [paths of each learned flow](trajectories.png)" in table
    assert "grad_variance" in table.splitlines()[8]  # in the summary header
    results = json.loads((directory / "comparison.json").read_text())["runs"]
    assert list(results) == ["independent", "exact"]
    for label, metrics in results.items():
        config = (directory / label / "config.toml").read_text()
        assert f'name = "{label}"' in config
        assert metrics["train"]["steps"] == 12
        assert metrics["run"]["grad_variance"] > 0
        assert len(metrics["samples"]) == 3 and "errors" not in metrics
        for row in metrics["samples"]:
            assert row["nfe"] > 0 and np.isfinite(row["w2"]) and np.isfinite(row["nll"])
            assert row["transport_cost.ratio"] > 0
    # The same seeds: both runs start from the same noise and evaluate on the same data.
    with (
        np.load(directory / "independent/samples.npz") as a,
        np.load(directory / "exact/samples.npz") as b,
    ):
        assert np.array_equal(a["noise"], b["noise"])
        assert np.array_equal(a["reference"], b["reference"])
        assert not np.array_equal(a["euler-1"], b["euler-1"])
        assert a["trajectory"].shape[1:] == (10, 2)


def test_an_interrupted_comparison_resumes(capsys, tiny_config, tmp_path) -> None:
    runs = tmp_path / "runs"
    args = ["compare", str(tiny_config), "coupler.name=independent,exact", *CHEAP]
    assert main([*args, "--runs", str(runs), "--quiet"]) == 0
    directory = _compare_dir(runs)
    done = (directory / "independent/metrics.json").read_text()
    finished = json.loads((directory / "exact/metrics.json").read_text())
    # As if the process had died during the second run's evaluation.
    (directory / "exact/metrics.json").unlink()
    (directory / "comparison.md").unlink()
    assert main(["compare", "--resume", str(directory), "--quiet"]) == 0
    assert (directory / "independent/metrics.json").read_text() == done
    resumed = json.loads((directory / "exact/metrics.json").read_text())
    assert resumed["samples"] == finished["samples"]
    assert resumed["final_loss"] == finished["final_loss"]
    assert (directory / "comparison.md").is_file()
    assert main(["compare", "--resume", str(tmp_path), "--quiet"]) == 2
    assert "not a comparison directory" in capsys.readouterr().err


def test_eval_recomputes_a_runs_metrics_and_adds_new_ones(capsys, tiny_config, tmp_path):
    runs = tmp_path / "runs"
    assert main(["run", str(tiny_config), *CHEAP, "--runs", str(runs), "--quiet"]) == 0
    (run_dir,) = runs.iterdir()
    before = json.loads((run_dir / "metrics.json").read_text())
    assert (run_dir / "metrics.md").is_file() and (run_dir / "metrics.png").is_file()
    results = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    capsys.readouterr()
    assert main(["eval", str(run_dir), METRICS]) == 0
    out = capsys.readouterr().out
    # The evaluation has a folder of its own; the run's results are left as they were.
    evaluation = run_dir / "evals" / "00000-eval"
    assert out.strip().splitlines()[-1] == f"done: {evaluation}"
    for name, content in results.items():
        if name != "run.log":
            assert (run_dir / name).read_bytes() == content, name
    after = json.loads((evaluation / "metrics.json").read_text())
    assert after["weights"] == before["weights"] == {"kind": "raw", "step": 12}
    assert after["eval"]["num_samples"] == 60 and after["eval"]["seed"] == 1234
    assert after["train"] == before["train"]
    assert after["final_loss"] == before["final_loss"]
    assert after["eval_overrides"] == [METRICS]
    for old, new in zip(before["samples"], after["samples"], strict=True):
        assert new["w2"] == old["w2"]  # the same seeds, the same samples
        assert {"straightness", "consistency", "nll", "transport_cost.cost"} <= set(new)
    assert "grad_variance" in after["run"]
    assert "straightness (lower better)" in out and "noise floor of w2" in out
    assert {"metrics.md", "metrics.png", "samples.npz"} <= {p.name for p in evaluation.iterdir()}
    # A second evaluation goes into the next folder; --out must be new or empty.
    assert main(["eval", str(run_dir), "eval.num_samples=30"]) == 0
    assert (run_dir / "evals" / "00001-eval" / "metrics.json").is_file()
    capsys.readouterr()
    assert main(["eval", str(run_dir), "--out", str(evaluation)]) == 2
    assert "is not an empty folder" in capsys.readouterr().err


def test_a_failing_metric_is_reported_and_the_rest_kept(capsys, tiny_config, tmp_path) -> None:
    runs = tmp_path / "runs"
    # nll needs the source's density; the moons have none.
    overrides = ["data.source=moons", 'eval.metrics=["w2","nll"]', *CHEAP]
    assert main(["run", str(tiny_config), *overrides, "--runs", str(runs), "--quiet"]) == 0
    (run_dir,) = runs.iterdir()
    text = (run_dir / "metrics.json").read_text()

    def reject(constant):
        raise AssertionError(f"metrics.json is not strict JSON: {constant}")

    metrics = json.loads(text, parse_constant=reject)
    assert all(np.isfinite(row["w2"]) for row in metrics["samples"])
    assert all(row["nll"] is None for row in metrics["samples"])  # NaN is written as null
    assert any("log_prob" in message for message in metrics["errors"].values())
    assert "metric nll" in capsys.readouterr().err
    assert "Metrics that failed" in (run_dir / "metrics.md").read_text()


def test_eval_of_something_that_is_not_a_run(capsys, tmp_path) -> None:
    assert main(["eval", str(tmp_path)]) == 2
    assert "is not a run directory" in capsys.readouterr().err


def test_compare_of_image_runs_with_pixel_metrics(capsys, tiny_plugin, image_config, tmp_path):
    # Images: consistency and fid on pixels, nll on dequantized pixels; no 2-D pictures.
    runs = tmp_path / "runs"
    metrics = (
        'eval.metrics=["consistency", {name="fid", features="pixels"}, '
        '{name="bpd", probes=1, batch_size=8}]'
    )
    args = ["compare", str(image_config), "coupler.name=independent,exact", metrics]
    args += ["train.steps=4", "eval.num_samples=16", "--runs", str(runs), "--quiet"]
    assert main(args) == 0
    (directory,) = runs.iterdir()
    results = json.loads((directory / "comparison.json").read_text())["runs"]
    for metrics_json in results.values():
        assert "errors" not in metrics_json
        for row in metrics_json["samples"]:
            assert row["consistency"] >= 0 and row["fid"] > 0
            assert 4 < row["bpd"] < 40  # bits per 8-bit sub-pixel of a barely trained model
    assert (directory / "metrics.png").is_file()
    assert not (directory / "trajectories.png").exists()
    table = (directory / "comparison.md").read_text()
    assert "## fid" in table and "## bpd" in table


def test_metrics_that_re_solve_follow_the_eval_batches(tiny_config, tmp_path) -> None:
    # straightness and consistency solve again (with a trajectory); in batches of 7 they give
    # what one batch gives, for fixed-step solvers.
    runs = tmp_path / "runs"
    assert main(["run", str(tiny_config), *CHEAP, "--runs", str(runs), "--quiet"]) == 0
    (run_dir,) = runs.iterdir()
    solvers = 'eval.solvers=[{name="euler",steps=1},{name="midpoint",steps=3}]'
    # The accurate solve of consistency is adaptive: tight enough not to depend on the batch.
    chosen = (
        'eval.metrics=["straightness",{name="consistency",reference_atol=1e-9,reference_rtol=1e-9}]'
    )
    rows = []
    for batch in ("eval.batch_size=7", "eval.batch_size=1000"):
        out = tmp_path / batch
        extra = [solvers, chosen, batch, "eval.num_samples=21"]
        assert main(["eval", str(run_dir), "--out", str(out), *extra]) == 0
        rows.append(json.loads((out / "metrics.json").read_text())["samples"])
    for batched, whole in zip(*rows, strict=True):
        for key in ("straightness", "consistency"):
            assert batched[key] == pytest.approx(whole[key], rel=1e-4)


def test_written_files_get_the_usual_permissions(tmp_path) -> None:
    # Temporary files are owner-only; what atomic_write leaves must not be.
    from mfm_core.runner.rundir.checkpoint import atomic_write

    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "a.json", lambda handle: handle.write(b"{}"))
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644

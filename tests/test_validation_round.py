"""A config's problems are reported in one round: tables, validators and components."""

from __future__ import annotations

from pathlib import Path

from mfm_core.cli import main

QUICKSTART = str(Path(__file__).parents[1] / "tomlconfigs" / "quickstart.toml")


def test_every_problem_of_the_config_in_one_round(capsys) -> None:
    code = main(
        [
            "validate",
            QUICKSTART,
            "train.lr=-1",
            "model.hidden=[0]",
            "coupler.cosst=l1",
            "train.stepz=3",
            "train.batch_size=0",
            'eval.metrics=["w2", "w3"]',
        ]
    )
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert all(line.startswith("error: ") for line in lines), lines
    keys = sorted(line.split()[1].rstrip(":") for line in lines)
    assert keys == [
        "$.coupler.cosst",
        "$.eval.metrics[1].name",
        "$.model",
        "$.train.batch_size",
        "$.train.lr",
        "$.train.stepz",
    ]


def test_component_problems_alone_are_all_reported(capsys) -> None:
    code = main(["validate", QUICKSTART, "model.hidden=[0]", "solver.stepz=2", "path.sigma=1"])
    assert code == 2
    err = capsys.readouterr().err
    assert "error: $.model: hidden must hold positive layer widths" in err
    assert "error: $.solver.stepz: unknown key" in err
    assert "error: $.path.sigma: unknown key; did you mean 'sigma_min'?" in err


def test_a_broken_table_does_not_hide_the_metrics_of_a_sound_one(capsys) -> None:
    assert main(["validate", QUICKSTART, "train.lr=nope", 'eval.metrics=["w3"]']) == 2
    err = capsys.readouterr().err
    assert "error: $.train.lr: expected a number" in err
    assert "error: $.eval.metrics[0].name: unknown metric 'w3'" in err

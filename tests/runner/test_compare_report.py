"""The comparison's table: time per step and the coupling's share instead of wall-clock
seconds alone, the noise floor, and a note when runs shared the machine."""

from __future__ import annotations

from mfm_core.runner.evaluation.report import compare_markdown


def result(started: str, finished: str, step_ms: float, waited_ms: float) -> dict:
    return {
        "final_loss": 1.0,
        "samples": [{"solver": "euler", "steps": 1, "nfe": 1, "w2": 0.5}],
        "eval": {"num_samples": 500},
        "floors": {"w2": 0.04},
        "train": {
            "steps": 100,
            "seconds": step_ms / 10,
            "coupling_time": {
                "steps": 100,
                "step_ms": step_ms,
                "coupling_ms": waited_ms + 1,
                "waited_ms": waited_ms,
                "background": False,
            },
        },
        "provenance": [{"started": started, "finished": finished}],
    }


def test_the_table_gives_time_per_step_coupling_share_floor_and_overlaps():
    results = {
        "independent": result("2026-12-06T10:00:00+00:00", "2026-12-06T10:05:00+00:00", 40, 2),
        "exact": result("2026-12-06T10:04:00+00:00", "2026-12-06T10:09:00+00:00", 50, 10),
        "heuristic": result("2026-12-06T11:00:00+00:00", "2026-12-06T11:05:00+00:00", 45, 5),
    }
    text = compare_markdown("c", results, "mfm compare ...")
    header = next(line for line in text.splitlines() if line.startswith("| run"))
    assert "ms/step" in header and "coupling ms/step (waited, share of step)" in header
    assert "11.00 (10.00, 20 %) over 100 steps" in text  # exact: 10 of its 50 ms
    assert "3.00 (2.00, 5 %) over 100 steps" in text
    assert "- independent and exact ran at the same time" in text
    assert "heuristic ran at the same time" not in text
    assert "noise floor of w2: 0.04 (two independent draws of the data of 500 points" in text

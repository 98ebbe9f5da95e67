"""Pictures: no global matplotlib state, and every panel labelled."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import torch
from PIL import Image

from mfm_core.runner.evaluation import plots


def test_drawing_leaves_pyplot_and_the_backend_alone(tmp_path) -> None:
    code = (
        "import sys, matplotlib\n"
        "matplotlib.use('svg')\n"
        "import torch\n"
        "from mfm_core.runner.evaluation import plots\n"
        f"plots.plot_loss(__import__('pathlib').Path({str(tmp_path)!r}) / 'loss.png',"
        " [{'step': i, 'loss': 1.0 / i} for i in range(1, 50)])\n"
        "assert matplotlib.get_backend() == 'svg', matplotlib.get_backend()\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert Image.open(tmp_path / "loss.png").size[0] > 500


def _rows(scale: float) -> list[dict]:
    rows = [{"solver": "euler", "steps": s, "nfe": s, "w2": 0.3 + scale / s} for s in (1, 2, 4)]
    return rows + [{"solver": "dopri5", "nfe": 150, "w2": 0.31}]


def test_metric_plot_titles_directions_floor_and_legend(tmp_path, monkeypatch) -> None:
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig))
    drawn = plots.plot_metrics(
        tmp_path / "m.png",
        {"exact": _rows(0.1), "independent": _rows(2.0)},
        better={"w2": "lower"},
        floors={"w2": 0.25},
    )
    assert drawn
    (fig,) = figures
    ax = fig.axes[0]
    assert ax.get_title() == "w2 (lower is better)"
    assert ax.get_xlabel() == "NFE (network evaluations)"
    low, high = ax.get_ylim()
    assert low == 0 and high >= 2.3  # linear from zero: the spread is not zoomed into
    labels = [text.get_text() for text in fig.legends[0].get_texts()]
    assert "noise floor (data vs data)" in labels
    assert "exact, dopri5 (adaptive)" in labels and "independent, euler" in labels


def test_trajectory_frame_holds_every_path(tmp_path, monkeypatch) -> None:
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig))
    paths = torch.zeros(5, 3, 2)
    paths[:, 0, 0] = torch.linspace(0, 10, 5)  # one long outlying path
    plots.plot_trajectories(tmp_path / "t.png", paths, "title")
    ax = figures[0].axes[0]
    assert ax.get_xlim()[0] <= 0 and ax.get_xlim()[1] >= 10
    assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title() == "title"


def test_sample_panel_titles_name_steps_and_nfe(tmp_path) -> None:
    reference = torch.randn(100, 2)
    plots.plot_samples(tmp_path / "s.png", reference, [reference] * 2, _rows(0.1)[:2])
    assert plots._label(_rows(0.1)[0]) == "euler 1 step (NFE 1)\nW2 0.400"
    assert np.asarray(Image.open(tmp_path / "s.png")).shape[1] > 900

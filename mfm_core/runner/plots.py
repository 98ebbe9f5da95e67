"""Pictures of a run: samples at each solver setting beside the data, the flow's
trajectories, and the loss curve. Written with matplotlib's file-only backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


def _label(row: dict[str, Any]) -> str:
    steps = f" {row['steps']} steps" if "steps" in row else ""
    score = f"\nW2 {row['w2']:.3f}" if "w2" in row else ""
    return f"{row['solver']}{steps} (NFE {row['nfe']}){score}"


def _limits(points: torch.Tensor) -> tuple[float, float]:
    low, high = np.quantile(points.numpy(), [0.001, 0.999])
    pad = 0.1 * (high - low)
    return float(low - pad), float(high + pad)


def plot_samples(path: Path, reference: torch.Tensor, generated: list, rows: list) -> None:
    """One panel per solver setting, the data first; 2-D samples only."""
    panels = [("data", reference), *((_label(r), g) for r, g in zip(rows, generated, strict=True))]
    limits = _limits(reference)
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 3.0), squeeze=False)
    for ax, (title, points) in zip(axes[0], panels, strict=True):
        ax.scatter(points[:, 0], points[:, 1], s=1, alpha=0.5, color="C0", rasterized=True)
        ax.set_title(title, fontsize=8)
        ax.set_xlim(limits)
        ax.set_ylim(limits)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_trajectories(path: Path, trajectory: torch.Tensor, title: str) -> None:
    """Paths of the learned flow from noise (grey) to samples (blue); 2-D only."""
    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    paths = trajectory.float().cpu().numpy()
    ax.plot(paths[:, :, 0], paths[:, :, 1], color="olive", alpha=0.25, linewidth=0.6)
    ax.scatter(paths[0, :, 0], paths[0, :, 1], s=3, color="grey", label="noise (t=0)")
    ax.scatter(paths[-1, :, 0], paths[-1, :, 1], s=3, color="C0", label="sample (t=1)")
    ax.set_title(title, fontsize=9)
    ax.set_aspect("equal")
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_loss(path: Path, log: list[dict[str, Any]]) -> None:
    """Training loss per step and its running mean, on a log scale."""
    steps = np.array([r["step"] for r in log])
    loss = np.array([r["loss"] for r in log])
    window = max(1, len(loss) // 50)
    smooth = np.convolve(loss, np.ones(window) / window, mode="valid")
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(steps, loss, alpha=0.3, linewidth=0.6, label="loss")
    ax.plot(steps[window - 1 :], smooth, linewidth=1.2, label=f"mean of {window}")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

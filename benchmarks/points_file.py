"""Write N samples of a registered data set to a .npy points file (a finite data set).

    python benchmarks/points_file.py checkerboard 2048 data/checkerboard-2048.npy

The semi-discrete coupler pairs noise with the points of a finite data set; this turns a
sampler such as ``checkerboard`` into one, with the seed fixed so the file is reproducible.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from mfm_core.registry import get_registry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", help="a registered data set, e.g. checkerboard")
    parser.add_argument("count", type=int, help="number of points")
    parser.add_argument("output", type=Path, help="the .npy file to write")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    dataset = get_registry().create("dataset", args.dataset, {}, path="dataset")
    points = dataset.sample(args.count, torch.Generator().manual_seed(args.seed))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    np.save(args.output, points.numpy())
    print(f"wrote {tuple(points.shape)} to {args.output}")


if __name__ == "__main__":
    main()

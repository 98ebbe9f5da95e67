"""FID parity with pytorch-fid, without the Inception weights.

mfm's FID Inception (mfm_core/metrics/inception.py) is a port of pytorch-fid's. Without the
released weights, the two networks are compared with the same seeded random weights: this
script builds mfm's network from a seed, gives it to pytorch-fid's ``InceptionV3`` in place
of the download, and compares the pool3 features of the same images, and the Frechet
distances of ``mfm_core.metrics.fid.frechet_distance`` and pytorch-fid's
``calculate_frechet_distance`` on the same statistics.

pytorch-fid needs torchvision, which cannot be installed beside the project's torch, so it
runs in a venv of its own (outside the repository)::

    python3 -m venv /work/wt/fidvenv
    /work/wt/fidvenv/bin/pip install torch==2.14.1 torchvision==0.29.1 pytorch-fid
    python benchmarks/fid_parity.py --fid-python /work/wt/fidvenv/bin/python

It prints the largest differences and, with ``--write``, stores pytorch-fid's outputs in
``tests/metrics/data/fid_parity.npz``, which tests/metrics/test_fid_parity.py checks mfm
against in CI (where pytorch-fid is not installed).
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import tempfile
from pathlib import Path

import numpy as np

SEED = 0
IMAGES = 4  # 3x32x32 uint8 images; their 2048-d features are 32 KB
REFERENCE = Path(__file__).resolve().parents[1] / "tests" / "metrics" / "data" / "fid_parity.npz"


def seeded_state(seed: int = SEED) -> dict:
    """A state dict for mfm's ``FIDInceptionV3`` drawn from ``torch.Generator(seed)`` alone
    (not torch's init functions, so it does not change with torch versions), in sorted key
    order: convolutions He-normal, batch-norm scales 1 + 0.1 N(0, 1), shifts and running means
    0.1 N(0, 1), running variances U(0.5, 1.5); the features stay of order one."""
    import torch

    from mfm_core.metrics.inception import FIDInceptionV3

    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in sorted(FIDInceptionV3().state_dict().items()):
        shape = value.shape
        if key.endswith("num_batches_tracked"):
            state[key] = torch.zeros_like(value)
        elif key.endswith("running_var"):
            state[key] = 0.5 + torch.rand(shape, generator=generator)
        elif key.endswith("bn.weight"):
            state[key] = 1 + 0.1 * torch.randn(shape, generator=generator)
        elif key.endswith(("bn.bias", "running_mean")):
            state[key] = 0.1 * torch.randn(shape, generator=generator)
        else:  # conv and fc weights, fc bias
            fan_in = max(1, int(np.prod(shape[1:])))
            state[key] = torch.randn(shape, generator=generator) * (2 / fan_in) ** 0.5
    return state


def state_hash(state: dict) -> str:
    """sha256 of every tensor's bytes in sorted key order."""
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def seeded_images(seed: int = SEED, count: int = IMAGES) -> np.ndarray:
    """Deterministic uint8 images (count, 3, 32, 32): smooth colour gradients plus noise, so
    that they are neither constant nor pure noise."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, 32)
    base = ramp[None, None, :, None] * rng.uniform(0, 255, (count, 3, 1, 1))
    base = base + ramp[None, None, None, :] * rng.uniform(-128, 128, (count, 3, 1, 1))
    noisy = base + rng.normal(0, 30, (count, 3, 32, 32))
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def seeded_statistics(seed: int = SEED) -> dict[str, np.ndarray]:
    """Three pairs of (mu, sigma) in 16 dimensions: two full-rank Gaussians with different
    means and covariances, the first pair again (distance 0), and a singular pair (12 samples
    in 16 dimensions), where pytorch-fid may add its 1e-6 offset."""
    rng = np.random.default_rng(seed)

    def stats(n: int, scale: float, shift: float) -> tuple[np.ndarray, np.ndarray]:
        x = rng.normal(shift, scale, (n, 16)) @ rng.normal(0, 1, (16, 16))
        return x.mean(0), np.cov(x, rowvar=False)

    a, b = stats(200, 1.0, 0.0), stats(200, 1.5, 0.5)
    c, d = stats(12, 1.0, 0.0), stats(12, 1.0, 0.3)
    pairs = [(a, b), (a, a), (c, d)]
    out = {}
    for index, ((mu1, s1), (mu2, s2)) in enumerate(pairs):
        out.update({f"mu1_{index}": mu1, "sigma1_" + str(index): s1})
        out.update({f"mu2_{index}": mu2, "sigma2_" + str(index): s2})
    return out


PYTORCH_FID_SIDE = r"""
import sys
import numpy as np
import torch
import pytorch_fid.inception as pfi
from pytorch_fid.fid_score import calculate_frechet_distance

state_path, inputs_path, out_path = sys.argv[1:4]
state = torch.load(state_path, weights_only=True)
pfi.load_state_dict_from_url = lambda *args, **kwargs: state  # no download: our weights
model = pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
inputs = np.load(inputs_path)
images = torch.from_numpy(inputs["images"].astype(np.float32) / 255.0)  # pytorch-fid: [0, 1]
with torch.no_grad():
    features = model(images)[0].squeeze(3).squeeze(2).double().numpy()
out = {"features": features, "torch": np.array(torch.__version__)}
for i in range(3):
    out[f"frechet_{i}"] = np.array(calculate_frechet_distance(
        inputs[f"mu1_{i}"], inputs[f"sigma1_{i}"], inputs[f"mu2_{i}"], inputs[f"sigma2_{i}"]
    ))
np.savez(out_path, **out)
"""


def mfm_features(state: dict, images: np.ndarray) -> np.ndarray:
    """mfm's pool3 features (n, 2048), float64, of uint8 images (n, 3, H, W)."""
    import torch

    from mfm_core.datasets.images.base import to_float
    from mfm_core.metrics.inception import InceptionFeatures

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "seeded.pth"
        torch.save(state, path)
        features = InceptionFeatures(weights=str(path), device="cpu")
    return features(to_float(images)).double().numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fid-python", required=True, help="python of a venv with pytorch-fid")
    parser.add_argument("--write", action="store_true", help=f"store the reference in {REFERENCE}")
    args = parser.parse_args()

    import torch

    from mfm_core.metrics.fid import frechet_distance

    state = seeded_state()
    images = seeded_images()
    statistics = seeded_statistics()
    with tempfile.TemporaryDirectory() as directory:
        state_path = Path(directory) / "state.pth"
        inputs_path = Path(directory) / "inputs.npz"
        out_path = Path(directory) / "out.npz"
        torch.save(state, state_path)
        np.savez(inputs_path, images=images, **statistics)
        script = Path(directory) / "pytorch_fid_side.py"
        script.write_text(PYTORCH_FID_SIDE)
        subprocess.run(
            [args.fid_python, str(script), str(state_path), str(inputs_path), str(out_path)],
            check=True,
        )
        with np.load(out_path) as saved:
            theirs = {key: saved[key] for key in saved.files}

    ours = mfm_features(state, images)
    scale = np.abs(theirs["features"]).max()
    print(f"pytorch-fid under torch {theirs['torch']}, mfm under torch {torch.__version__}")
    print(f"state dict sha256 {state_hash(state)}")
    print(
        f"features ({IMAGES} x 2048): max |mfm - pytorch-fid| = "
        f"{np.abs(ours - theirs['features']).max():.3e} (max |feature| {scale:.3e})"
    )
    for index in range(3):
        pick = [statistics[f"{k}_{index}"] for k in ("mu1", "sigma1", "mu2", "sigma2")]
        mine, reference = frechet_distance(*pick), float(theirs[f"frechet_{index}"])
        print(
            f"frechet pair {index}: mfm {mine:.10g}  pytorch-fid {reference:.10g}  "
            f"difference {abs(mine - reference):.3e}"
        )
    if args.write:
        REFERENCE.parent.mkdir(parents=True, exist_ok=True)
        frechet = np.array([float(theirs[f"frechet_{i}"]) for i in range(3)])
        np.savez_compressed(
            REFERENCE,
            features=theirs["features"].astype(np.float32),
            frechet=frechet,
            images=images,
            state_sha256=np.array(state_hash(state)),
            pytorch_fid_torch=theirs["torch"],
            **statistics,
        )
        print(f"wrote {REFERENCE} ({REFERENCE.stat().st_size} bytes)")


if __name__ == "__main__":
    main()

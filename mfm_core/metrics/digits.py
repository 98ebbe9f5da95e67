"""Sample quality on the UCI digits, judged by a small classifier trained on the training split:
a Frechet distance in its penultimate features and its accuracy on class-conditional samples."""

from __future__ import annotations

import logging

import torch
from torch import nn

from mfm_core.datasets.images.base import to_float
from mfm_core.datasets.images.digits import NUM_CLASSES, SHAPE, load_digits_split
from mfm_core.metrics.fid import feature_statistics, frechet_distance
from mfm_core.protocols import EvalContext
from mfm_core.schema import InvalidValue

logger = logging.getLogger(__name__)

FEATURES = 64


class DigitsClassifier(nn.Module):
    """Two convolutions and two linear layers: (n, 1, 8, 8) in [-1, 1] -> logits (n, 10);
    ``features`` gives the penultimate activations (n, 64)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(32 * 4 * 4, FEATURES),
            nn.ReLU(),
        )
        self.head = nn.Linear(FEATURES, NUM_CLASSES)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def train_classifier(
    seed: int = 0, epochs: int = 20, batch_size: int = 64, lr: float = 1e-3
) -> DigitsClassifier:
    """A ``DigitsClassifier`` trained with Adam on the training split, all randomness (the
    initialisation and the batch order) from ``seed``; in eval mode, on the CPU."""
    images, labels = load_digits_split("train")
    x, y = to_float(images), torch.from_numpy(labels)
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = DigitsClassifier()
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    with torch.enable_grad():  # metrics run under no_grad
        _fit(net, optimizer, x, y, generator, epochs, batch_size)
    return net.eval()


def _fit(
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    generator: torch.Generator,
    epochs: int,
    batch_size: int,
) -> None:
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch_size):
            batch = order[start : start + batch_size]
            loss = nn.functional.cross_entropy(net(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


class DigitsMetric:
    """``digits``: generated samples scored by a ``DigitsClassifier`` trained (deterministically,
    from ``seed``) on the training split when the metric is first used.

    Returns ``fd``: the Frechet distance between the classifier's penultimate features of
    ``max_samples`` generated samples and of the held-out split (359 images);
    ``fd_real``: the same distance for as many real training images (drawn with ``seed``),
    the floor a model that reproduced the training data would reach; ``accuracy``: the
    fraction of conditional samples the classifier assigns to the class they were generated
    for (only for class-conditional models). Samples are clamped to [-1, 1] first, as when
    they are saved as pictures. ``max_samples`` defaults to the held-out size, so that both
    distances compare sets of equal size.

    Args:
        seed: the seed of the classifier's training and of the drawn real images.
        epochs: how many epochs the digits classifier is trained for.
        max_samples: how many generated samples are scored; 0 means the held-out size (359).
    """

    better = {"fd": "lower", "accuracy": "higher"}

    def __init__(self, *, seed: int = 0, epochs: int = 20, max_samples: int = 0) -> None:
        if epochs < 1:
            raise InvalidValue("epochs", f"must be at least 1, got {epochs}")
        if max_samples < 0 or max_samples == 1:
            raise InvalidValue(
                "max_samples", f"must be 0 (the held-out size) or >= 2, got {max_samples}"
            )
        self.seed = seed
        self.epochs = epochs
        self.max_samples = max_samples
        self.net: DigitsClassifier | None = None

    def _prepare(self) -> DigitsClassifier:
        """Train the classifier and compute the held-out statistics and ``fd_real``, once."""
        if self.net is None:
            # minutes on a CPU with the default epochs: say so, or the evaluation looks hung
            logger.info(
                f"training the digits classifier ({self.epochs} epochs on the training split; "
                "once per evaluation) ..."
            )
            net = train_classifier(self.seed, self.epochs)
            test_images, test_labels = load_digits_split("test")
            test = to_float(test_images)
            train = to_float(load_digits_split("train")[0])
            self.count = self.max_samples or len(test)
            pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(self.seed))
            with torch.no_grad():
                self.held_out_accuracy = float((net(test).argmax(1).numpy() == test_labels).mean())
                self.reference = feature_statistics(net.features(test[: self.count]))
                real = feature_statistics(net.features(train[pick[: self.count]]))
            self.fd_real = frechet_distance(*real, *self.reference)
            logger.info(f"digits classifier: held-out accuracy {self.held_out_accuracy:.4f}")
            self.net = net
        return self.net

    def __call__(self, ctx: EvalContext) -> dict[str, float]:
        if tuple(ctx.generated.shape[1:]) != SHAPE:
            raise ValueError(
                f"the digits metric scores samples of shape {SHAPE}, got "
                f"{tuple(ctx.generated.shape[1:])}; use it with data.target = digits"
            )
        net = self._prepare()
        samples = ctx.generated.detach().float().cpu().clamp(-1, 1)
        with torch.no_grad():
            generated = feature_statistics(net.features(samples[: self.count]))
            result = {"fd": frechet_distance(*generated, *self.reference), "fd_real": self.fd_real}
            if ctx.labels is not None:
                predicted = net(samples).argmax(1)
                result["accuracy"] = (predicted == ctx.labels.cpu()).float().mean().item()
        return result

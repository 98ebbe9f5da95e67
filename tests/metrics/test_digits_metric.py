"""The digits metric: its classifier, its Frechet distance and its class accuracy, checked on
real images, noise and wrong labels."""

from __future__ import annotations

import pytest
import torch

from mfm_core.datasets.images.base import to_float
from mfm_core.protocols import EvalContext, SolveResult

pytest.importorskip("sklearn")

from mfm_core.datasets.images.digits import load_digits_split  # noqa: E402
from mfm_core.metrics.digits import DigitsMetric, train_classifier  # noqa: E402


def scored(metric, samples, labels=None):
    """The metric on ``samples`` as if a model had generated them."""
    ctx = EvalContext(
        generated=samples,
        reference=samples,
        noise=samples,
        field=lambda x, t: x,
        solve=SolveResult(x1=samples, nfe=0),
        labels=labels,
    )
    return metric(ctx)


@pytest.fixture(scope="module")
def metric():
    return DigitsMetric()


@pytest.fixture(scope="module")
def held_out():
    images, labels = load_digits_split("test")
    return to_float(images), torch.from_numpy(labels)


def test_the_held_out_set_itself_scores_zero_distance_and_high_accuracy(metric, held_out):
    images, labels = held_out
    result = scored(metric, images, labels)
    assert result["fd"] == pytest.approx(0.0, abs=1e-6)
    assert result["accuracy"] >= 0.95
    assert metric.held_out_accuracy == pytest.approx(result["accuracy"])


def test_real_training_images_score_the_real_floor_and_noise_scores_far_worse(metric, held_out):
    train = to_float(load_digits_split("train")[0])
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(metric.seed))
    real = scored(metric, train[pick[:359]])
    assert real["fd"] == pytest.approx(real["fd_real"])  # the same images as fd_real's
    assert "accuracy" not in real  # unconditional samples
    other = scored(metric, train[pick[359:718]])
    assert other["fd"] < 3 * other["fd_real"]
    noise = torch.randn(359, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    bad = scored(metric, noise, held_out[1])
    assert bad["fd"] > 10 * bad["fd_real"] and bad["accuracy"] < 0.5


def test_accuracy_counts_samples_of_the_wrong_class_as_wrong(metric, held_out):
    images, labels = held_out
    assert scored(metric, images, (labels + 1) % 10)["accuracy"] < 0.1


def test_the_classifier_is_deterministic_from_its_seed():
    a, b = train_classifier(seed=3, epochs=2), train_classifier(seed=3, epochs=2)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name
    c = train_classifier(seed=4, epochs=2)
    assert not torch.equal(a.head.weight, c.head.weight)


def test_other_shapes_are_refused(metric):
    with pytest.raises(ValueError, match=r"shape \(1, 8, 8\).*data.target = digits"):
        scored(metric, torch.zeros(4, 3, 8, 8))

"""Toy distributions, generated on demand: a Gaussian in any shape and 2D benchmark shapes.

Every sampler draws all its randomness from the ``torch.Generator`` it is given and returns
float32 samples on the CPU. The 2D shapes follow the FFJORD / flow-matching benchmarks; each
point is drawn i.i.d. (a random mixture component per point, never a fixed split).
"""

from __future__ import annotations

import abc
import math

import torch


class Gaussian:
    """``N(0, std^2 I)`` in any sample shape: ``sample(n, g)`` -> (n, *shape).

    The usual noise source ``q0``, for points and for images alike; ``log_prob`` gives its
    density, which likelihood metrics need.

    Args:
        shape: the shape of one sample, e.g. [2] for points or [3, 32, 32] for images.
        std: the standard deviation of every coordinate.
    """

    def __init__(self, *, shape: tuple[int, ...] = (2,), std: float = 1.0) -> None:
        if not shape or any(d < 1 for d in shape):
            raise ValueError(f"shape must hold positive sizes, got {shape!r}")
        if not std > 0:
            raise ValueError(f"std must be positive, got {std!r}")
        self.shape = tuple(shape)
        self.std = std

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return self.std * torch.randn((n, *self.shape), generator=generator, dtype=torch.float32)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """The log density of samples ``x`` (n, *shape) -> (n,), in ``x``'s dtype:
        ``-|x|^2 / (2 std^2) - D log(std) - D log(2 pi) / 2`` with ``D = prod(shape)``."""
        if tuple(x.shape[1:]) != self.shape:
            raise ValueError(
                f"expected samples of shape (n, {', '.join(map(str, self.shape))}), "
                f"got {tuple(x.shape)}"
            )
        dim = math.prod(self.shape)
        return -0.5 * x.flatten(1).square().sum(1) / self.std**2 - dim * (
            math.log(self.std) + 0.5 * math.log(2 * math.pi)
        )


def _check_non_negative(name: str, value: float) -> float:
    if not value >= 0:
        raise ValueError(f"{name} must be non-negative, got {value!r}")
    return value


def _check_positive(name: str, value: float) -> float:
    if not value > 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return value


class Toy2D(abc.ABC):
    """A 2D shape plus isotropic Gaussian noise: ``sample(n, g)`` -> (n, 2), float32.

    Subclasses draw the noiseless points in ``_points`` and set ``noise_std``.
    """

    shape = (2,)
    noise_std: float = 0.0

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        points = self._points(n, generator)
        if self.noise_std:
            points = points + self.noise_std * torch.randn(n, 2, generator=generator)
        return points.to(torch.float32)

    @abc.abstractmethod
    def _points(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """(n, 2) noiseless points."""


def _on_circle(angles: torch.Tensor) -> torch.Tensor:
    return torch.stack([angles.cos(), angles.sin()], dim=1)


class EightGaussians(Toy2D):
    """A mixture of 8 equal Gaussians ``N(c, std^2 I)``, centres evenly spaced on a circle.

    Args:
        radius: the radius of the circle the eight centres lie on.
        std: the standard deviation of each Gaussian.
    """

    def __init__(self, *, radius: float = 4.0, std: float = 0.5) -> None:
        self.radius = _check_positive("radius", radius)
        self.noise_std = _check_non_negative("std", std)

    def _points(self, n: int, generator: torch.Generator) -> torch.Tensor:
        component = torch.randint(8, (n,), generator=generator)
        return self.radius * _on_circle(component * (2 * math.pi / 8))


class Moons(Toy2D):
    """Two interleaving half circles of radius 2 (sklearn's moons, doubled) plus noise.

    The noiseless points span ``[-3, 3] x [-1.5, 1.5]``.

    Args:
        noise: the standard deviation of the Gaussian noise added to each point.
    """

    def __init__(self, *, noise: float = 0.1) -> None:
        self.noise_std = _check_non_negative("noise", noise)

    def _points(self, n: int, generator: torch.Generator) -> torch.Tensor:
        upper = _on_circle(math.pi * torch.rand(n, generator=generator))
        lower = torch.tensor([1.0, 0.5]) - upper
        is_upper = torch.rand(n, generator=generator)[:, None] < 0.5
        return 2.0 * torch.where(is_upper, upper, lower) - torch.tensor([1.0, 0.5])


class Checkerboard(Toy2D):
    """Uniform on the 8 "on" squares of a 4 x 4 checkerboard covering ``[-4, 4]^2 * scale``.

    Squares have side ``2 * scale``; the square with lower-left corner ``2 * scale * (p, q)``,
    ``p, q in {-2, -1, 0, 1}``, is on when ``p + q`` is even.

    Args:
        scale: the size factor of the board; each square has side 2 * scale.
    """

    def __init__(self, *, scale: float = 1.0) -> None:
        self.scale = _check_positive("scale", scale)

    def _points(self, n: int, generator: torch.Generator) -> torch.Tensor:
        column = torch.randint(4, (n,), generator=generator) - 2
        row = 2 * torch.randint(2, (n,), generator=generator) + column.remainder(2) - 2
        corner = torch.stack([column, row], dim=1)
        return 2.0 * self.scale * (corner + torch.rand(n, 2, generator=generator))


class Circles(Toy2D):
    """Two concentric circles of radii ``radius`` and ``factor * radius``, equally likely.

    Args:
        radius: the radius of the outer circle.
        factor: the inner circle's radius as a fraction of the outer one's.
        noise: the standard deviation of the Gaussian noise added to each point.
    """

    def __init__(self, *, radius: float = 3.0, factor: float = 0.5, noise: float = 0.08) -> None:
        self.radius = _check_positive("radius", radius)
        if not 0 < factor < 1:
            raise ValueError(f"factor must be in (0, 1), got {factor!r}")
        self.factor = factor
        self.noise_std = _check_non_negative("noise", noise)

    def _points(self, n: int, generator: torch.Generator) -> torch.Tensor:
        angles = 2 * math.pi * torch.rand(n, generator=generator)
        inner = torch.rand(n, generator=generator)[:, None] < 0.5
        radii = torch.where(inner, self.factor * self.radius, self.radius)
        return radii * _on_circle(angles)


class Spirals(Toy2D):
    """Two interleaved Archimedean spirals ``r = theta / 3`` of ``turns`` turns, plus noise.

    ``theta = sqrt(u) * 2 pi * turns`` with u uniform, so points are roughly uniform in arc
    length; the second spiral is the first rotated by 180 degrees.

    Args:
        turns: how many turns each spiral makes.
        noise: the standard deviation of the Gaussian noise added to each point.
    """

    def __init__(self, *, turns: float = 1.5, noise: float = 0.1) -> None:
        self.turns = _check_positive("turns", turns)
        self.noise_std = _check_non_negative("noise", noise)

    def _points(self, n: int, generator: torch.Generator) -> torch.Tensor:
        theta = torch.rand(n, generator=generator).sqrt() * (2 * math.pi * self.turns)
        sign = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)[:, None]
        return sign * (theta / 3.0)[:, None] * torch.stack([-theta.cos(), theta.sin()], dim=1)

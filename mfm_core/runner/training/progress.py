"""Progress of long loops: a tqdm bar on a terminal; piped to a file, a plain line every few
percent (no carriage returns to fill a log)."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from tqdm.auto import tqdm

PLAIN_EVERY = 0.05
"""A plain progress line every 5 % of the total."""


class PlainProgress:
    """tqdm's ``update``/``set_postfix``/``close`` as one line per ``PLAIN_EVERY`` of the total:
    ``train: 1200/6000 step (20%), 14.2 s, loss=0.2512``."""

    def __init__(
        self, total: int, initial: int, desc: str, unit: str, stream: TextIO | None = None
    ) -> None:
        self.total = max(total, 1)
        self.n = initial
        self.desc = desc
        self.unit = unit
        self.stream = stream
        self.postfix: dict[str, Any] = {}
        self.start = time.perf_counter()
        self.next_line = self._next(initial)
        self.printed = initial

    def _next(self, n: int) -> int:
        step = max(1, round(self.total * PLAIN_EVERY))
        return (n // step + 1) * step

    def set_postfix(self, refresh: bool = False, **values: Any) -> None:
        self.postfix.update(values)

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.n >= self.next_line or self.n >= self.total:
            self._line()
            self.next_line = self._next(self.n)

    def _line(self) -> None:
        self.printed = self.n
        extra = "".join(f", {k}={v}" for k, v in self.postfix.items())
        seconds = time.perf_counter() - self.start
        print(
            f"{self.desc}: {self.n}/{self.total} {self.unit} ({100 * self.n // self.total}%), "
            f"{seconds:.1f} s{extra}",
            file=self.stream or sys.stderr,
            flush=True,
        )

    def close(self) -> None:
        """A last line when the loop stopped between two lines (e.g. at a signal)."""
        if self.n != self.printed:
            self._line()


def progress(
    total: int, *, desc: str, unit: str = "step", initial: int = 0, enabled: bool = True
) -> Any:
    """A tqdm bar when stderr is a terminal, else :class:`PlainProgress`; nothing at all when
    not ``enabled``."""
    if enabled and sys.stderr.isatty():
        return tqdm(total=total, initial=initial, unit=unit, desc=desc, dynamic_ncols=True)
    if enabled:
        return PlainProgress(total, initial, desc, unit)
    return tqdm(total=total, disable=True)

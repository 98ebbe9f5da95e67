"""Whether two runs computed the same figures: their log.jsonl losses and every metric of their
metrics.json, leaving out what measures time or the machine (``time``, ``seconds``,
``coupling_time``, ``eval_seconds``, ``provenance``). For checking that a change of code
changes no result:

    git worktree add /tmp/before <commit>
    (cd /tmp/before && mfm-run tomlconfigs/quickstart.toml train.steps=300 --runs /tmp/a)
    mfm-run tomlconfigs/quickstart.toml train.steps=300 --runs /tmp/b
    python benchmarks/same_figures.py /tmp/a/00000-quickstart /tmp/b/00000-quickstart

Exit status 0 when they are the same, 1 (listing the differences) otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

TIMING = {"time", "seconds", "coupling_time", "eval_seconds", "provenance"}


def without_timing(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_timing(v) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list):
        return [without_timing(v) for v in value]
    return value


def figures(run: Path) -> tuple[list[Any], Any]:
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line]
    metrics = json.loads((run / "metrics.json").read_text())
    return without_timing(log), without_timing(metrics)


def differences(a: Any, b: Any, where: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out += differences(a.get(key), b.get(key), f"{where}.{key}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [
            d
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for d in differences(x, y, f"{where}[{i}]")
        ]
    return [] if a == b else [f"{where or '.'}: {a!r} != {b!r}"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    args = parser.parse_args(argv)
    (log_a, metrics_a), (log_b, metrics_b) = figures(args.first), figures(args.second)
    found = differences(log_a, log_b, "log") + differences(metrics_a, metrics_b, "metrics")
    for line in found[:20]:
        print(line)
    print(
        f"{len(log_a)} log lines; " + ("the same figures" if not found else f"{len(found)} differ")
    )
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())

"""benchmarks/overhead.py: bad arguments are refused before anything trains; a tiny run prints
both tables with the figures each run recorded."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).parents[2]
SCRIPT = REPO / "benchmarks" / "overhead.py"


def run(*words: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *words], capture_output=True, text=True, cwd=REPO
    )


def test_an_unknown_job_is_refused_naming_the_known_ones():
    done = run("--jobs", "quickstart,imagenet")
    assert done.returncode == 2
    assert "unknown job(s) ['imagenet']" in done.stderr and "quickstart, digits" in done.stderr


def test_too_few_steps_are_refused():
    done = run("--steps", "3")
    assert done.returncode == 2 and "--steps >= 10" in done.stderr


def test_a_tiny_run_prints_the_step_table_and_the_floor():
    done = run("--jobs", "quickstart", "--steps", "12", "--repeats", "1")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    rows = [line for line in lines if line.startswith("| quickstart |")]
    assert [row.split("|")[2].strip() for row in rows] == ["independent", "exact", "exact"]
    step = rows[1].split("|")
    assert step[3].strip() == "12" and float(step[4]) > 0 and step[7].strip() == "yes"
    floor = rows[2].split("|")
    independent, training, alone, bound = (float(floor[i]) for i in (3, 4, 5, 6))
    cores = os.cpu_count() or 1
    assert abs(bound - max(independent, alone, (training + alone) / cores)) <= 0.02
    assert "load average" in done.stderr

"""The GPU check's CPU-side logic: arguments, the table, exit codes, the no-CUDA path."""

from __future__ import annotations

import pytest


def test_without_cuda_it_says_so_and_exits_zero(gpu_check, capsys, monkeypatch):
    def never(_args):
        raise AssertionError("a check ran without CUDA")

    monkeypatch.setattr(gpu_check, "FUNCTIONS", dict.fromkeys(gpu_check.CHECKS, never))
    assert gpu_check.main([], cuda_available=lambda: False) == 0
    assert "no CUDA device" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv", [["--only", "nothing"], ["--batch", "1"], ["--steps", "0"], ["--unknown"]]
)
def test_bad_arguments_exit_with_status_2(gpu_check, argv, capsys):
    with pytest.raises(SystemExit) as raised:
        gpu_check.parse_args(argv)
    assert raised.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_a_failing_check_is_a_row_and_the_others_still_run(gpu_check, capsys, monkeypatch):
    ran = []

    def passing(name):
        def check(_args):
            ran.append(name)
            return [gpu_check.Row(name, True, 0.5, "fine")]

        return check

    def failing(_args):
        ran.append("dopri5")
        raise RuntimeError("max error 0.1 against e^c x0\nsecond line")

    functions = {name: passing(name) for name in gpu_check.CHECKS}
    functions["dopri5"] = failing
    monkeypatch.setattr(gpu_check, "FUNCTIONS", functions)
    assert gpu_check.main([], cuda_available=lambda: True) == 1
    assert ran == list(gpu_check.CHECKS)
    out = capsys.readouterr().out
    assert "| dopri5 | FAIL | " in out
    assert "RuntimeError: max error 0.1 against e^c x0 |" in out
    assert "second line" not in out


def test_only_runs_the_named_checks_and_passes(gpu_check, monkeypatch, capsys):
    ran = []

    def check(_args, name="x"):
        ran.append(name)
        return [gpu_check.Row(name, True, 1.0, "fine")]

    monkeypatch.setattr(
        gpu_check,
        "FUNCTIONS",
        {name: (lambda args, name=name: check(args, name)) for name in gpu_check.CHECKS},
    )
    assert gpu_check.main(["--only", "sinkhorn", "compile"], cuda_available=lambda: True) == 0
    assert ran == ["sinkhorn", "compile"]


def test_table_and_exit_code(gpu_check):
    rows = [
        gpu_check.Row("couplers: exact", True, 1.234, "step 10.0 ms"),
        gpu_check.Row("resume", False, 0.0, "RuntimeError: 3 of 60 logged losses differ"),
    ]
    assert gpu_check.format_table(rows).splitlines() == [
        "| check | status | seconds | detail |",
        "|---|---|---:|---|",
        "| couplers: exact | ok | 1.2 | step 10.0 ms |",
        "| resume | FAIL | 0.0 | RuntimeError: 3 of 60 logged losses differ |",
    ]
    assert gpu_check.exit_code(rows) == 1
    assert gpu_check.exit_code(rows[:1]) == 0
    assert gpu_check.exit_code([]) == 1

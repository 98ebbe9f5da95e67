"""The GPU check: without CUDA it says so and fails; ``--device cpu`` rehearses every row, and
each row fails when the subject it checks is broken (a fault planted here)."""

from __future__ import annotations

import pytest
import torch

REHEARSAL = ["--device", "cpu", "--steps", "2", "--compile-backend", "aot_eager"]


def test_without_cuda_it_says_so_and_fails(gpu_check, capsys, monkeypatch):
    def never(_args):
        raise AssertionError("a check ran without CUDA")

    monkeypatch.setattr(gpu_check, "FUNCTIONS", dict.fromkeys(gpu_check.CHECKS, never))
    assert gpu_check.main([], cuda_available=lambda: False) == 2
    err = capsys.readouterr().err
    assert "no CUDA device here, so nothing was checked" in err and "--device cpu" in err


@pytest.mark.parametrize(
    "argv", [["--only", "nothing"], ["--steps", "1"], ["--device", "tpu"], ["--unknown"]]
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
    assert gpu_check.main(["--device", "cpu"]) == 1
    assert ran == list(gpu_check.CHECKS)
    out = capsys.readouterr().out
    assert "| dopri5 | FAIL | " in out
    assert "RuntimeError: max error 0.1 against e^c x0 |" in out
    assert "second line" not in out


def test_table_and_exit_code(gpu_check):
    rows = [
        gpu_check.Row("compile", True, 1.234, "outputs within 1e-06"),
        gpu_check.Row("resume", False, 0.0, "RuntimeError: 3 of 60 logged losses differ"),
    ]
    assert gpu_check.format_table(rows).splitlines() == [
        "| check | status | seconds | detail |",
        "|---|---|---:|---|",
        "| compile | ok | 1.2 | outputs within 1e-06 |",
        "| resume | FAIL | 0.0 | RuntimeError: 3 of 60 logged losses differ |",
    ]
    assert gpu_check.exit_code(rows) == 1
    assert gpu_check.exit_code(rows[:1]) == 0
    assert gpu_check.exit_code([]) == 1


def test_the_cpu_rehearsal_of_every_row_passes(gpu_check, capsys):
    assert gpu_check.main(REHEARSAL) == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    for check in gpu_check.CHECKS:
        assert f"| {check}" in out
    assert "| FAIL |" not in out
    assert "shares of 128 pairs form a permutation equal to a one-process solve" in out
    assert "losses equal after killing rank 1 of 2" in out


def _fails(gpu_check, check, *args, **kwargs) -> str:
    """The detail of the failed row of ``check`` run with a planted fault."""
    rows = gpu_check.run_check(check, lambda: gpu_check.FUNCTIONS[check](*args, **kwargs))
    assert gpu_check.exit_code(rows) == 1, gpu_check.format_table(rows)
    return rows[0].detail


def test_compile_fails_when_the_compiled_model_is_perturbed(gpu_check):
    args = gpu_check.parse_args(REHEARSAL)

    class Perturbed(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x, t):
            return self.inner(x, t) * 1.001

    detail = _fails(gpu_check, "compile", args, compile_fn=Perturbed)
    assert "compiled differs from eager" in detail


def test_bf16_fails_when_the_bf16_path_diverges(gpu_check):
    from mfm_core.runner.training.objective import regression_loss

    args = gpu_check.parse_args(REHEARSAL)

    def diverging(path, model, x0, x1, t, cond, dtype):
        loss = regression_loss(path, model, x0, x1, t, cond, dtype)
        return loss * 1.5 if dtype is not None else loss

    assert "bf16 losses leave fp32's" in _fails(gpu_check, "bf16", args, loss_fn=diverging)


def test_resume_fails_when_the_resume_skips_a_draw(gpu_check, monkeypatch):
    from mfm_core.runner.training.loop import Trainer

    load_state = Trainer.load_state

    def skipping(self, state):
        load_state(self, state)
        torch.rand(1)  # one draw of the global generator (dropout's) more than the whole run

    monkeypatch.setattr(Trainer, "load_state", skipping)
    args = gpu_check.parse_args(REHEARSAL)
    assert "logged losses differ after a resume" in _fails(gpu_check, "resume", args)


def test_global_fails_when_a_rank_takes_the_wrong_share(gpu_check):
    args = gpu_check.parse_args(REHEARSAL)
    assert "torchrun exited" in _fails(gpu_check, "global", args, fault="wrong-share")

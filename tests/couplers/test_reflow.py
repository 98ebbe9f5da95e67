"""The reflow coupler: pairs each noise sample with the teacher run's ODE solution."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mfm_core import create
from mfm_core.errors import ConfigError
from mfm_core.metrics.w2 import w2_distance
from mfm_core.registry import get_registry
from mfm_core.runner.assembly.loading import load_run, load_teacher
from mfm_core.runner.evaluation.sampling import generate
from mfm_core.runner.run import resume_run, start_run
from mfm_core.runner.rundir.layout import read_log
from mfm_core.testing import check_coupler

# A teacher trained with independent pairs: its flow is curved, so one Euler step is poor.
TEACHER = """
[data]
source = { name = "gaussian", shape = [2] }
target = "checkerboard"

[coupler]
name = "independent"

[model]
name = "mlp"
hidden = [64, 64]

[solver]
name = "euler"
steps = 8

[train]
steps = 300
batch_size = 128
lr = 3e-3
seed = 0
device = "cpu"
checkpoint_every = 100
keep_checkpoints = 1
ema = 0.9

[eval]
num_samples = 64
loss_batches = 1
trajectories = 0
save_samples = false
solvers = [{ name = "euler", steps = 1 }]
"""

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("teacher")
    config = root / "teacher.toml"
    config.write_text(TEACHER)
    return start_run(config, [], root / "runs", progress=False)


def _create(**params) -> object:
    """Build reflow as the runner does: the runner provides the teacher loader."""
    return get_registry().create(
        "coupler", "reflow", params, path="$.coupler", provided={"load_teacher": load_teacher}
    )


def _noise(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def _euler_by_hand(model: torch.nn.Module, x: torch.Tensor, steps: int) -> torch.Tensor:
    """``x <- x + h v(x, n h)`` for n = 0 .. steps - 1, h = 1 / steps."""
    for n in range(steps):
        x = x + model(x, torch.full((len(x),), n / steps)) / steps
    return x


@torch.no_grad()
def _rk4_by_hand(model: torch.nn.Module, x: torch.Tensor, steps: int) -> torch.Tensor:
    """The classic fourth-order Runge-Kutta step, written out."""
    h = 1.0 / steps

    def v(y: torch.Tensor, t: float) -> torch.Tensor:
        return model(y, torch.full((len(y),), t))

    for n in range(steps):
        t = n * h
        k1 = v(x, t)
        k2 = v(x + h / 2 * k1, t + h / 2)
        k3 = v(x + h / 2 * k2, t + h / 2)
        k4 = v(x + h * k3, t + h)
        x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return x


def test_pairs_are_the_noise_and_the_teachers_solution(teacher: Path) -> None:
    # The expected pairs come from the teacher's network integrated by hand, not through the
    # project's generate() and solvers.
    coupler = _create(run=str(teacher))
    x0, x1 = _noise(32), _noise(32, seed=1)
    coupling = coupler(x0, x1)
    paired_x0, paired_x1, paired_cond = coupling.pairs(x0, x1)

    model = load_run(teacher, device=CPU).model.eval()
    expected = _euler_by_hand(model, x0, 8)
    assert torch.equal(paired_x0, x0) and paired_cond is None
    torch.testing.assert_close(paired_x1, expected)
    assert not torch.allclose(paired_x1, x1)  # the drawn data are not used
    assert coupling.is_permutation
    assert coupling.cost == pytest.approx((expected - x0).pow(2).sum(1).mean().item(), rel=1e-5)

    other = _create(run=str(teacher), solver={"name": "rk4", "steps": 2})
    _, rk4_x1, _ = other(x0, x1).pairs(x0, x1)
    torch.testing.assert_close(rk4_x1, _rk4_by_hand(model, x0, 2))


def test_reflow_conforms_and_leaves_the_global_rng_alone(teacher: Path) -> None:
    coupler = _create(run=str(teacher))
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    coupler(_noise(4), _noise(4))  # loads the teacher, whose building seeds the global RNG
    assert torch.equal(torch.rand(3), expected)
    check_coupler(coupler, shapes=((2,),))


def test_a_batch_of_another_shape_is_an_error(teacher: Path) -> None:
    coupler = _create(run=str(teacher))
    with pytest.raises(ValueError, match=r"generates samples of shape \(2,\), .* \(3,\)"):
        coupler(torch.randn(4, 3), torch.randn(4, 3))


def test_reflow_needs_the_runners_loader_and_does_not_import_the_runner(teacher: Path) -> None:
    with pytest.raises(ConfigError, match=r"^\$\.coupler\.load_teacher: reflow reads its teacher"):
        get_registry().create("coupler", "reflow", {"run": str(teacher)}, path="$.coupler")
    with pytest.raises(ConfigError, match=r"^\$\.coupler\.load_teacher: set by mfm"):
        _create(run=str(teacher), load_teacher="x")
    imported = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, mfm_core.couplers.reflow; "
            "print([m for m in sys.modules if m.startswith('mfm_core.runner')])",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert imported.stdout.strip() == "[]"


def test_config_errors_name_the_key(teacher: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^\$\.coupler\.run: .*nowhere' does not exist"):
        _create(run=str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match=r"^\$\.coupler\.run: .* holds no config.toml"):
        _create(run=str(tmp_path))
    untrained = tmp_path / "untrained"
    untrained.mkdir()
    shutil.copy(teacher / "config.toml", untrained / "config.toml")
    with pytest.raises(ConfigError, match=r"^\$\.coupler\.run: .* holds no checkpoint"):
        _create(run=str(untrained))
    with pytest.raises(ConfigError, match=r"^\$\.coupler\.run: required key is missing"):
        _create()
    with pytest.raises(ConfigError, match=r"^\$\.coupler\.solver: steps must be a positive"):
        _create(run=str(teacher), solver={"name": "euler", "steps": 0})
    with pytest.raises(ConfigError, match=r"^\$\.coupler\.solver\.name: unknown solver 'eulr'"):
        _create(run=str(teacher), solver="eulr")
    with pytest.raises(ConfigError, match=r"^\$\.coupler\.solver\.stepz: unknown key"):
        _create(run=str(teacher), solver={"name": "euler", "stepz": 2})
    with pytest.raises(ConfigError, match=r"^\$\.coupler\.solver: expected a component name"):
        _create(run=str(teacher), solver=3)


def test_a_run_configured_with_reflow_trains(teacher: Path, tmp_path: Path) -> None:
    config = tmp_path / "student.toml"
    student = TEACHER.replace('name = "independent"', f'name = "reflow"\nrun = "{teacher}"')
    config.write_text(student)
    run_dir = start_run(config, ["train.steps=2"], tmp_path / "runs", progress=False)
    losses = [record["loss"] for record in read_log(run_dir)]
    assert len(losses) == 2 and all(math.isfinite(loss) for loss in losses)


def test_a_resumed_reflow_run_repeats_its_losses(teacher: Path, tmp_path: Path) -> None:
    config = tmp_path / "student.toml"
    config.write_text(TEACHER)
    overrides = [
        "coupler.name=reflow",
        f"coupler.run={teacher}",
        'coupler.solver={ name = "euler", steps = 4 }',
        "train.checkpoint_every=3",
        "train.batch_size=32",
    ]
    whole = start_run(config, [*overrides, "train.steps=6"], tmp_path / "a", progress=False)
    part = start_run(config, [*overrides, "train.steps=3"], tmp_path / "b", progress=False)
    resume_run(part, ["train.steps=6"], progress=False)
    assert [r["loss"] for r in read_log(part)] == [r["loss"] for r in read_log(whole)]


def test_reflow_straightens_the_flow(teacher: Path, tmp_path: Path) -> None:
    """A student trained on the teacher's pairs gets closer to the teacher's samples in one
    Euler step than the teacher itself does."""
    config = tmp_path / "student.toml"
    config.write_text(TEACHER)
    overrides = ["coupler.name=reflow", f"coupler.run={teacher}", "train.steps=200"]
    student_dir = start_run(config, overrides, tmp_path / "runs", progress=False)

    teacher_model = load_run(teacher, device=CPU).model
    student_model = load_run(student_dir, device=CPU).model
    noise = _noise(400, seed=5)
    accurate = generate(create("solver", "rk4", steps=16), teacher_model, noise, CPU).x1
    one_step = create("solver", "euler", steps=1)
    teacher_w2 = w2_distance(generate(one_step, teacher_model, noise, CPU).x1, accurate)
    student_w2 = w2_distance(generate(one_step, student_model, noise, CPU).x1, accurate)
    assert student_w2 < 0.5 * teacher_w2, (student_w2, teacher_w2)

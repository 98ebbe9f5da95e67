"""Messages are one line, safe to follow and true: hostile input (deep nesting, huge numbers,
huge strings, a hostile checkpoint) gives one short ``error:`` line, never a traceback."""

from __future__ import annotations

import os
import shlex
import subprocess

import pytest
import torch

from mfm_core.cli import LONGEST_WORD, shorten
from mfm_core.errors import StoppedError
from mfm_core.runner.evaluation.report import next_steps
from mfm_core.runner.run import start_run
from tests.faults.helpers import one_error_line, subprocess_env


@pytest.mark.parametrize(
    "text",
    [
        "a=" + "[" * 5000 + "]" * 5000,
        "a=" + "{b=" * 3000 + "1" + "}" * 3000,
        ".".join(["a"] * 5000) + "=1",
        "[" + ".".join(["a"] * 40) + "]\nx=1",
    ],
    ids=["arrays", "inline-tables", "dotted-key", "table-header"],
)
def test_a_config_nested_thousands_deep_is_one_error_line(tmp_path, cli, text):
    path = tmp_path / "deep.toml"
    path.write_text(text + "\n")
    status, err = cli("validate", path)
    assert status == 2
    assert "nested" in one_error_line(err)


def test_an_override_nested_thousands_deep_is_one_error_line(fast_config, cli):
    for override in (".".join(["a"] * 5000) + "=1", "a=" + "[" * 5000 + "]" * 5000):
        status, err = cli("validate", fast_config, override)
        assert status == 2
        line = one_error_line(err)
        assert "deep" in line and len(line) < 400


@pytest.mark.parametrize(
    "override",
    [
        "train.seed=100000000000000000000",
        "train.seed=-9223372036854775809",
        "train.batch_size=100000000000000000000",
        "eval.num_samples=9223372036854775808",
        "model.hidden=[16, 100000000000000000000]",
    ],
)
def test_integers_beyond_int64_are_refused_at_validate(fast_config, cli, override):
    status, err = cli("validate", fast_config, override)
    assert status == 2
    assert "beyond the 64-bit integers" in one_error_line(err)


def test_the_largest_int64_is_still_accepted_where_it_makes_sense(fast_config, cli):
    status, _ = cli("validate", fast_config, f"train.seed={2**63 - 1}")
    assert status == 0


def test_a_model_too_large_to_allocate_says_how_much_memory(fast_config, cli):
    status, err = cli("validate", fast_config, "model.hidden=[100000000000]")
    assert status == 2
    line = one_error_line(err)
    assert "out of memory: an allocation of" in line and "TB failed" in line
    assert "bug" not in line


def test_a_hostile_checkpoint_is_one_line_without_torch_advice(fast_config, tmp_path, cli):
    run_dir = start_run(fast_config, ["train.steps=2"], tmp_path, progress=False)
    for path in (run_dir / "checkpoints").iterdir():
        torch.save({"step": 2, "model": os.system}, path)  # a global the safe loader refuses
    for command in (["sample", run_dir, "--num", "3", "--out", tmp_path / "s.npy"],
                    ["eval", run_dir], ["run", "--resume", run_dir]):  # fmt: skip
        status, err = cli(*command)
        assert status == 2, err
        line = one_error_line(err)
        assert "holds objects other than tensors" in line
        assert "weights_only" not in line and "will likely succeed" not in line


def test_a_ten_megabyte_path_gives_a_short_line(fast_config, cli):
    huge = "x" * 10_000_000
    for command in (["sample", huge, "--num", "1", "--out", "s.npy"], ["validate", huge],
                    ["validate", fast_config, f"coupler.name={huge}"], ["eval", huge]):  # fmt: skip
        status, err = cli(*command)
        assert status == 2
        assert len(one_error_line(err)) < 1000


def test_shorten_keeps_short_words_and_cuts_long_ones():
    assert shorten("a b " + "c" * LONGEST_WORD) == "a b " + "c" * LONGEST_WORD
    cut = shorten("see " + "d" * 5000 + " here")
    assert cut.startswith("see ddd") and cut.endswith("ddd here") and "[4840 characters]" in cut


def test_printed_commands_are_shell_quoted(tmp_path):
    run_dir = tmp_path / "x $(touch PWNED)"
    text = next_steps(run_dir, [])
    command = next(line for line in text.splitlines() if "mfm sample" in line)
    argv = shlex.split(command.partition("#")[0])
    assert argv[:3] == ["mfm", "sample", str(run_dir)]
    stopped = StoppedError("stopped").advising(["mfm-run", "--resume", str(run_dir)])
    assert shlex.split(str(stopped).partition("Continue with: ")[2])[2] == str(run_dir)


def test_the_suggested_commands_run_nothing_when_pasted(tmp_path):
    """Pasting the printed `next:` lines into a shell runs no command hidden in the path."""
    run_dir = tmp_path / "x $(touch PWNED)"
    lines = [line.partition("#")[0] for line in next_steps(run_dir, []).splitlines()[1:]]
    script = "\n".join(f"printf '%s\\n' {line.strip()}" for line in lines)
    subprocess.run(["sh", "-c", script], cwd=tmp_path, env=subprocess_env(), check=True,
                   capture_output=True)  # fmt: skip
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--num", str(2**62)], "--num must be in 2..10,000,000"),
        (["--num", str(10**23)], "--num must be in 2..10,000,000"),
        (["--num", "10", "--seed", str(2**70)], "--seed must be in"),
    ],
)
def test_fid_stats_counts_beyond_reason_are_refused_at_once(fast_config, tmp_path, cli, options,
                                                            expected):  # fmt: skip
    status, err = cli("fid-stats", fast_config, *options, "--features", "pixels",
                      "--out", tmp_path / "ref.npz")  # fmt: skip
    assert status == 2 and expected in one_error_line(err)
    assert not (tmp_path / "ref.npz").exists()

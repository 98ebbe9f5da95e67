"""A writer killed in the middle of a checkpoint leaves the previous one intact and loadable,
and no partial file that could be taken for a checkpoint."""

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from mfm_core.runner.rundir.checkpoint import (
    list_checkpoints,
    load_checkpoint,
    load_latest,
    save_checkpoint,
)

# The writer serialises the state, writes the first half of the bytes through the file
# handle it was given, flushes them to disk, says so on stdout and waits to be killed.
WRITER = textwrap.dedent(
    """
    import io, os, sys, time
    from pathlib import Path
    import torch
    from mfm_core.runner.rundir import checkpoint

    real_save = torch.save

    def half_save(obj, handle):
        data = io.BytesIO()
        real_save(obj, data)
        handle.write(data.getvalue()[: len(data.getvalue()) // 2])
        handle.flush()
        os.fsync(handle.fileno())
        print("written", flush=True)
        time.sleep(600)

    torch.save = half_save
    state = {"weights": torch.full((20000,), 2.0), "step": int(sys.argv[2]),
             "elapsed": 0.0, "world_size": 1, "model": {}, "ranks": []}
    checkpoint.save_checkpoint(Path(sys.argv[1]), int(sys.argv[2]), state, keep=5, owned=[])
    """
)


@pytest.mark.parametrize("step", [20, 10], ids=["next-step", "same-step"])
def test_a_writer_killed_mid_checkpoint_leaves_the_previous_one(tmp_path: Path, step: int):
    directory = tmp_path / "checkpoints"
    previous = {"weights": torch.full((20000,), 1.0), "step": 10, "elapsed": 0.0,
                "world_size": 1, "model": {}, "ranks": []}  # fmt: skip
    save_checkpoint(directory, 10, previous, keep=5, owned=[])
    before = (directory / "step-00000010.pt").read_bytes()
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(directory), str(step)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout.readline().strip() == "written"
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=60)
    assert writer.returncode == -signal.SIGKILL
    # The half-written bytes are on disk somewhere in the directory ...
    assert sum(p.stat().st_size for p in directory.iterdir()) > len(before) * 1.4
    # ... but not under a checkpoint's name, and the previous checkpoint is untouched.
    assert [s for s, _ in list_checkpoints(directory)] == [10]
    assert (directory / "step-00000010.pt").read_bytes() == before
    state, path, problems = load_latest(directory)
    assert path.name == "step-00000010.pt" and problems == []
    torch.testing.assert_close(state["weights"], previous["weights"])
    torch.testing.assert_close(load_checkpoint(path)["weights"], previous["weights"])

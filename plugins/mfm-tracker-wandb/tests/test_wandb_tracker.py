"""The tracker as mfm runs it, offline, read back from W&B's offline run files.

wandb 0.19+ writes the files from its Go core and no longer ships a Python reader; the files
are a W&B header and then records framed as in LevelDB's log (32 KiB blocks; each chunk a
CRC, a length and a type), each record one of W&B's own ``Record`` protobuf messages, which
is what :func:`records` decodes.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

pytest.importorskip("mfm_tracker_wandb", reason="pip install -e ./plugins/mfm-tracker-wandb")
pytest.importorskip("wandb")

from mfm_core.registry import using_registry  # noqa: E402
from mfm_core.runner.run import resume_run  # noqa: E402
from mfm_core.runner.rundir.layout import read_log  # noqa: E402
from wandb.proto import wandb_internal_pb2  # noqa: E402

import mfm_tracker_wandb.plugin  # noqa: E402
from mfm_tracker_wandb import RUN_FILE  # noqa: E402

HEADER = 7  # ":W&B", two magic bytes, a version byte
BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4

TRACKED = [
    'train.trackers=[{ name = "wandb", project = "tiny" }]',
    "eval.solvers=[{ name = 'euler', steps = 2 }]",
]


def records(path: Path) -> list[wandb_internal_pb2.Record]:
    data = path.read_bytes()
    assert data[:4] == b":W&B", path
    found, pending, offset = [], b"", HEADER
    while offset + 7 <= len(data):
        left = BLOCK - offset % BLOCK
        if left < 7:  # the rest of a block too short for a chunk header is padding
            offset += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[offset : offset + 7])
        if kind == 0 and length == 0:  # zeros after the last record
            break
        chunk = data[offset + 7 : offset + 7 + length]
        offset += 7 + length
        pending = chunk if kind in (FULL, FIRST) else pending + chunk
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            found.append(record)
    return found


def history(run_dir: Path) -> tuple[list[dict], list[wandb_internal_pb2.RunRecord]]:
    """Every history row of the run's offline files, oldest file first, and their runs."""
    rows, runs = [], []
    for path in sorted(run_dir.glob("wandb/session-*/wandb/offline-run-*/run-*.wandb")):
        for record in records(path):
            kind = record.WhichOneof("record_type")
            if kind == "history":
                rows.append(
                    {
                        item.key or "/".join(item.nested_key): json.loads(item.value_json)
                        for item in record.history.item
                    }
                )
            elif kind == "run":
                runs.append(record.run)
    return rows, runs


def test_a_run_and_its_resume_are_one_offline_wandb_run(mfm_train, mfm_registry, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    registry = mfm_registry(mfm_tracker_wandb.plugin)
    run = mfm_train(*TRACKED, steps=2, registry=registry)
    with using_registry(registry):
        resume_run(run.run_dir, ["train.steps=4"], progress=False)

    rows, runs = history(run.run_dir)
    run_id = json.loads((run.run_dir / RUN_FILE).read_text())["run_id"]
    assert len(runs) == 2 and {r.run_id for r in runs} == {run_id}
    assert {r.project for r in runs} == {"tiny"} and runs[0].display_name == run.run_dir.name

    losses = {row["step"]: row["train/loss"] for row in rows if "train/loss" in row}
    logged = read_log(run.run_dir)
    assert losses == pytest.approx({r["step"]: r["loss"] for r in logged}, rel=1e-6)
    assert [row["step"] for row in rows if "train/loss" in row] == [1, 2, 3, 4]
    metrics = json.loads((run.run_dir / "metrics.json").read_text())
    w2 = {row["step"]: row["eval/euler-2/w2"] for row in rows if "eval/euler-2/w2" in row}
    assert set(w2) == {2, 4} and w2[4] == pytest.approx(metrics["samples"][0]["w2"], rel=1e-6)
    # an image's row holds its description, one nested key each, and the file beside it
    samples = [row for row in rows if "pictures/samples/path" in row]
    assert [row["step"] for row in samples] == [2, 4]
    assert samples[-1]["pictures/samples/_type"] == "image-file"
    (picture,) = run.run_dir.glob(
        f"wandb/session-1/wandb/offline-run-*/files/{samples[-1]['pictures/samples/path']}"
    )
    assert picture.stat().st_size > 1000

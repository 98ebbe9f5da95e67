"""``mfm export``: a run's weights as one safetensors file to share, with the run's resolved
config, which weights they are and the run's provenance in its metadata."""

from __future__ import annotations

from pathlib import Path

from mfm_core.config import load_config, to_toml_dict
from mfm_core.errors import ConfigError
from mfm_core.runner.assembly.loading import checkpoint_state, eval_weights, weights_record
from mfm_core.runner.rundir.layout import CONFIG_FILE, existing_run_dir
from mfm_core.runner.rundir.provenance import read_provenance
from mfm_core.runner.rundir.weights_file import (
    SUFFIX,
    SharedWeights,
    is_weights_file,
    write_weights_file,
)


def export_run(
    run_dir: Path, out: Path, step: int | None = None, raw: bool = False
) -> SharedWeights:
    """Write the weights of ``run_dir``'s checkpoint of ``step`` (default: the newest that
    loads) to ``out``: the EMA weights when the run kept them, the trained ones with ``raw``.
    Returns what was written."""
    if not is_weights_file(out):
        raise ConfigError(f"--out {str(out)!r}: the weights file's name must end in {SUFFIX}")
    existing_run_dir(run_dir)
    config = load_config(run_dir / CONFIG_FILE)
    state = checkpoint_state(run_dir, step)
    if raw:
        weights, record = state["model"], {"kind": "raw", "step": int(state["step"])}
    else:
        weights, record = eval_weights(state), weights_record(state, config)
    shared = SharedWeights(
        weights=weights,
        config=to_toml_dict(config),
        record=record,
        provenance=read_provenance(run_dir),
    )
    write_weights_file(out, shared)
    return shared

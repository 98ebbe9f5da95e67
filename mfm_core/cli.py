"""The ``mfm`` and ``mfm-run`` commands.

Bad input is reported as one line naming what is wrong and where, with exit status 2; add
``--traceback`` (or set ``MFM_TRACEBACK=1``) to see the Python traceback as well.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import sys
import traceback
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from mfm_core.errors import MfmError

EXIT_USER_ERROR = 2
EXIT_BUG = 1


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


class _Stderr(logging.StreamHandler):
    """A handler writing to whatever ``sys.stderr`` is when a record arrives."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:  # StreamHandler.__init__ assigns one; unused
        pass


def _configure_logging() -> None:
    """The log records of mfm's modules go to stderr as plain lines, from the main process
    only; the other processes torchrun starts stay silent."""
    logger = logging.getLogger("mfm_core")
    if any(isinstance(h, (_Stderr, logging.NullHandler)) for h in logger.handlers):
        return
    logger.setLevel(logging.INFO)
    if _is_main_process():
        handler = _Stderr()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    else:
        logger.addHandler(logging.NullHandler())
        logger.propagate = False


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--traceback", action="store_true", help="show the Python traceback on errors"
    )


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "args",
        nargs="*",
        metavar="CONFIG.toml [KEY=VALUE ...]",
        help="the config file, then overrides such as train.steps=500 coupler.name=independent",
    )
    parser.add_argument(
        "--resume", type=Path, metavar="RUN_DIR", help="continue RUN_DIR from its checkpoint"
    )
    parser.add_argument(
        "--runs", type=Path, default=Path("runs"), help="where new run directories go (runs/)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_common(parser)


def _is_main_process() -> bool:
    """False in the processes torchrun starts besides rank 0: they do not report."""
    return os.environ.get("RANK", "0") == "0"


def _cmd_run(args: argparse.Namespace) -> int:
    from mfm_core.runner.run import resume_run, start_run

    if args.resume is not None:
        run_dir = resume_run(args.resume, args.args, progress=not args.quiet)
    else:
        if not args.args or "=" in args.args[0]:
            raise MfmError("give a config file first: mfm-run CONFIG.toml [KEY=VALUE ...]")
        config, *overrides = args.args
        run_dir = start_run(config, overrides, args.runs, progress=not args.quiet)
    if _is_main_process():
        _print_results(run_dir)
        print(f"done: {run_dir}")
    return 0


def _print_results(directory: Path, run_dir: Path | None = None) -> None:
    """The end of a run or an evaluation: the summary table, the pictures, what to run next."""
    from mfm_core.runner.evaluation import report
    from mfm_core.runner.rundir.layout import METRICS_FILE

    metrics = json.loads((directory / METRICS_FILE).read_text())
    pictures = [
        directory / name
        for name in ("samples.png", "trajectories.png", "loss.png", report.PLOT_FILE)
        if (directory / name).is_file()
    ]
    print(report.terminal_summary(metrics))
    print(report.next_steps(run_dir or directory, pictures))


def _cmd_plugins(args: argparse.Namespace) -> int:
    from mfm_core.introspect import component_info, format_info
    from mfm_core.registry import describe, get_registry

    registry = get_registry()
    entries = list(describe(registry))
    rows = [
        {
            "kind": e.kind,
            "name": e.name,
            "distribution": e.distribution,
            "version": e.version,
            "plugin": e.plugin,
        }
        for e in entries
    ]
    if args.params:
        for row, entry in zip(rows, entries, strict=True):
            info = component_info(entry).to_json()
            row.update(summary=info["summary"], parameters=info["parameters"])
    if args.json:
        print(json.dumps({"components": rows, "broken": registry.broken}, indent=2))
        return 0
    for row, entry in zip(rows, entries, strict=True):
        if args.params:
            print(format_info(component_info(entry)))
            continue
        origin = f"{row['distribution']} {row['version']}" if row["distribution"] else "(code)"
        print(f"{row['kind']:13} {row['name']:14} {origin}")
    for message in registry.broken.values():
        print(f"broken: {message}")
    if not args.params:
        print("(mfm plugins --params, or mfm describe KIND NAME, lists each one's parameters)")
    return 0


def _cmd_describe(args: argparse.Namespace) -> int:
    from mfm_core.introspect import component_info, format_info
    from mfm_core.registry import get_registry

    info = component_info(get_registry().get(args.kind, args.name))
    print(json.dumps(info.to_json(), indent=2) if args.json else format_info(info))
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from mfm_core.runner.assembly.validate import validate_config

    lines = validate_config(args.config, args.overrides)
    print(f"{args.config}: OK")
    for line in lines:
        print(f"  {line}")
    return 0


def _cmd_sample(args: argparse.Namespace) -> int:
    from mfm_core.runner.evaluation.sampling import sample_run

    overrides = list(args.overrides)
    if args.solver is not None:
        overrides.append(f"solver={args.solver}")
    result = sample_run(
        args.run_dir,
        overrides,
        args.num,
        args.out,
        args.seed,
        fmt=args.format,
        guidance=args.guidance,
        batch=args.batch,
        label=args.label,
    )
    print(f"wrote {args.num} samples to {result.path} (NFE {result.nfe})")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from mfm_core.runner.evaluation.reevaluate import eval_run

    evaluation = eval_run(args.run_dir, list(args.overrides), args.out)
    _print_results(evaluation.directory, args.run_dir)
    print(f"done: {evaluation.directory}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from mfm_core.runner.compare import TABLE_FILE, resume_compare, start_compare

    if args.resume is not None:
        if args.args:
            raise MfmError(
                "--resume continues a comparison as planned: give no config or overrides"
            )
        directory = resume_compare(args.resume, progress=not args.quiet)
    else:
        if not args.args or "=" in args.args[0]:
            raise MfmError(
                "give a config file first: mfm compare CONFIG.toml KEY=V1,V2[,...] [KEY=VALUE ...]"
            )
        config, *overrides = args.args
        directory = start_compare(Path(config), overrides, args.runs, progress=not args.quiet)
    print((directory / TABLE_FILE).read_text(), end="")
    print(f"done: {directory}")
    return 0


def _cmd_fid_stats(args: argparse.Namespace) -> int:
    from mfm_core.runner.evaluation.statistics import fid_statistics

    count = fid_statistics(
        args.config,
        list(args.overrides),
        args.out,
        num=args.num,
        features=args.features,
        batch=args.batch,
        seed=args.seed,
    )
    print(f"wrote {args.out}: mu and sigma of {count} samples")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mfm", description="Multisample Flow Matching: train, sample and inspect flows."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    parser.set_defaults(subparsers=sub)

    run = sub.add_parser("run", help="train a config, then sample and evaluate")
    _add_run_arguments(run)
    run.set_defaults(func=_cmd_run)

    plugins = sub.add_parser("plugins", help="list every registered component")
    plugins.add_argument("--json", action="store_true", help="machine-readable output")
    plugins.add_argument(
        "--params", action="store_true", help="each component's parameters, types and defaults"
    )
    _add_common(plugins)
    plugins.set_defaults(func=_cmd_plugins)

    describe = sub.add_parser(
        "describe", help="a component's parameters: type, default and what each one does"
    )
    describe.add_argument(
        "kind", help="coupler, path, vector_field, solver, dataset, metric, cost or feature_map"
    )
    describe.add_argument("name", help="the component's name, as in `mfm plugins`")
    describe.add_argument("--json", action="store_true", help="machine-readable output")
    _add_common(describe)
    describe.set_defaults(func=_cmd_describe)

    validate = sub.add_parser("validate", help="build every component, train nothing")
    validate.add_argument("config", type=Path)
    validate.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    _add_common(validate)
    validate.set_defaults(func=_cmd_validate)

    evaluate = sub.add_parser(
        "eval",
        help="evaluate a run's latest checkpoint again, into RUN/evals/NNNNN-eval (or --out): "
        "metrics.json, metrics.md, metrics.png",
    )
    evaluate.add_argument("run_dir", type=Path)
    evaluate.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help='e.g. \'eval.metrics=["w2", "straightness"]\' eval.num_samples=1000',
    )
    evaluate.add_argument(
        "--out", type=Path, help="a new or empty folder for the results (RUN/evals/NNNNN-eval)"
    )
    _add_common(evaluate)
    evaluate.set_defaults(func=_cmd_eval)

    compare = sub.add_parser(
        "compare", help="run a config once per value of swept keys and compare the runs"
    )
    compare.add_argument(
        "args",
        nargs="*",
        metavar="CONFIG.toml KEY=V1,V2 [KEY=VALUE ...]",
        help="the config, then overrides; a value list (commas outside brackets and quotes) "
        "is swept, e.g. coupler.name=independent,exact,sinkhorn,stable,heuristic",
    )
    compare.add_argument(
        "--resume", type=Path, metavar="COMPARE_DIR", help="continue an interrupted comparison"
    )
    compare.add_argument(
        "--runs", type=Path, default=Path("runs"), help="where the comparison goes (runs/)"
    )
    compare.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_common(compare)
    compare.set_defaults(func=_cmd_compare)

    stats = sub.add_parser(
        "fid-stats",
        help="write FID reference statistics (mu, sigma) of a config's target data set",
    )
    stats.add_argument("config", type=Path)
    stats.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. data.root=...")
    stats.add_argument("--out", type=Path, required=True, help="the .npz file to write")
    stats.add_argument(
        "--num", type=int, help="at most this many samples (default: the whole data set)"
    )
    stats.add_argument(
        "--features",
        metavar="SPEC",
        help="the feature map, a name or a TOML table (default: the config's fid features, "
        "else inception)",
    )
    stats.add_argument("--batch", type=int, default=500, help="samples per forward pass (500)")
    stats.add_argument("--seed", type=int, default=0, help="seed for a generated data set (0)")
    _add_common(stats)
    stats.set_defaults(func=_cmd_fid_stats)

    sample = sub.add_parser("sample", help="sample from a run's latest checkpoint")
    sample.add_argument("run_dir", type=Path)
    sample.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. solver.steps=4")
    sample.add_argument("--num", type=int, required=True, help="number of samples")
    sample.add_argument(
        "--out",
        type=Path,
        required=True,
        help="vectors: a .npy or .npz file; images: a directory of PNG files, or a .npz",
    )
    sample.add_argument(
        "--format",
        choices=("png", "npz"),
        help="images: PNG files (default) or one .npz with uint8 arr_0 (N, H, W, C)",
    )
    sample.add_argument(
        "--solver",
        metavar="SPEC",
        help="the solver: a name or a TOML table, e.g. euler or '{name=\"euler\", steps=4}'",
    )
    sample.add_argument(
        "--guidance", type=float, help="classifier-free guidance scale (default eval.guidance)"
    )
    sample.add_argument("--label", type=int, help="the class of every sample (default: uniform)")
    sample.add_argument(
        "--batch", type=int, help="samples per solve (default eval.batch_size, else 256 images)"
    )
    sample.add_argument("--seed", type=int, default=0, help="seed of the noise and labels (0)")
    _add_common(sample)
    sample.set_defaults(func=_cmd_sample)
    return parser


def _dispatch(argv: Sequence[str], parse: Callable[[Sequence[str]], argparse.Namespace]) -> int:
    traceback_wanted = "--traceback" in argv or os.environ.get("MFM_TRACEBACK") == "1"
    if not traceback_wanted:
        warnings.showwarning = _show_warning
    _configure_logging()
    rank = "" if _is_main_process() else f"[rank {os.environ['RANK']}] "
    try:
        args = parse(argv)
        return args.func(args)
    except MfmError as exc:
        if traceback_wanted:
            raise
        for line in _one_line(exc).splitlines() or [""]:
            print(f"error: {rank}{line}", file=sys.stderr)
        return EXIT_USER_ERROR
    except BrokenPipeError:  # `mfm plugins | head`: the reader left; stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:  # the file system said no: a full disk, no permission, ...
        if traceback_wanted:
            raise
        print(f"error: {rank}{_os_error(exc)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"error: {rank}interrupted", file=sys.stderr)
        return 130
    except Exception:
        traceback.print_exc()
        print(
            f"error: {rank}this is a bug in mfm (or in a plugin named in the traceback above); "
            "please report it to the mfm maintainers with the traceback and the command",
            file=sys.stderr,
        )
        return EXIT_BUG


def _one_line(exc: MfmError) -> str:
    """The message; an error re-raised from a DataLoader worker carries the worker's
    traceback in its text, of which the last line is the message itself."""
    text = str(exc)
    if "Original Traceback" in text:
        text = text.strip().splitlines()[-1].partition(": ")[2] or text
    return text


def _os_error(exc: OSError) -> str:
    where = f"{exc.filename}: " if exc.filename else ""
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return (
            f"{where}{reason}: the disk is full; free some space and run again (a training run "
            "continues from its last checkpoint with mfm-run --resume RUN_DIR)"
        )
    return f"{where}{reason}"


def _parse_command(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """Parse ``COMMAND ARGS``, letting options and overrides mix in any order
    (argparse cannot do that through subparsers, so the subcommand's parser does it)."""
    choices = parser.get_default("subparsers").choices
    if argv and argv[0] in choices:
        return choices[argv[0]].parse_intermixed_args(argv[1:])
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """``mfm COMMAND ...``"""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    return _dispatch(argv, lambda args: _parse_command(parser, args))


def run_main(argv: Sequence[str] | None = None) -> int:
    """``mfm-run ...``: the same as ``mfm run ...``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="mfm-run", description="Train, sample and evaluate.")
    _add_run_arguments(parser)
    parser.set_defaults(func=_cmd_run)
    return _dispatch(argv, parser.parse_intermixed_args)

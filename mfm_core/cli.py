"""The ``mfm`` and ``mfm-run`` commands.

Bad input is reported as one line naming what is wrong and where, with exit status 2; add
``--traceback`` (or set ``MFM_TRACEBACK=1``) to see the Python traceback as well.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
import traceback
import warnings
from collections.abc import Callable, Sequence
from typing import TextIO

from mfm_core.commands import (
    compare,
    describe,
    evaluate,
    export,
    fid_stats,
    plugins,
    run,
    sample,
    validate,
)
from mfm_core.commands.common import is_main_process
from mfm_core.errors import MfmError

EXIT_USER_ERROR = 2
EXIT_BUG = 1

COMMANDS = (run, plugins, describe, validate, evaluate, compare, fid_stats, sample, export)
"""The subcommands of ``mfm``, in the order of its help."""


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
    if is_main_process():
        handler = _Stderr()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    else:
        logger.addHandler(logging.NullHandler())
        logger.propagate = False


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mfm", description="Multisample Flow Matching: train, sample and inspect flows."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    parser.set_defaults(subparsers=sub)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def _dispatch(argv: Sequence[str], parse: Callable[[Sequence[str]], argparse.Namespace]) -> int:
    traceback_wanted = "--traceback" in argv or os.environ.get("MFM_TRACEBACK") == "1"
    if not traceback_wanted:
        warnings.showwarning = _show_warning
    _configure_logging()
    rank = "" if is_main_process() else f"[rank {os.environ['RANK']}] "
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
    run.add_arguments(parser)
    return _dispatch(argv, parser.parse_intermixed_args)

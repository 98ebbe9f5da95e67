"""The ``mfm`` and ``mfm-run`` commands.

Bad input is reported as one line naming what is wrong and where, with exit status 2; add
``--traceback`` (or set ``MFM_TRACEBACK=1``) to see the Python traceback as well.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import re
import signal
import sys
import threading
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TextIO

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
from mfm_core.errors import MfmError, Terminated

EXIT_USER_ERROR = 2
EXIT_BUG = 1

COMMANDS = (run, plugins, describe, validate, evaluate, compare, fid_stats, sample, export)
"""The subcommands of ``mfm``, in the order of its help."""


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
        with _sigterm_raises():
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
    except Terminated as exc:
        print(f"error: {rank}stopped by {signal.Signals(exc.signal_number).name}", file=sys.stderr)
        return 128 + exc.signal_number
    except KeyboardInterrupt:
        print(f"error: {rank}interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        memory = _out_of_memory(exc)
        if memory is not None:
            if traceback_wanted:
                traceback.print_exc()
            print(f"error: {rank}{memory}", file=sys.stderr)
            return EXIT_USER_ERROR
        traceback.print_exc()
        print(
            f"error: {rank}this is a bug in mfm (or in a plugin named in the traceback above); "
            "please report it to the mfm maintainers with the traceback and the command",
            file=sys.stderr,
        )
        return EXIT_BUG


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """SIGTERM raises :class:`Terminated` (as Ctrl-C raises KeyboardInterrupt), so a command
    cleans up what it was writing and says why it stopped; training catches both signals
    itself to stop after the current step."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(number: int, _frame: Any) -> None:
        raise Terminated(number)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


LONGEST_WORD = 200
"""Characters of one word (a path, a value) an error line quotes whole; longer ones are cut."""


def shorten(text: str) -> str:
    """``text`` with every run of non-space characters longer than :data:`LONGEST_WORD` cut
    to its start and end, saying how much was left out: a 10 MB path gives a short line."""

    def cut(match: re.Match[str]) -> str:
        word = match.group(0)
        return f"{word[:120]}...[{len(word) - 160} characters]...{word[-40:]}"

    return re.sub(rf"\S{{{LONGEST_WORD + 1},}}", cut, text)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {shorten(str(message))}", file=sys.stderr)


def _one_line(exc: MfmError) -> str:
    """The message; an error re-raised from a DataLoader worker carries the worker's
    traceback in its text, of which the last line is the message itself."""
    text = str(exc)
    if "Original Traceback" in text:
        text = text.strip().splitlines()[-1].partition(": ")[2] or text
    return shorten(text)


def _out_of_memory(exc: Exception) -> str | None:
    """What to say when an allocation failed (a size in the config too large for this
    machine), or ``None`` for any other error."""
    text = str(exc)
    # torch's allocators raise RuntimeError (CPU) or its subclass OutOfMemoryError (CUDA)
    if not isinstance(exc, MemoryError) and not (
        isinstance(exc, RuntimeError)
        and ("can't allocate memory" in text or "out of memory" in text)
    ):
        return None
    wanted = re.search(r"allocate (\d+) bytes", text) or re.search(
        r"allocate ([\d.]+ [KMGTP]i?B)", text
    )
    amount = ""
    if wanted is not None:
        value = wanted.group(1)
        amount = f" of {_bytes(int(value))}" if value.isdigit() else f" of {value}"
    return (
        f"out of memory: an allocation{amount} failed; make the sizes in the config smaller "
        "(train.batch_size, train.coupling_batch, eval.num_samples, eval.batch_size, the "
        "model's width) or use a machine with more memory"
    )


def _bytes(count: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if count < 1000 or unit == "TB":
            return f"{count:,} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} PB"


def _os_error(exc: OSError) -> str:
    where = f"{shorten(str(exc.filename))}: " if exc.filename else ""
    reason = shorten(exc.strerror or str(exc))
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

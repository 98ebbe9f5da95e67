"""Errors that mfm reports to users as one clear message (no traceback unless asked for)."""

from __future__ import annotations

import shlex


class MfmError(Exception):
    """Base class: the command line prints the message and exits non-zero."""


class ConfigError(MfmError):
    """A config file, a key, a type or a value is wrong; the message names the key path."""


class PluginError(MfmError):
    """A plugin could not be loaded, or two plugins register the same name."""


class UnknownComponentError(ConfigError):
    """No plugin registers a component of that kind and name."""


class CheckpointError(MfmError):
    """A checkpoint or run directory is missing or unreadable."""


class DataError(MfmError, ValueError):
    """A data file (an image, an array) is unreadable or holds values that cannot be used
    (a ValueError too, as data sets raise for bad input)."""


class SolverError(MfmError):
    """An ODE solver could not integrate the learned field."""


class DivergedError(MfmError):
    """Training stopped because a loss or a weight was not finite."""


class StoppedError(MfmError):
    """Training stopped on request (Ctrl-C, SIGTERM) after saving a checkpoint. ``reason``
    says what stopped it and what was saved; :meth:`advising` adds the command that continues
    it, which only the caller knows (a run, or the comparison it belongs to)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def advising(self, command: list[str]) -> StoppedError:
        """This stop, saying ``Continue with:`` and ``command``, shell-quoted."""
        stopped = StoppedError(self.reason)
        stopped.args = (f"{self.reason}. Continue with: {shlex.join(command)}",)
        return stopped


class Terminated(KeyboardInterrupt):
    """SIGTERM outside training: raised where the process is, like Ctrl-C, so that what a
    command was writing is cleaned up on the way out."""

    def __init__(self, signal_number: int) -> None:
        super().__init__(signal_number)
        self.signal_number = signal_number

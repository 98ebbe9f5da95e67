"""Errors that mfm reports to users as one clear message (no traceback unless asked for)."""

from __future__ import annotations


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

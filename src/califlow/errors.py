"""Exceptions with messages that name the culprit (file, frame or parameter)."""

from califlow.params import ConfigError

__all__ = ["CaliflowError", "InputError", "ConfigError", "OutOfSpaceError", "OutputPermissionError"]


class CaliflowError(Exception):
    """Base class of califlow's own errors."""


class InputError(CaliflowError, ValueError):
    """An input file, folder or sheet entry cannot be used as given.

    The message names the file (and the frame, where one is at fault) and says what to do.
    """


class OutOfSpaceError(CaliflowError, OSError):
    """An output did not fit on its disk.

    The message names the output, the bytes it needed (or had written when the disk filled)
    and the bytes that were free. Nothing half-written is left behind.
    """


class OutputPermissionError(CaliflowError, PermissionError):
    """An output cannot be written where it belongs (a read-only results folder).

    The message names the output and the folder; nothing half-written is left behind.
    """

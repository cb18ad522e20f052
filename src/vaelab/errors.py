"""Errors that stop a run before it starts, printed by Hydra as one message instead of a traceback."""

from hydra.errors import CompactHydraException


class VaelabError(CompactHydraException):
    """A problem the user can fix (a bad config value, missing data); the message says how."""


class ConfigError(VaelabError, ValueError):
    """A config value is out of range or unknown."""


class DataNotFoundError(VaelabError, FileNotFoundError):
    """A data set's files are missing and could not be downloaded."""


class DataFileError(VaelabError, ValueError):
    """A data set's file is there but unusable (truncated, empty, not the expected format, or disagreeing with
    its partner file); the message names the file and says how to get a good one."""


class DivergedError(VaelabError, FloatingPointError):
    """Training produced a non-finite loss or weights; the message says where and what to try."""

"""Errors that are the user's to fix, and how ``ns-train`` reports them: one ``gmnerf error: ...`` line, no traceback.

Every problem with a run's inputs (output folder, device, config.yml of another version, checkpoint, option range) is
a :class:`RunInputError` whose message says what to do; together with dataset problems (:class:`HumanDataError`) they
form :data:`USER_ERRORS`, which the trainer turns into a :class:`CleanExit`.
"""

from __future__ import annotations


class HumanDataError(ValueError):
    """A dataset file is missing, unreadable or inconsistent. The message names the file and what was expected."""


class RunInputError(ValueError):
    """A user-fixable problem with a run's inputs: checkpoint, output folder or config. The message says what to do."""


class ExistingRunError(RunInputError):
    """The output folder already holds a run with checkpoints."""


class IncompatibleConfigError(RunInputError):
    """A ``config.yml`` written by another gmnerf-ns version (other config format, renamed or removed class)."""


class UnsafeConfigError(RunInputError):
    """A ``config.yml`` naming something other than config classes, paths and plain values: loading it would run code."""


class DeviceError(RunInputError):
    """The device asked for with ``--machine.device-type`` is not available on this machine."""


class CleanExit(SystemExit):
    """Ends ``ns-train`` with one line naming the problem and exit status 1; ``error`` holds the original exception."""

    def __init__(self, error: BaseException):
        super().__init__(f"gmnerf error: {error}")
        self.error = error


USER_ERRORS = (HumanDataError, RunInputError)
"""Exceptions that are the user's to fix (bad data, wrong file): reported as one line, without a traceback."""

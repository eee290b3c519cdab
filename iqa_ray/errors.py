"""Exception types: driver-side configuration errors and per-row data errors."""

from __future__ import annotations

from iqa_ray.schema import ErrorCode


class IqaRayError(Exception):
    """Base class of every error raised on purpose by iqa_ray."""


class ConfigError(IqaRayError):
    """A configuration or contract problem found on the driver.

    The job fails fast, nothing is written.
    """


class RowError(IqaRayError):
    """A failure confined to one row: the stage records it in the row's error columns.

    Args:
        code: the stable error code stored in the ``error_code`` column.
        message: a human-readable explanation stored in ``error_message``.
    """

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = ErrorCode(code)
        self.message = message

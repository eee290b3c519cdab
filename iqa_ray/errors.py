"""Exception types: driver-side configuration errors and per-row data errors."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

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


def unknown_name(kind: str, name: str, known: Iterable[str]) -> ConfigError:
    """The error for a registry lookup that failed: a did-you-mean hint and the known names."""
    names = sorted(known)
    close = difflib.get_close_matches(name, names, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"unknown {kind} {name!r}{hint} (known: {names})")

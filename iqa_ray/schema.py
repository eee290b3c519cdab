"""Column names, error codes, the manifest schema and shared type aliases used at every stage
boundary."""

from __future__ import annotations

import enum
from typing import Any

import numpy as np
import pyarrow as pa

Batch = dict[str, np.ndarray]
JsonDict = dict[str, Any]


class ErrorCode(enum.StrEnum):
    """Stable per-row error codes written to the ``error_code`` column."""

    FETCH_FAILED = "fetch_failed"  # transient or unknown storage failure after retries
    NOT_FOUND = "not_found"  # the object does not exist (deleted between listing and reading)
    EMPTY_FILE = "empty_file"  # zero bytes
    DECODE_FAILED = "decode_failed"  # not an image, or an unreadable one
    TRUNCATED = "truncated"  # an image whose data ends early
    TOO_LARGE = "too_large"  # over the decompression-bomb pixel guard
    TOO_SMALL = "too_small"  # under the minimum side length
    DISTORT_FAILED = "distort_failed"  # a prior/distortion could not be made
    MODEL_ERROR = "model_error"  # the model failed on this row
    UNPARSABLE = "unparsable"  # model output could not be turned into a score


# Codes whose rows are recomputed by ``--retry-errors``: the input may be fine next time.
RETRYABLE_CODES: frozenset[str] = frozenset(
    {ErrorCode.FETCH_FAILED, ErrorCode.MODEL_ERROR}
)


class Col:
    """Column names shared across stages and the output table."""

    IMAGE_ID = "image_id"  # int64, stable hash of the URI
    URI = "uri"
    SOURCE = "source"  # shard or table URI of a sample (webdataset and parquet inputs)
    KEY = "key"  # sample key in its shard, row index in its table, or the id column's value
    METHOD = "method"
    SCORE = "score"
    STATUS = "status"  # "ok" (scored) or "error" (see error_code); the summary counts the same
    ERROR_CODE = "error_code"
    ERROR_MESSAGE = "error_message"
    ATTEMPT = "attempt"  # 0 for the first try of a row, +1 per --retry-errors run
    BYTES = "bytes"
    IMAGE = "image"  # decoded RGB uint8 HxWx3 query image
    WIDTH = "width"  # original size, before any resizing for the model
    HEIGHT = "height"


class Status(enum.StrEnum):
    """Values of the ``status`` column: a row either has a score or an error code."""

    OK = "ok"
    ERROR = "error"


def row_status(error_code: str | None) -> Status:
    """A row's status from its error code: the one rule the score table and run.json share."""
    return Status.ERROR if error_code else Status.OK


CARRY_PREFIX = "carry_"  # carried WebDataset members / Parquet columns: carry_<name>


def carry_column(name: str) -> str:
    """Output column of a carried member extension (``json``) or Parquet column (``caption``)."""
    return CARRY_PREFIX + name.lstrip(".").replace(".", "_")


def variant_column(variant: str) -> str:
    """Name of the batch column that carries the image of one variant (e.g. a degraded prior)."""
    return f"variant__{variant}"


# The manifest: one row per input image (stage boundary between listing and fetching).
MANIFEST_SCHEMA = pa.schema([(Col.IMAGE_ID, pa.int64()), (Col.URI, pa.string())])

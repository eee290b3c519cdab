"""Compare2Score anchor sets as data: the ``anchors.json`` record, its validation and its I/O.

An anchor set is a folder ``<uri>/`` holding ``anchors.json`` (written last, so its presence
means the set is whole) and the anchor images as ``images/<k>.<ext>``. All storage access goes
through ``iqa_ray.io``. Paper: arXiv 2405.19298 (anchor selection, section 3.3).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from iqa_ray import io
from iqa_ray.errors import ConfigError, RowError

SCHEMA_VERSION = 1
RECORD_NAME = "anchors.json"
_FILE_PATTERN = re.compile(r"images/(\d+)\.[A-Za-z0-9]{1,8}")
_ANTISYMMETRY_TOL = 1e-6  # P_a + P_a.T = 1 up to float rounding of averaged soft comparisons


@dataclass(frozen=True)
class Anchor:
    """One anchor image: where it came from, where its copy lives, and its labels if known.

    Attributes:
        id: stable identity of the source (the manifest image id of ``source_uri``).
        source_uri: the image the copy was taken from.
        file: the copy, relative to the set folder: ``images/<k>.<ext>``.
        sha256: hex digest of the copied bytes (checked on read; also the prompt cache key).
        mos, mos_std: the human label and its standard deviation, when the set came from labels.
        baseline_score: the baseline model score, when the set came from unlabelled data.
    """

    id: str
    source_uri: str
    file: str
    sha256: str
    mos: float | None = None
    mos_std: float | None = None
    baseline_score: float | None = None

    @property
    def key(self) -> str:
        """Image key for prompts: identical pixels in every actor and run (prefix caching)."""
        return f"anchor-{self.sha256[:16]}"


@dataclass(frozen=True)
class Calibration:
    """The model and the comparison prompt P_a was measured with."""

    model_id: str
    model_revision: str | None
    question: str
    answer_prefix: str
    words: tuple[str, ...]
    temperature: float
    layout: str | None = None  # the filled user-turn layout (None: the backend's placement)


@dataclass(frozen=True)
class AnchorSet:
    """Anchors ordered worst first (by MOS or baseline score); P_a[i, j] = P(i better than j).

    ``comparisons`` keeps the raw soft comparisons (anchor i first, j second; NaN diagonal) that
    P_a was averaged from, for audits; ``selection`` says how the anchors were chosen.
    """

    anchors: tuple[Anchor, ...]
    matrix: np.ndarray
    calibration: Calibration
    selection: dict[str, Any] = field(default_factory=dict)
    comparisons: np.ndarray | None = None


def anchor_file(k: int, source_uri: str) -> str:
    """Relative path of anchor ``k``'s copy, keeping the source's extension (``jpg`` if none)."""
    name = source_uri.rstrip("/").rsplit("/", 1)[-1]
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else "jpg"
    return f"images/{k}.{ext if re.fullmatch(r'[a-z0-9]{1,8}', ext) else 'jpg'}"


def sha256_hex(data: bytes) -> str:
    """Hex sha256 of bytes."""
    return hashlib.sha256(data).hexdigest()


def validate_anchor_set(anchor_set: AnchorSet) -> None:
    """Check shapes and probabilities: square P_a over the anchors, diagonal 0.5, antisymmetric.

    Raises:
        ConfigError: naming the first problem found.
    """
    n = len(anchor_set.anchors)
    if n < 2:
        raise ConfigError(f"an anchor set needs at least 2 anchors, got {n}")
    p_a = np.asarray(anchor_set.matrix, dtype=np.float64)
    if p_a.shape != (n, n):
        raise ConfigError(f"anchor matrix must be {n}x{n} for {n} anchors, got shape {p_a.shape}")
    if not np.all((p_a >= 0.0) & (p_a <= 1.0)):  # NaN fails both
        raise ConfigError("anchor matrix entries must be probabilities in [0, 1]")
    if not np.allclose(np.diag(p_a), 0.5, rtol=0, atol=1e-9):
        raise ConfigError("anchor matrix diagonal must be 0.5")
    worst = float(np.abs(p_a + p_a.T - 1.0).max())
    if worst > _ANTISYMMETRY_TOL:
        raise ConfigError(f"anchor matrix is not antisymmetric: max |P + P.T - 1| = {worst:.3g}")
    if anchor_set.comparisons is not None and np.shape(anchor_set.comparisons) != (n, n):
        raise ConfigError(f"comparisons must be {n}x{n}, got {np.shape(anchor_set.comparisons)}")
    for k, anchor in enumerate(anchor_set.anchors):
        match = _FILE_PATTERN.fullmatch(anchor.file)
        if match is None or int(match.group(1)) != k:
            raise ConfigError(f"anchor {k} file must be images/{k}.<ext>, got {anchor.file!r}")
        if not re.fullmatch(r"[0-9a-f]{64}", anchor.sha256):
            raise ConfigError(f"anchor {k} sha256 must be 64 hex digits")
    cal = anchor_set.calibration
    if not (math.isfinite(cal.temperature) and cal.temperature > 0):
        raise ConfigError(f"calibration temperature must be positive, got {cal.temperature}")


def to_record(anchor_set: AnchorSet) -> dict[str, Any]:
    """The JSON-ready ``anchors.json`` record (NaN written as null)."""
    comparisons = anchor_set.comparisons
    return {
        "schema_version": SCHEMA_VERSION,
        "anchors": [asdict(a) for a in anchor_set.anchors],
        "calibration": {**asdict(anchor_set.calibration),
                        "words": list(anchor_set.calibration.words)},
        "matrix": _nested(anchor_set.matrix),
        "comparisons": None if comparisons is None else _nested(comparisons),
        "selection": anchor_set.selection,
    }


def from_record(record: dict[str, Any]) -> AnchorSet:
    """Parse and validate an ``anchors.json`` record.

    Raises:
        ConfigError: another schema version, missing or unknown keys, or invalid values.
    """
    if not isinstance(record, dict) or record.get("schema_version") != SCHEMA_VERSION:
        found = record.get("schema_version") if isinstance(record, dict) else None
        raise ConfigError(f"anchor set schema_version {found!r} is not {SCHEMA_VERSION}")
    try:
        cal = dict(record["calibration"])
        comparisons = record.get("comparisons")
        anchor_set = AnchorSet(
            anchors=tuple(Anchor(**a) for a in record["anchors"]),
            matrix=np.asarray(record["matrix"], dtype=np.float64),
            calibration=Calibration(**{**cal, "words": tuple(cal["words"])}),
            selection=dict(record.get("selection") or {}),
            comparisons=None if comparisons is None else np.asarray(
                [[math.nan if v is None else v for v in row] for row in comparisons]
            ),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"malformed anchor set record: {type(exc).__name__}: {exc}") from exc
    validate_anchor_set(anchor_set)
    return anchor_set


def write_anchor_set(
    uri: str, anchor_set: AnchorSet, images: Sequence[bytes], storage_options: dict[str, Any] | None
) -> None:
    """Validate, write every image, then ``anchors.json`` last (its presence = complete set).

    Raises:
        ConfigError: invalid set, or image bytes that do not match the recorded sha256.
    """
    validate_anchor_set(anchor_set)
    if len(images) != len(anchor_set.anchors):
        raise ConfigError(f"{len(images)} images for {len(anchor_set.anchors)} anchors")
    for anchor, data in zip(anchor_set.anchors, images, strict=True):
        if sha256_hex(data) != anchor.sha256:
            raise ConfigError(f"bytes of {anchor.file} do not match its sha256")
    # Rewriting a set: an old record must not vouch for half-replaced images.
    io.delete(io.join(uri, RECORD_NAME), storage_options)
    for anchor, data in zip(anchor_set.anchors, images, strict=True):
        io.write_bytes_atomic(io.join(uri, anchor.file), data, storage_options)
    io.write_json_atomic(io.join(uri, RECORD_NAME), to_record(anchor_set), storage_options)


def read_anchor_set(uri: str, storage_options: dict[str, Any] | None) -> AnchorSet:
    """Read and validate the set at ``uri``, checking that every image is present.

    Raises:
        ConfigError: no ``anchors.json``, an invalid record, or a missing image.
    """
    try:
        record = io.read_json(io.join(uri, RECORD_NAME), storage_options)
    except FileNotFoundError:
        raise ConfigError(f"no anchor set at {uri!r} ({RECORD_NAME} missing): build it first "
                          "with jobs/build_anchors.py") from None
    anchor_set = from_record(record)
    # One listing instead of one request per image.
    suffixes = tuple({"." + a.file.rsplit(".", 1)[1] for a in anchor_set.anchors})
    try:
        found = io.list_files(io.join(uri, "images"), storage_options, suffixes)
    except ConfigError:  # no images folder at all
        found = []
    names = {f.rsplit("/", 1)[-1] for f in found}
    missing = [a.file for a in anchor_set.anchors if a.file.split("/", 1)[1] not in names]
    if missing:
        raise ConfigError(f"anchor set {uri!r} lacks images {missing}")
    return anchor_set


def read_anchor_images(
    uri: str, anchor_set: AnchorSet, storage_options: dict[str, Any] | None
) -> list[bytes]:
    """The anchor images' bytes, in anchor order, each checked against its sha256.

    Raises:
        ConfigError: an image is missing or was changed after the set was written.
    """
    out = []
    for anchor in anchor_set.anchors:
        try:
            data = io.read_bytes(io.join(uri, anchor.file), storage_options)
        except RowError as exc:
            raise ConfigError(f"cannot read anchor image {anchor.file} of {uri!r}: {exc}") from exc
        if sha256_hex(data) != anchor.sha256:
            raise ConfigError(f"anchor image {anchor.file} of {uri!r} changed since it was written")
        out.append(data)
    return out


def _nested(matrix: np.ndarray) -> list[list[float | None]]:
    return [[None if math.isnan(v) else float(v) for v in row] for row in np.asarray(matrix)]

"""A unit of input listing: one piece of a source, turned into URIs by one task."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Unit:
    """One piece of a source, turned into rows by one task.

    Attributes:
        kind: "prefixes" (listed recursively), "uris" (already listed), "keyrange" (keys of
            an S3 folder in (after, upto], listed recursively) or "table" (a manifest file).
        items: the prefixes, URIs, folder or table file.
        key_range: (after, upto] of a "keyrange" unit.
        row_groups: Parquet slice [start, stop) of a "table" unit.
        csv_columns: names for a header-less CSV (S3 Inventory).
    """

    kind: str
    items: tuple[str, ...]
    key_range: tuple[str | None, str | None] | None = None
    row_groups: tuple[int, int] | None = None
    csv_columns: tuple[str, ...] | None = None

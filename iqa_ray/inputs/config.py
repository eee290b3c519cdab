"""The ``input:`` config section: a prefix to list, or manifest tables of URIs."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from iqa_ray.settings import StrictModel, check_storage_options


class InputConfig(StrictModel):
    """Where the images come from: a prefix to list, or a manifest table of URIs."""

    uri: str | None = Field(None, description="Folder or bucket prefix to list for images.")
    manifest: str | None = Field(
        None,
        description="Manifest instead of `uri`: a Parquet/CSV table with a URI column, a folder or "
        "glob of such shards, an S3 Inventory `manifest.json`, or tables with `bucket`+`key`.",
    )
    manifest_uri_column: str = Field("uri", description="Column of the manifest holding URIs.")
    extensions: tuple[str, ...] = Field(
        (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"),
        description="File extensions kept when listing a prefix (case-insensitive).",
    )
    storage_options: dict[str, Any] = Field(
        default_factory=dict,
        description="fsspec options without secrets, e.g. {client_kwargs: {endpoint_url: ...}}.",
    )
    limit: int | None = Field(
        None, ge=1,
        description="Score only the first N images (manifest order: by URI within each shard).",
    )
    shard_rows: int = Field(
        200_000, ge=1,
        description="Images per manifest shard written under the run folder "
        "(`manifest/part-*.parquet`).",
    )
    list_parallelism: int = Field(
        64, ge=1,
        description="Listing tasks wanted: the driver explores sub-prefixes (and key ranges of "
        "large S3 folders) until it has this many.",
    )

    _check_options = field_validator("storage_options")(check_storage_options)

    @model_validator(mode="after")
    def _one_source(self) -> InputConfig:
        if (self.uri is None) == (self.manifest is None):
            raise ValueError("set exactly one of input.uri (a prefix) or input.manifest (a table)")
        return self

    @property
    def wanted_suffixes(self) -> tuple[str, ...]:
        """The extensions, lower case, for case-insensitive suffix tests."""
        return tuple(e.lower() for e in self.extensions)

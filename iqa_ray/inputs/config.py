"""The ``input:`` config section: a prefix to list, manifest tables of URIs, or a corpus of
WebDataset shards or Parquet tables (``format``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from iqa_ray.settings import StrictModel, check_storage_options

# Keys that only mean something for one kind of input: setting one for another kind is an error.
_CORPUS_ONLY = ("paths", "carry", "split_bytes")
_PARQUET_ONLY = ("image_column", "id_column")
_OBJECTS_ONLY = ("manifest", "manifest_uri_column", "limit", "shard_rows", "list_parallelism")


class InputConfig(StrictModel):
    """Where the images come from: a prefix to list, a manifest table of URIs, or a corpus of
    WebDataset shards or Parquet tables holding the image bytes."""

    format: Literal["objects", "webdataset", "parquet"] = Field(
        "objects",
        description="`objects`: one image per object; `webdataset`: `.tar` shards of samples; "
        "`parquet`: tables with the encoded image in a column (see docs/corpora.md).",
    )
    uri: str | None = Field(
        None,
        description="Folder or bucket prefix to list for images (objects) or for shards / tables; "
        "for shards also a glob or a brace pattern (`s3://b/shards/{00000..00999}.tar`).",
    )
    paths: tuple[str, ...] | None = Field(
        None, description="webdataset/parquet: an explicit list of shard or table URIs."
    )
    manifest: str | None = Field(
        None,
        description="Manifest instead of `uri`: a Parquet/CSV table with a URI column, a folder or "
        "glob of such shards, an S3 Inventory `manifest.json`, or tables with `bucket`+`key`.",
    )
    manifest_uri_column: str = Field("uri", description="Column of the manifest holding URIs.")
    extensions: tuple[str, ...] = Field(
        (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"),
        description="File extensions kept when listing a prefix (case-insensitive); webdataset: "
        "a sample's image is its first member with one of these extensions.",
    )
    image_column: str = Field(
        "image",
        description="parquet: column with the encoded image (bytes, or a `{bytes, path}` struct).",
    )
    id_column: str | None = Field(
        None,
        description="parquet: column holding a stable sample id (`image_id` = hash of its text); "
        "default: the row index in its file.",
    )
    carry: tuple[str, ...] = Field(
        (),
        description="webdataset: member extensions (`json`, `txt`), parquet: columns, copied as "
        "text into the score rows as `carry_<name>`.",
    )
    split_bytes: int = Field(
        1 << 30, ge=1 << 16,
        description="webdataset/parquet: a shard or table larger than this is read as several "
        "units of about this size (byte ranges of a `.tar`, row groups of a table).",
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

    @field_validator("carry")
    @classmethod
    def _carry_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        names = tuple(v.strip().lstrip(".") for v in value)
        if any(not n for n in names) or len(set(names)) != len(names):
            raise ValueError("carry names must be non-empty and distinct")
        return names

    def _changed(self, keys: tuple[str, ...]) -> list[str]:
        """The keys holding other values than their defaults (dumped configs list every key)."""
        fields = type(self).model_fields
        return [k for k in keys if getattr(self, k) != fields[k].get_default(
            call_default_factory=True)]

    @model_validator(mode="after")
    def _one_source(self) -> InputConfig:
        if self.format == "objects":
            wrong = self._changed((*_CORPUS_ONLY, *_PARQUET_ONLY))
            if wrong:
                raise ValueError(f"input.{wrong[0]} applies to format webdataset or parquet, "
                                 "not objects (set input.format)")
            if (self.uri is None) == (self.manifest is None):
                raise ValueError(
                    "set exactly one of input.uri (a prefix) or input.manifest (a table)")
            return self
        wrong = self._changed(_OBJECTS_ONLY)
        if self.format == "webdataset":
            wrong += self._changed(_PARQUET_ONLY)
        if wrong:
            hint = {"limit": " (list fewer shards in input.paths instead)",
                    "manifest": " (list shards with input.uri or input.paths)"}
            raise ValueError(f"input.{wrong[0]} does not apply to format {self.format}"
                             f"{hint.get(wrong[0], '')}")
        if (self.uri is None) == (self.paths is None):
            raise ValueError(f"format {self.format}: set exactly one of input.uri (a prefix, glob "
                             "or brace pattern) or input.paths (a list of URIs)")
        if self.paths is not None and not self.paths:
            raise ValueError("input.paths is empty")
        return self

    @property
    def wanted_suffixes(self) -> tuple[str, ...]:
        """The extensions, lower case, for case-insensitive suffix tests."""
        return tuple(e.lower() for e in self.extensions)

    @property
    def is_corpus(self) -> bool:
        """True for inputs whose files hold many samples (webdataset shards, Parquet tables)."""
        return self.format != "objects"

    def result_fields(self) -> dict[str, Any]:
        """The input's part of the run fingerprint.

        Objects keep the 0.1/0.2 shape (location only: ``limit`` and ``extensions`` may change
        so that a run can grow), so existing runs keep their fingerprint and derived run id. A
        corpus adds what decides which bytes are a sample's image and what its id is.
        """
        fields = self.model_dump(include={"uri", "manifest", "manifest_uri_column"})
        if self.format == "objects":
            return fields
        fields.update(self.model_dump(include={"format", "paths"}))
        if self.format == "webdataset":
            fields["extensions"] = list(self.wanted_suffixes)
        else:
            fields.update(self.model_dump(include={"image_column", "id_column"}))
        return fields

"""The scoring job's one validated configuration tree (``RunConfig``): it composes each
component's own config section, looks methods up in the registry (the one place that does), and
fingerprints everything that changes scores."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationInfo, field_validator, model_validator

from iqa_ray.backends.config import ModelConfig
from iqa_ray.backends.family_options import result_options
from iqa_ray.errors import ConfigError
from iqa_ray.images import ImageConfig
from iqa_ray.inputs.config import InputConfig
from iqa_ray.io import RetryConfig
from iqa_ray.methods import get_method
from iqa_ray.settings import (
    StageResources,
    StrictModel,
    apply_overrides,
    canonical_json,
    check_storage_options,
    read_yaml_mapping,
    validate,
)

# Keys renamed in iqa_ray 0.2 (old dotted path -> new one): an old config gets a clear error.
RENAMED_KEYS: dict[str, str] = {
    "model.max_image_side": "image.max_side",
    "stages.model_batch_size": "model.batch_size",
    "stages.max_tokens_per_batch": "model.max_tokens_per_batch",
    "model.vllm_options": "model.options",
    "model.fake": "model.options",
}


class OutputConfig(StrictModel):
    """Where scores go: ``<uri>/runs/<run_id>/``."""

    uri: str = Field(..., description="Output folder or bucket prefix.")
    storage_options: dict[str, Any] = Field(
        default_factory=dict, description="fsspec options without secrets."
    )
    rows_per_file: int = Field(
        100_000, ge=1, description="Images per committed Parquet file (rows = images x methods)."
    )

    _check_options = field_validator("storage_options")(check_storage_options)


class MethodSpec(StrictModel):
    """One scoring method of the run, with its validated parameters."""

    method: str = Field(..., description="Registered method name (see `list_methods()`).")
    name: str = Field("", description="Label in the output `method` column (default: method).")
    params: dict[str, Any] = Field(
        default_factory=dict,
        validate_default=True,  # absent params still resolve to the method's defaults
        description="Method parameters (validated by the method).",
    )

    @model_validator(mode="before")
    @classmethod
    def _resolve(cls, data: Any) -> Any:
        if isinstance(data, str):
            data = {"method": data}
        if not isinstance(data, dict) or "method" not in data:
            return data
        get_method(data["method"])  # registry lookup once, at validation: a did-you-mean hint
        return {**data, "name": data.get("name") or data["method"]}

    @field_validator("params", mode="before")
    @classmethod
    def _validate_params(cls, value: Any, info: ValidationInfo) -> dict[str, Any]:
        # Validated here rather than in ``_resolve`` so errors read methods.N.params.<key>.
        if "method" not in info.data:  # already reported as a missing or invalid field
            return value
        return get_method(info.data["method"]).Params.model_validate(value or {}).model_dump()


class StagesConfig(StrictModel):
    """Resources per stage; none of these affect results (excluded from the fingerprint)."""

    fetch: StageResources = StageResources(batch_size=16, max_actors=4, num_cpus=0.5)
    decode: StageResources = StageResources(batch_size=8, max_actors=4, num_cpus=1.0)
    score: StageResources = StageResources(batch_size=8, min_actors=1, max_actors=1)
    model_pixels_on_decode: bool = Field(
        True,
        description="Run the model's image resize and crop on the CPU decode stage (only where "
        "its preprocessing splits exactly: same pixels as the processor); the score actor then "
        "only normalises on the device.",
    )


class RunConfig(StrictModel):
    """Root of the configuration: everything a scoring run needs."""

    run_id: str | None = Field(
        None, description="Run folder name; default derived from the fingerprint (same = resume)."
    )
    input: InputConfig
    output: OutputConfig
    model: ModelConfig = ModelConfig()
    methods: tuple[MethodSpec, ...] = Field(
        (MethodSpec(method="qalign_levels"),), description="Scoring methods run in one pass."
    )
    image: ImageConfig = ImageConfig()
    stages: StagesConfig = StagesConfig()
    retry: RetryConfig = RetryConfig()
    retry_errors: bool = Field(False, description="Recompute rows with retryable error codes.")
    fail_on_infra_errors: bool = Field(
        True, description="Exit non-zero when rows failed for infrastructure reasons."
    )

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        if isinstance(data, dict):
            check_renamed_keys(data)
        return data

    @field_validator("run_id")
    @classmethod
    def _run_id_safe(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", value):
            raise ValueError("run_id may hold letters, digits, '.', '_' and '-' only")
        return value

    @model_validator(mode="after")
    def _methods_unique(self) -> RunConfig:
        names = [m.name for m in self.methods]
        if not names:
            raise ValueError("at least one method is required")
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"method names must be unique, repeated: {duplicated}")
        return self

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
        """Load a YAML file, apply ``a.b.c=value`` overrides and validate."""
        return cls.from_dict(apply_overrides(read_yaml_mapping(path), overrides), str(path))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> RunConfig:
        """Validate a plain dict, turning pydantic errors into one readable ``ConfigError``."""
        check_renamed_keys(data, source)
        return validate(cls, data, source)

    def fingerprint(self) -> str:
        """sha256 of the canonical JSON of every result-affecting field."""
        return hashlib.sha256(canonical_json(self.result_fields()).encode()).hexdigest()

    def result_fields(self) -> dict[str, Any]:
        """Fields that change scores: inputs, model, methods with resolved prompts, image guards.

        The input's location is included (two corpora must not share a derived run id); its
        ``limit`` and ``extensions`` are not, so a run can grow from a sample to the whole set.
        The shape is that of iqa_ray 0.1 (the downscale listed under ``model``), so runs
        started before the 0.2 key renames keep their fingerprint and derived run id.
        """
        model = self.model.model_dump(include={"id", "revision", "backend", "dtype", "word_policy"})
        model["max_image_side"] = self.image.max_side
        if self.model.backend == "transformers" and self.model.options:
            # A native family's prompt options; absent when none differ from the defaults, so
            # earlier runs keep their fingerprint.
            options = result_options(self.model.options)
            if options:
                model["options"] = options
        return {
            "input": self.input.result_fields(),
            "model": model,
            "methods": [m.model_dump() for m in self.methods],
            "image": self.image.model_dump(include={"max_pixels", "min_side", "max_bytes"}),
        }

    def resolved_run_id(self) -> str:
        """The run id: explicit, or ``r-`` plus the first 12 hex digits of the fingerprint."""
        return self.run_id or f"r-{self.fingerprint()[:12]}"


def check_renamed_keys(data: dict[str, Any], source: str = "<dict>") -> None:
    """Raise one ``ConfigError`` naming every key of ``data`` that was renamed, with its new name.

    Raises:
        ConfigError: an old spelling is present.
    """
    found = []
    for old, new in RENAMED_KEYS.items():
        section, key = old.split(".", 1)
        node = data.get(section)
        if isinstance(node, dict) and key in node:
            found.append(f"  {old}: renamed to {new} in iqa_ray 0.2 (see README 'Configuration')")
    if found:
        raise ConfigError("\n".join([f"invalid configuration in {source}:", *found]))

"""The one validated configuration tree (``RunConfig``), YAML loading, overrides and fingerprint."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from iqa_ray.errors import ConfigError

# Keys that would put credentials into a config file: rejected, credentials come from the
# environment or the instance role.
_SECRET_KEY_PATTERN = re.compile(r"(secret|password|token|credential|(^|_)key(_id)?$)", re.I)
DEFAULT_MODEL_ID = "llava-hf/llava-interleave-qwen-0.5b-hf"


class StrictModel(BaseModel):
    """Base of every config model: unknown keys are errors and instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_storage_options(options: dict[str, Any]) -> dict[str, Any]:
    for key in _walk_keys(options):
        if _SECRET_KEY_PATTERN.search(key) and key not in {"anon"}:
            raise ValueError(
                f"storage option {key!r} looks like a credential: credentials come from the "
                "environment (AWS_ACCESS_KEY_ID, GOOGLE_APPLICATION_CREDENTIALS, ...) or the "
                "instance role, never from config files"
            )
    return options


def _walk_keys(value: Any) -> list[str]:
    if isinstance(value, dict):
        keys = [str(k) for k in value]
        for v in value.values():
            keys.extend(_walk_keys(v))
        return keys
    return []


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

    _check_options = field_validator("storage_options")(_check_storage_options)

    @model_validator(mode="after")
    def _one_source(self) -> InputConfig:
        if (self.uri is None) == (self.manifest is None):
            raise ValueError("set exactly one of input.uri (a prefix) or input.manifest (a table)")
        return self


class OutputConfig(StrictModel):
    """Where scores go: ``<uri>/runs/<run_id>/``."""

    uri: str = Field(..., description="Output folder or bucket prefix.")
    storage_options: dict[str, Any] = Field(
        default_factory=dict, description="fsspec options without secrets."
    )
    rows_per_file: int = Field(
        100_000, ge=1, description="Images per committed Parquet file (rows = images x methods)."
    )

    _check_options = field_validator("storage_options")(_check_storage_options)


class FakeOptions(StrictModel):
    """Failure injection for the fake backend (crash-and-resume tests); never result-affecting."""

    fail_after_batches: int | None = Field(None, ge=0, description="Fail after N batches.")
    fail_delay_s: float = Field(0.0, ge=0, description="Seconds to hang before failing.")
    fail_after_glob: str | None = Field(
        None, description="Local glob: fail only once a file matches (a committed score file); "
        "until then calls wait up to `fail_delay_s` and succeed."
    )
    delay_s: float = Field(0.0, ge=0, description="Seconds each model batch takes (a slow model).")
    crash_process_once_marker: str | None = Field(
        None,
        description="Marker file: the first actor to reach batch `crash_on_batch` creates it and "
        "kills its own process (os._exit); later lives see the marker and never crash.",
    )
    crash_on_batch: int = Field(1, ge=1, description="Model batch (1-based) the crash happens on.")


class ModelConfig(StrictModel):
    """The vision-language model every scoring method shares (loaded once per GPU actor)."""

    id: str = Field(DEFAULT_MODEL_ID, description="Hub id, local directory, or bucket prefix.")
    revision: str | None = Field(None, description="Hub revision (commit sha recommended).")
    backend: Literal["transformers", "fake", "vllm"] = Field(
        "transformers", description="`fake` is a deterministic stand-in for wiring tests only; "
        "`vllm` needs the `vllm` extra and a GPU (see README 'Performance')."
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="`auto`: bfloat16 on GPU, float32 on CPU."
    )
    attn_implementation: str | None = Field(
        None, description="e.g. `sdpa` or `flash_attention_2`; default: transformers' choice."
    )
    prefix_sharing: bool = Field(
        True,
        description="Compute prompt prefixes shared by several prompts (and repeated images) "
        "once per batch; same logits within float rounding. Model types not verified for it "
        "run unshared (logged once).",
    )
    vllm_options: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra keyword arguments for `vllm.LLM` (backend `vllm` only), e.g. "
        "{gpu_memory_utilization: 0.85, max_model_len: 4096}.",
    )
    max_image_side: int | None = Field(
        1024,
        ge=16,
        description="Longest side images are downscaled to on CPU before priors and the model "
        "(the processor resizes again to its input size; keep this >= it). None: full size.",
    )
    word_policy: Literal["single", "first"] = Field(
        "single",
        description="`single`: every word read must be one token (else error); `first`: read "
        "the first token of each word (Q-Align convention for multi-token words).",
    )
    storage_options: dict[str, Any] = Field(
        default_factory=dict, description="fsspec options when `id` is a bucket prefix."
    )
    cache_dir: str | None = Field(
        None, description="Node-local cache for weights copied from a bucket."
    )
    fake: FakeOptions = Field(
        default_factory=lambda: FakeOptions(), description="Fake-backend knobs (tests only)."
    )

    _check_options = field_validator("storage_options")(_check_storage_options)


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
        from iqa_ray.methods import get_method  # registry lookup once, at validation

        get_method(data["method"])  # fail early with a did-you-mean hint
        return {**data, "name": data.get("name") or data["method"]}

    @field_validator("params", mode="before")
    @classmethod
    def _validate_params(cls, value: Any, info: ValidationInfo) -> dict[str, Any]:
        # Validated here rather than in ``_resolve`` so errors read methods.N.params.<key>.
        from iqa_ray.methods import get_method

        if "method" not in info.data:  # already reported as a missing or invalid field
            return value
        return get_method(info.data["method"]).Params.model_validate(value or {}).model_dump()


class ImageConfig(StrictModel):
    """Decoding guards applied to every input image."""

    max_pixels: int = Field(
        100_000_000, ge=1, description="Images declaring more pixels are rejected (bomb guard)."
    )
    min_side: int = Field(8, ge=1, description="Images with a smaller side are rejected.")
    max_bytes: int = Field(
        200 * 1024 * 1024, ge=1, description="Objects larger than this are rejected unread."
    )


class StageResources(StrictModel):
    """Ray resources and batching of one pipeline stage."""

    batch_size: int = Field(16, ge=1, description="Rows per batch handed to the stage.")
    min_actors: int = Field(1, ge=1, description="Actor pool minimum (autoscaling pools).")
    max_actors: int = Field(2, ge=1, description="Actor pool maximum.")
    num_cpus: float = Field(1.0, ge=0, description="CPUs reserved per actor or task.")
    num_gpus: float = Field(0.0, ge=0, description="GPUs reserved per actor (score stage).")

    @model_validator(mode="after")
    def _sizes(self) -> StageResources:
        if self.max_actors < self.min_actors:
            raise ValueError("max_actors must be >= min_actors")
        return self


class StagesConfig(StrictModel):
    """Resources per stage; none of these affect results (excluded from the fingerprint)."""

    fetch: StageResources = StageResources(batch_size=16, max_actors=4, num_cpus=0.5)
    decode: StageResources = StageResources(batch_size=8, max_actors=4, num_cpus=1.0)
    score: StageResources = StageResources(batch_size=8, min_actors=1, max_actors=1)
    model_batch_size: int = Field(8, ge=1, description="Requests per forward pass.")
    max_tokens_per_batch: int | None = Field(
        None,
        ge=1,
        description="Cap on padded tokens (rows x longest row, cached prefix included) per "
        "forward pass, on top of `model_batch_size`; None: rows only.",
    )


class RetryConfig(StrictModel):
    """Bounded retries of storage reads."""

    attempts: int = Field(5, ge=1, description="Tries per object read.")
    base_delay_s: float = Field(0.2, ge=0, description="First backoff delay (doubles, jittered).")
    max_delay_s: float = Field(5.0, ge=0, description="Cap on one backoff delay.")


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
        text = Path(path).read_text()
        data = yaml.safe_load(text) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
        return cls.from_dict(apply_overrides(data, overrides), source=str(path))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> RunConfig:
        """Validate a plain dict, turning pydantic errors into one readable ``ConfigError``."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, source)) from None

    def fingerprint(self) -> str:
        """sha256 of the canonical JSON of every result-affecting field."""
        return hashlib.sha256(canonical_json(self.result_fields()).encode()).hexdigest()

    def result_fields(self) -> dict[str, Any]:
        """Fields that change scores: inputs, model, methods with resolved prompts, image guards.

        The input's location is included (two corpora must not share a derived run id); its
        ``limit`` and ``extensions`` are not, so a run can grow from a sample to the whole set.
        """
        model = self.model.model_dump(
            include={"id", "revision", "backend", "dtype", "max_image_side", "word_policy"}
        )
        return {
            "input": self.input.model_dump(include={"uri", "manifest", "manifest_uri_column"}),
            "model": model,
            "methods": [m.model_dump() for m in self.methods],
            "image": self.image.model_dump(),
        }

    def resolved_run_id(self) -> str:
        """The run id: explicit, or ``r-`` plus the first 12 hex digits of the fingerprint."""
        return self.run_id or f"r-{self.fingerprint()[:12]}"


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: equal configs give equal strings."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Return a copy of ``data`` with ``a.b.c=value`` overrides (values parsed as YAML)."""
    result = json.loads(json.dumps(data))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like a.b.c=value")
        dotted, raw = item.split("=", 1)
        keys = dotted.strip().split(".")
        if not all(keys):
            raise ConfigError(f"override {item!r} must look like a.b.c=value")
        node: Any = result
        for key in keys[:-1]:
            node = _child(node, key, item)
        if isinstance(node, list):
            node[_list_index(node, keys[-1], item)] = yaml.safe_load(raw)
        else:
            node[keys[-1]] = yaml.safe_load(raw)
    return result


def _child(node: Any, key: str, item: str) -> Any:
    """Step into ``node[key]`` of an override path (a dict or a list), creating missing mappings."""
    if isinstance(node, list):
        return node[_list_index(node, key, item)]
    child = node.setdefault(key, {})
    if not isinstance(child, (dict, list)):
        raise ConfigError(f"override {item!r}: {key!r} is not a mapping")
    return child


def _list_index(node: list[Any], key: str, item: str) -> int:
    """A list position in an override path (``methods.0.params.question=...``)."""
    if not key.isdigit() or int(key) >= len(node):
        raise ConfigError(f"override {item!r}: {key!r} is not an index of a {len(node)}-item list")
    return int(key)


def format_validation_error(exc: ValidationError, source: str) -> str:
    """One line per problem, with the dotted path, and a hint for unknown keys."""
    lines = [f"invalid configuration in {source}:"]
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "<root>"
        if err["type"] == "extra_forbidden":
            lines.append(f"  {where}: unknown key (check spelling; see README 'Configuration')")
        else:
            lines.append(f"  {where}: {err['msg']}")
    return "\n".join(lines)

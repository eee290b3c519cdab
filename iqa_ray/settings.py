"""Configuration building blocks shared by every component: the strict base model, YAML loading
with ``a.b.c=value`` overrides, readable validation errors, storage-option checks, canonical JSON
and the Ray resources of a stage. Each component owns its own config type built on these."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from iqa_ray.errors import ConfigError

# Keys that would put credentials into a config file: rejected, credentials come from the
# environment or the instance role.
_SECRET_KEY_PATTERN = re.compile(r"(secret|password|token|credential|(^|_)key(_id)?$)", re.I)
ModelT = TypeVar("ModelT", bound=BaseModel)


class StrictModel(BaseModel):
    """Base of every config model: unknown keys are errors and instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def check_storage_options(options: dict[str, Any]) -> dict[str, Any]:
    """Reject fsspec options that look like credentials (a field validator for every
    ``storage_options``): credentials come from the environment or the instance role."""
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


class StageResources(StrictModel):
    """Ray resources and batching of one pipeline stage (or training worker pool)."""

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


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: equal configs give equal strings."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """The top-level mapping of a YAML file (an empty file is an empty mapping).

    Raises:
        ConfigError: the top level is not a mapping.
    """
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return data


def validate(model: type[ModelT], data: dict[str, Any], source: str = "<dict>") -> ModelT:
    """Validate a plain dict, turning pydantic errors into one readable ``ConfigError``."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


def load_config(
    model: type[ModelT], path: str | Path | None, overrides: Sequence[str] = ()
) -> ModelT:
    """Validate a config from an optional YAML file plus ``a.b.c=value`` overrides.

    The one loader of every job's configuration (scoring, anchors, filter, evaluate, training).

    Raises:
        ConfigError: unreadable YAML, a non-mapping top level, or a validation error.
    """
    data = read_yaml_mapping(path) if path is not None else {}
    return validate(model, apply_overrides(data, overrides), str(path or "<flags>"))


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
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

"""Where a model's files come from: a hub id or local folder as is, a bucket prefix copied once
per node to a local cache."""

from __future__ import annotations

from typing import Any

from iqa_ray import io
from iqa_ray.backends.config import ModelConfig


def local_model_path(
    uri: str, storage_options: dict[str, Any], cache_dir: str | None, only: tuple[str, ...] = ()
) -> str:
    """A hub id or local folder as is; a bucket prefix copied once per node to a local cache
    (``only``: glob patterns of the files to copy, e.g. a processor's without the weights)."""
    if io.is_remote(uri):
        return io.local_model_cache(uri, storage_options, cache_dir, only)
    return uri.removeprefix("file://")


def resolve_model_source(cfg: ModelConfig) -> str:
    """Where ``from_pretrained`` loads ``cfg``'s model from (see :func:`local_model_path`)."""
    return local_model_path(cfg.id, cfg.storage_options, cfg.cache_dir)

"""What a checkpoint is: its ``model_type`` (read from ``config.json`` as data) and the native
family that loads it, if any (``iqa_ray.backends.families``)."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

# model_type -> package of a native family (iqa_ray.backends.families), loaded by its runtime.
NATIVE_FAMILIES: dict[str, str] = {
    "mplug_owl2": "iqa_ray.backends.families.mplug_owl2",
    "mplugowl3": "iqa_ray.backends.families.mplug_owl3",
}


def model_type(source: str, revision: str | None = None) -> str:
    """The ``model_type`` in a checkpoint's ``config.json`` (read as data: no class needed)."""
    from transformers import PretrainedConfig

    kwargs: dict[str, Any] = {"revision": revision} if revision else {}
    data, _ = PretrainedConfig.get_config_dict(source, **kwargs)
    return str(data.get("model_type", ""))


def family_runtime(kind: str) -> ModuleType | None:
    """The ``runtime`` module of the native family of ``model_type`` ``kind`` (imported by
    name, on demand), or None for checkpoints the generic classes load."""
    package = NATIVE_FAMILIES.get(kind)
    return importlib.import_module(f"{package}.runtime") if package is not None else None

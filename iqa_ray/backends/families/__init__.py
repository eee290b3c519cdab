"""Native model families: re-implementations, on transformers 5 building blocks, of published
checkpoints whose remote code no longer runs (``mplug_owl2``: Q-Align, Compare2Score and
DeQA-Score; ``mplug_owl3``: Q-Debias). Never executes remote code; ``auto_map`` is ignored.

Each family package holds its config, model and processor, and a ``runtime`` module that the
transformers backend loads by name for the checkpoint's ``model_type`` (the table is
``iqa_ray.backends.transformers.checkpoint.NATIVE_FAMILIES``). Importing this package pulls in
neither torch nor transformers.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` resolving ``exports`` (name -> submodule) on first use, so that
    importing a family package imports neither torch nor transformers."""

    def getattr_(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)

    return getattr_

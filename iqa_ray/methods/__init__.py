"""Scoring methods: one module (or sub-package) per method family, registered by name.

Importing this package registers every built-in method: ``levels`` (qalign_levels,
qbench_binary), ``q_debias``, ``compare2score`` (with its maths, anchor sets and anchor
building) and ``attiqa`` (clip_attributes, attiqa).
"""

from __future__ import annotations

from iqa_ray.methods import attiqa as _attiqa  # noqa: F401  (registers clip_attributes, attiqa)
from iqa_ray.methods import compare2score as _compare2score  # noqa: F401  (registers compare2score)
from iqa_ray.methods import levels as _levels  # noqa: F401  (registers the baseline methods)
from iqa_ray.methods import q_debias as _q_debias  # noqa: F401  (registers q_debias)
from iqa_ray.methods.base import (
    ImageBatch,
    MethodContext,
    MethodParams,
    MethodResult,
    ScoringMethod,
    VariantSpec,
    VlmMethod,
    method_context,
)
from iqa_ray.methods.registry import METHODS, get_method, list_methods, register_method

__all__ = [
    "METHODS",
    "ImageBatch",
    "MethodContext",
    "MethodParams",
    "MethodResult",
    "ScoringMethod",
    "VariantSpec",
    "VlmMethod",
    "get_method",
    "list_methods",
    "method_context",
    "register_method",
]

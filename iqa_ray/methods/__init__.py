"""Scoring methods; importing this package registers every built-in method."""

from __future__ import annotations

from iqa_ray.attiqa import methods as _attiqa  # noqa: F401  (registers clip_attributes, attiqa)
from iqa_ray.methods import compare2score as _compare2score  # noqa: F401  (registers compare2score)
from iqa_ray.methods import levels as _levels  # noqa: F401  (registers the baseline methods)
from iqa_ray.methods import q_debias as _q_debias  # noqa: F401  (registers q_debias)
from iqa_ray.methods.base import (
    METHODS,
    ImageBatch,
    MethodContext,
    MethodParams,
    MethodResult,
    ScoringMethod,
    VariantSpec,
    VlmMethod,
    get_method,
    list_methods,
    register_method,
)

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
    "register_method",
]

"""ATTIQA at scoring time (arXiv 2406.01020): CLIP attribute prompts and their maths
(``prompts``), the CLIP labeller (``clip``), the trained network (``network``) and the
``clip_attributes`` and ``attiqa`` methods (``methods``). Training lives in ``iqa_ray.attiqa``.

Importing this package registers both methods; torch and transformers load only when a method
sets up.
"""

from __future__ import annotations

from iqa_ray.methods.attiqa import methods as _methods  # noqa: F401  (registers both methods)
from iqa_ray.methods.attiqa.prompts import ATTRIBUTES, DEFAULT_PROMPTS, PromptPair

__all__ = ["ATTRIBUTES", "DEFAULT_PROMPTS", "PromptPair"]

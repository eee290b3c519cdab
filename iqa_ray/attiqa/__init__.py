"""ATTIQA (Kwon et al., ACCV 2024, arXiv 2406.01020): CLIP attribute pseudo-labels, prompt
selection, attribute-aware pretraining and fine-tuning on Ray Train, and a cheap scorer.

Modules: ``prompts`` (attributes, prompt pairs, the CLIP-IQA maths), ``clip_labels`` (a CLIP
model that scores prompt pairs), ``selection`` (ranking candidate pairs on a distortion proxy
set), ``data`` / ``network`` / ``losses`` / ``train`` (the IQA network and its training),
``methods`` (the ``clip_attributes`` and ``attiqa`` scoring methods). Importing this package
imports nothing heavy; torch and transformers load inside the functions that need them.
"""

from __future__ import annotations

from iqa_ray.methods.attiqa.prompts import ATTRIBUTES, DEFAULT_PROMPTS, PromptPair

__all__ = ["ATTRIBUTES", "DEFAULT_PROMPTS", "PromptPair"]

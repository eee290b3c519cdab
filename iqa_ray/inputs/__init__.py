"""Inputs: what to score. The ``input:`` config, stable image ids, listing prefixes and reading
manifest tables into units, the run's manifest shards, and the done set read back from
committed scores (resume)."""

from __future__ import annotations

from iqa_ray.inputs.config import InputConfig
from iqa_ray.inputs.ids import image_id

__all__ = ["InputConfig", "image_id"]

"""The Python API (:func:`score`) and the scoring job's driver that ``jobs/score.py``, the
``iqa-ray`` CLI and the API share (:mod:`iqa_ray.api.driver`)."""

from __future__ import annotations

from iqa_ray.api.driver import JobOutcome, execute, run_job
from iqa_ray.api.score import read_run, score, score_config

__all__ = ["JobOutcome", "execute", "read_run", "run_job", "score", "score_config"]

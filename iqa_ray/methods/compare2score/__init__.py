"""Compare2Score (arXiv 2405.19298): the method (``method``), its maths (``maths``: soft
comparison, MAP estimation), anchor sets as data (``anchor_set``: the record and its I/O;
``selection``: choosing anchors) and building an anchor set with the model (``build``).

Importing this package registers the ``compare2score`` method.
"""

from __future__ import annotations

from iqa_ray.methods.compare2score.method import ANSWER_PREFIX, QUESTION, WORDS, Compare2Score

__all__ = ["ANSWER_PREFIX", "QUESTION", "WORDS", "Compare2Score"]

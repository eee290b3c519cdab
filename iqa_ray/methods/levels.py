"""Baseline methods: level-token expectation (Q-Align rule) and binary good/poor (Q-Bench rule)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
from pydantic import Field, model_validator

from iqa_ray.backends.prompt import Prompt
from iqa_ray.methods.base import ImageBatch, MethodParams, VlmMethod
from iqa_ray.methods.registry import register_method
from iqa_ray.methods.rules import binary_probability, level_expectation, softmax

QUESTION = "How would you rate the quality of this image?"
ANSWER_PREFIX = "The quality of the image is"


class LevelParams(MethodParams):
    """Prompt and level words of the Q-Align rule."""

    question: str = Field(QUESTION, description="User turn shown after the image.")
    answer_prefix: str = Field(ANSWER_PREFIX, description="Pre-filled assistant text.")
    words: tuple[str, ...] = Field(
        ("excellent", "good", "fair", "poor", "bad"), description="Level words, best first."
    )
    weights: tuple[float, ...] = Field(
        (5.0, 4.0, 3.0, 2.0, 1.0), description="Value of each level word (same order)."
    )

    @model_validator(mode="after")
    def _same_length(self) -> LevelParams:
        # After all fields, so a default `weights` is checked against custom `words` too.
        if len(self.weights) != len(self.words):
            raise ValueError(f"{len(self.weights)} weights for {len(self.words)} words")
        return self


class OneImagePrompt(VlmMethod):
    """A method of one prompt per image: the image, ``params.question``, the pre-filled
    ``params.answer_prefix``, and ``params.words`` read at the next position."""

    def prompts(self, batch: ImageBatch, row: int) -> list[Prompt]:
        """One prompt: the image, the question, the pre-filled answer."""
        p: Any = self.params
        key = str(int(batch.image_ids[row]))
        return [Prompt((batch.query[row],), p.question, p.answer_prefix, p.words, (key,))]


@register_method("qalign_levels")
class QAlignLevels(OneImagePrompt):
    """Expected level from the softmax over the level words' logits (1 pass, 1 image).

    Paper: Wu et al., "Q-Align", arXiv 2312.17090; rule as in Q-Bench/Q-Align (github.com/
    Q-Future/Q-Align). Words are the tokens each level word starts with after a space,
    resolved from the loaded tokenizer. Deviation: none (prompts batched, no generation).
    """

    Params = LevelParams
    score_range: ClassVar[tuple[float, float]] = (1.0, 5.0)
    extra_columns: ClassVar[dict[str, pa.DataType]] = {"level_probs": pa.list_(pa.float64())}

    def reduce(self, logits: list[np.ndarray]) -> dict[str, Sequence[Any]]:
        """Score = probabilities of the levels dotted with their weights."""
        weights = np.asarray(self.params.weights)
        probs = softmax(logits[0])
        return {
            "score": level_expectation(logits[0], weights).tolist(),
            "level_probs": probs.tolist(),
        }


class BinaryParams(MethodParams):
    """Prompt, the positive/negative words and the temperature of the Q-Bench rule."""

    question: str = Field(QUESTION, description="User turn shown after the image.")
    answer_prefix: str = Field(ANSWER_PREFIX, description="Pre-filled assistant text.")
    words: tuple[str, str] = Field(("good", "poor"), description="Positive word, negative word.")
    temperature: float = Field(100.0, gt=0, description="Softmax temperature (100 in Q-Bench).")


@register_method("qbench_binary")
class QBenchBinary(OneImagePrompt):
    """P(good) = softmax([l_good, l_poor] / T)[0] (1 pass, 1 image), in 0..1.

    Paper: Wu et al., "Q-Bench", arXiv 2309.14181, A3 protocol (leaderboards/IQA_outputs in
    github.com/Q-Future/Q-Bench). Deviation: none.
    """

    Params = BinaryParams
    score_range: ClassVar[tuple[float, float]] = (0.0, 1.0)
    extra_columns: ClassVar[dict[str, pa.DataType]] = {"word_logits": pa.list_(pa.float64())}

    def reduce(self, logits: list[np.ndarray]) -> dict[str, Sequence[Any]]:
        """Score = binary softmax at the configured temperature; raw logits kept for audits."""
        return {
            "score": binary_probability(logits[0], self.params.temperature).tolist(),
            "word_logits": logits[0].tolist(),
        }

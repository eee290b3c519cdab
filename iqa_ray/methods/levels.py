"""Baseline methods: level-token expectation (Q-Align rule) and binary good/poor (Q-Bench rule)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, field_validator, model_validator

from iqa_ray.backends.prompt import Prompt
from iqa_ray.methods.base import ImageBatch, MethodContext, MethodParams, VlmMethod
from iqa_ray.methods.conventions import check_layout, resolve_layout
from iqa_ray.methods.registry import register_method
from iqa_ray.methods.rules import LEVEL_WEIGHTS_0_1, binary_probability, level_expectation, softmax

QUESTION = "How would you rate the quality of this image?"
ANSWER_PREFIX = "The quality of the image is"
LAYOUT_DESCRIPTION = (
    "User turn with one `{image}` and one `{question}` marker. Default: the model family's "
    "reference placement (mplug_owl2: Q-Align's `{question}\\n{image}\\n`), else the "
    "backend's (image, then question); `images_first`: always the backend's. An explicit "
    "`question` keeps the family's placement."
)


def _one_image_layout(layout: str | None) -> str | None:
    return check_layout(layout, 1)


class LevelParams(MethodParams):
    """Prompt, level words and level values of the Q-Align rule."""

    question: str = Field(QUESTION, description="User turn shown after the image.")
    answer_prefix: str = Field(ANSWER_PREFIX, description="Pre-filled assistant text.")
    layout: str | None = Field(None, description=LAYOUT_DESCRIPTION, exclude_if=lambda v: v is None)
    words: tuple[str, ...] = Field(
        ("excellent", "good", "fair", "poor", "bad"), description="Level words, best first."
    )
    scale: Literal["1-5", "0-1"] = Field(
        "1-5",
        description="`1-5`: weights [5,4,3,2,1] (Q-Align's model `score()`, DeQA-Score); `0-1`: "
        "[1,.75,.5,.25,0] (Q-Align's `scorer.py`). Sets `weights` unless they are given.",
        exclude_if=lambda v: v == "1-5",
    )
    weights: tuple[float, ...] = Field(
        (5.0, 4.0, 3.0, 2.0, 1.0), description="Value of each level word (same order)."
    )

    _check_layout = field_validator("layout")(_one_image_layout)

    @model_validator(mode="before")
    @classmethod
    def _scale_weights(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("scale") != "0-1":
            return data
        if "weights" not in data:
            return {**data, "weights": tuple(LEVEL_WEIGHTS_0_1)}
        if tuple(data["weights"]) != tuple(LEVEL_WEIGHTS_0_1):
            raise ValueError("scale '0-1' sets weights [1, .75, .5, .25, 0]; give one or the other")
        return data

    @model_validator(mode="after")
    def _same_length(self) -> LevelParams:
        # After all fields, so a default `weights` is checked against custom `words` too.
        if len(self.weights) != len(self.words):
            raise ValueError(f"{len(self.weights)} weights for {len(self.words)} words")
        return self


class OneImagePrompt(VlmMethod):
    """A method of one prompt per image: the image, ``params.question``, the pre-filled
    ``params.answer_prefix``, and ``params.words`` read at the next position; the image and the
    question are placed by ``params.layout`` or the model family's convention
    (:mod:`iqa_ray.methods.conventions`)."""

    _layout: str | None = None  # resolved for the backend's family by ``bind``

    def bind(self, batch: ImageBatch, ctx: MethodContext) -> None:
        """Resolve the prompt layout for the loaded model's family."""
        p: Any = self.params
        self._layout = resolve_layout(self.name, ctx.vlm.family, p.layout, p.question)

    def prompts(self, batch: ImageBatch, row: int) -> list[Prompt]:
        """One prompt: the image, the question, the pre-filled answer."""
        p: Any = self.params
        key = str(int(batch.image_ids[row]))
        return [Prompt((batch.query[row],), p.question, p.answer_prefix, p.words, (key,),
                       self._layout)]


@register_method("qalign_levels")
class QAlignLevels(OneImagePrompt):
    """Expected level from the softmax over the level words' logits (1 pass, 1 image).

    Paper: Wu et al., "Q-Align", arXiv 2312.17090; rule as in Q-Bench/Q-Align (github.com/
    Q-Future/Q-Align). Words are the tokens each level word starts with after a space,
    resolved from the loaded tokenizer. On an mPLUG-Owl2 checkpoint (one-align, DeQA-Score)
    the prompt is Q-Align's scorer prompt exactly (``layout``; question and answer prefix are
    the defaults). ``scale: 0-1`` gives Q-Align ``scorer.py``'s [1, .75, .5, .25, 0] weighting;
    the default 1..5 is the model ``score()`` method's and DeQA-Score's. Deviation: none
    (prompts batched, no generation).
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
    layout: str | None = Field(None, description=LAYOUT_DESCRIPTION, exclude_if=lambda v: v is None)
    words: tuple[str, str] = Field(("good", "poor"), description="Positive word, negative word.")
    temperature: float = Field(100.0, gt=0, description="Softmax temperature (100 in Q-Bench).")

    _check_layout = field_validator("layout")(_one_image_layout)


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

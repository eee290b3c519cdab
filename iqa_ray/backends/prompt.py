"""The request every backend answers: a ``Prompt``, and the ``VlmBackend`` protocol."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from iqa_ray.errors import RowError


@dataclass(frozen=True)
class Prompt:
    """One next-token query: images (in order) then a question; the answer turn is pre-filled.

    Attributes:
        images: RGB uint8 HxWx3 arrays shown before the question, in order.
        question: the user turn's text.
        answer_prefix: text pre-filled in the assistant turn ("" = read its first word).
        words: candidate words whose next-token logits are read, in order.
        image_keys: identities of the images (same key = same pixels), for encoder reuse.
    """

    images: tuple[np.ndarray, ...]
    question: str
    answer_prefix: str
    words: tuple[str, ...]
    image_keys: tuple[str, ...] = ()


class VlmBackend(Protocol):
    """A loaded vision-language model that returns next-token logits of chosen words."""

    def check_words(self, templates: list[Prompt]) -> None:
        """Resolve every word of these prompt shapes to token ids; raise ConfigError if not."""

    def next_token_logits(self, prompts: list[Prompt]) -> list[np.ndarray | RowError]:
        """Logits (float64, one per word) of each prompt, or a RowError for a failed prompt."""

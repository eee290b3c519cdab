"""The request every backend answers: a ``Prompt``, and the ``VlmBackend`` protocol."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from iqa_ray.errors import RowError

IMAGE_MARKER = "{image}"  # where an image goes in a ``Prompt.layout``


@dataclass(frozen=True)
class Prompt:
    """One next-token query: images (in order) then a question; the answer turn is pre-filled.

    Attributes:
        images: RGB uint8 HxWx3 arrays shown before the question, in order.
        question: the user turn's text.
        answer_prefix: text pre-filled in the assistant turn ("" = read its first word).
        words: candidate words whose next-token logits are read, in order.
        image_keys: identities of the images (same key = same pixels), for encoder reuse.
        layout: the whole user turn with one ``{image}`` marker per image, in order, where a
            method follows a checkpoint's reference prompt exactly (e.g. Q-Align's scorer puts
            the image after the question); None: the images, then the question, as the
            backend's chat template places them.
    """

    images: tuple[np.ndarray, ...]
    question: str
    answer_prefix: str
    words: tuple[str, ...]
    image_keys: tuple[str, ...] = ()
    layout: str | None = None

    def __post_init__(self) -> None:
        if self.layout is not None and self.layout.count(IMAGE_MARKER) != len(self.images):
            raise ValueError(
                f"prompt layout has {self.layout.count(IMAGE_MARKER)} {IMAGE_MARKER} markers "
                f"for {len(self.images)} images"
            )

    def user_parts(self) -> list[str | int]:
        """The user turn in order: text pieces (non-empty strings) and image indices."""
        if self.layout is None:
            return [*range(len(self.images)), self.question]
        parts: list[str | int] = []
        for k, text in enumerate(self.layout.split(IMAGE_MARKER)):
            if k:
                parts.append(k - 1)
            if text:
                parts.append(text)
        return parts


class VlmBackend(Protocol):
    """A loaded vision-language model that returns next-token logits of chosen words.

    Attributes:
        family: the model family prompts are rendered for (the checkpoint's ``model_type``,
            e.g. ``llava`` or ``mplug_owl2``; ``fake`` for the wiring stand-in). Methods pick
            a checkpoint's reference prompt conventions by it.
    """

    family: str

    def check_words(self, templates: list[Prompt]) -> None:
        """Resolve every word of these prompt shapes to token ids; raise ConfigError if not."""

    def next_token_logits(self, prompts: list[Prompt]) -> list[np.ndarray | RowError]:
        """Logits (float64, one per word) of each prompt, or a RowError for a failed prompt."""

    def prepare_image(self, image: np.ndarray) -> np.ndarray:
        """An image a method keeps for the whole run (an anchor), brought once to what the
        model's preprocessing would make of it, where that is exact (else unchanged)."""

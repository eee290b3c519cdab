"""Model backends: the ``VlmBackend`` protocol, the request type, and ``load_backend``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from iqa_ray.errors import ConfigError, RowError

if TYPE_CHECKING:
    from iqa_ray.config import ModelConfig


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


def load_backend(
    cfg: ModelConfig, batch_size: int = 8, max_tokens_per_batch: int | None = None
) -> VlmBackend:
    """Construct the configured backend (heavy imports happen inside the constructor)."""
    if cfg.backend == "fake":
        from iqa_ray.backends.fake import FakeBackend

        return FakeBackend(
            cfg.fake.fail_after_batches, cfg.fake.fail_delay_s, delay_s=cfg.fake.delay_s,
            crash_marker=cfg.fake.crash_process_once_marker, crash_on_batch=cfg.fake.crash_on_batch,
            fail_after_glob=cfg.fake.fail_after_glob,
        )
    if cfg.backend == "transformers":
        from iqa_ray.backends.hf import TransformersBackend

        return TransformersBackend(cfg, batch_size, max_tokens_per_batch)
    if cfg.backend == "vllm":
        from iqa_ray.backends.vllm_backend import VllmBackend

        return VllmBackend(cfg)
    raise ConfigError(f"unknown backend {cfg.backend!r}")

"""A deterministic CPU stand-in for a VLM, for pipeline-wiring tests only (never model tests)."""

from __future__ import annotations

import hashlib
import time

import numpy as np

from iqa_ray.backends import Prompt
from iqa_ray.errors import RowError


class FakeBackend:
    """Logits from image statistics and a stable hash of the text: same input, same output.

    Args:
        fail_after_batches: raise a RuntimeError (an infrastructure failure that stops the job)
            on the call after this many calls; used to test crash-and-resume.
        fail_delay_s: hang this long before failing, as a dying device often does, so that
            earlier batches reach the bucket first.
    """

    def __init__(self, fail_after_batches: int | None = None, fail_delay_s: float = 0.0) -> None:
        self._fail_after = fail_after_batches
        self._fail_delay_s = fail_delay_s
        self._calls = 0

    def check_words(self, templates: list[Prompt]) -> None:
        """Every word is acceptable to the fake backend."""

    def next_token_logits(self, prompts: list[Prompt]) -> list[np.ndarray | RowError]:
        """Deterministic logits in [-4, 4]; brighter, busier images get higher first words."""
        self._calls += 1
        if self._fail_after is not None and self._calls > self._fail_after:
            time.sleep(self._fail_delay_s)
            raise RuntimeError(f"FakeBackend: injected failure after {self._fail_after} batches")
        return [self._one(p) for p in prompts]

    @staticmethod
    def _one(prompt: Prompt) -> np.ndarray:
        stats = [float(im.mean()) / 255.0 + float(im.std()) / 128.0 for im in prompt.images]
        level = float(np.mean(stats)) if stats else 0.5
        out = np.empty(len(prompt.words), dtype=np.float64)
        for j, word in enumerate(prompt.words):
            digest = hashlib.sha256(f"{prompt.question}|{word}".encode()).digest()
            base = int.from_bytes(digest[:4], "big") / 2**32 - 0.5
            out[j] = 4.0 * np.tanh(base + (len(prompt.words) - 2 * j) * (level - 0.5))
        return out

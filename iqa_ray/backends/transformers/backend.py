"""Hugging Face transformers backend: any ``AutoModelForImageTextToText`` with a chat template.

Prompts are rendered with the processor's chat template (images first, then the question),
the assistant turn is pre-filled with the answer prefix, and one forward pass per sub-batch
reads the logits at the last position (left padding, so position -1 is every row's next token).
With ``model.prefix_sharing`` (default) and a verified model type, shared prompt prefixes and
repeated images are computed once per call instead (``shared``); sub-batches respect
``model.batch_size`` rows and ``model.max_tokens_per_batch`` padded tokens, and a CUDA
out-of-memory error halves the failing sub-batch and retries.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from iqa_ray.backends.config import ModelConfig
from iqa_ray.backends.prompt import Prompt
from iqa_ray.backends.transformers.runtime import LoadedModel
from iqa_ray.backends.transformers.shared import SharedPrefixRunner
from iqa_ray.backends.transformers.unshared import UnsharedRunner
from iqa_ray.errors import ConfigError, RowError

logger = logging.getLogger(__name__)


class _OnRuntime:
    """An attribute of the backend's loaded model (``rt``), read and set through the backend."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, backend: Any, owner: type | None = None) -> Any:
        return self if backend is None else getattr(backend.rt, self.name)

    def __set__(self, backend: Any, value: Any) -> None:
        setattr(backend.rt, self.name, value)


class TransformersBackend:
    """One model and processor, loaded once per actor, answering ``next_token_logits``.

    The loaded model (``rt``) carries the device, the batch limits and the work counters;
    the attributes below read and set them there.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        self._attach(LoadedModel.load(cfg))

    @classmethod
    def from_loaded(cls, model: Any, processor: Any, cfg: ModelConfig) -> TransformersBackend:
        """A backend around a model already built in memory (benchmarks: random full-size
        weights that would be slow to save and load); ``cfg`` supplies the options."""
        self = cls.__new__(cls)
        self._attach(LoadedModel(model, processor, cfg, cfg.id))
        return self

    def _attach(self, rt: LoadedModel) -> None:
        """Pick the shared or unshared path for a loaded model; check the token budget."""
        self.rt = rt
        self._unshared = UnsharedRunner(rt)
        reason = rt.sharing_support()
        self._shared = SharedPrefixRunner(rt, self._unshared.run) if reason is None else None
        # Read at every call: the benchmarks flip it to time both paths on one loaded model.
        self.prefix_sharing = bool(rt.cfg.prefix_sharing) and self._shared is not None
        if rt.cfg.prefix_sharing and reason is not None:
            logger.info("prefix sharing off: %s; every prompt runs its full sequence", reason)
        if rt.max_tokens_per_batch is not None:
            probe = Prompt((np.zeros((32, 32, 3), np.uint8),), "?", "", ("x",))
            try:
                rt.estimate_tokens(probe, rt.text(probe))
            except ValueError as exc:
                raise ConfigError(str(exc)) from exc

    # The loaded model's state, read and set through the backend (tests and benchmarks change
    # the batch limits or the device of a loaded backend).
    family = _OnRuntime()
    model = _OnRuntime()
    processor = _OnRuntime()
    tokenizer = _OnRuntime()
    stats = _OnRuntime()
    device = _OnRuntime()
    batch_size = _OnRuntime()
    max_tokens_per_batch = _OnRuntime()

    # ---- the VlmBackend protocol -----------------------------------------------------------
    def render(self, prompt: Prompt) -> str:
        """Chat-template text of a prompt (see :class:`~.text.PromptText`)."""
        return self.rt.text(prompt)

    def word_id(self, text: str, word: str) -> int:
        """Token id of ``word`` right after ``text``."""
        return self.rt.word_id(text, word)

    def estimate_tokens(self, prompt: Prompt, text: str) -> int:
        """Sequence length of a prompt (what the token budget plans with)."""
        return self.rt.estimate_tokens(prompt, text)

    def prepare_image(self, image: np.ndarray) -> np.ndarray:
        """The model's own resize and crop of an image kept for the run (an anchor), done
        once; unchanged where the model's preprocessing has no exact split."""
        plan = self.rt.pixel_plan
        return plan.geometry(image) if plan is not None else image

    def check_words(self, templates: list[Prompt]) -> None:
        """Resolve the words of every prompt shape now, so a bad word fails the actor at start."""
        self.rt.check_words(templates)

    def next_token_logits(self, prompts: list[Prompt]) -> list[np.ndarray | RowError]:
        """Logits of each prompt's words at the next position; failures isolated per prompt.

        Shared prefixes and repeated images are computed once when ``prefix_sharing`` is on
        and the model type is verified for it; else every prompt runs in full.
        """
        shared = self.prefix_sharing and self._shared is not None and self._shared.enabled
        with self.rt.stats.cpu_time("cpu_s"):
            if shared and prompts:
                return self._shared.run(prompts)
            return self._unshared.run(prompts)

    def unshared_logits(self, prompts: list[Prompt]) -> list[np.ndarray | RowError]:
        """The unshared path: one full sequence per prompt, batched with left padding."""
        return self._unshared.run(prompts)

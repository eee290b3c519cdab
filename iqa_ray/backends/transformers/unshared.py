"""The unshared execution path: one full sequence per prompt, length-sorted sub-batches with
left padding, out-of-memory halving, and per-prompt error isolation."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from iqa_ray.backends.batching import is_out_of_memory, plan_batches, run_halving
from iqa_ray.backends.prompt import Prompt
from iqa_ray.backends.transformers.runtime import LoadedModel
from iqa_ray.errors import RowError
from iqa_ray.schema import ErrorCode

logger = logging.getLogger(__name__)


class UnsharedRunner:
    """Runs every prompt as its own sequence (the reference path the shared one is checked on)."""

    def __init__(self, rt: LoadedModel) -> None:
        self.rt = rt

    def run(self, prompts: list[Prompt]) -> list[np.ndarray | RowError]:
        """Logits of each prompt's words at the next position; failures isolated per prompt."""
        self.rt.stats.add(prompts=len(prompts))
        not_run = RowError(ErrorCode.MODEL_ERROR, "not run")
        results: list[np.ndarray | RowError] = [not_run] * len(prompts)
        texts = [self.rt.text(p) for p in prompts]
        # Similar lengths together wastes less padding.
        order = sorted(range(len(prompts)), key=lambda i: len(texts[i]))
        for chunk in self._plan(prompts, texts, order):
            values = run_halving(chunk, lambda c: self._run_isolated(prompts, texts, c),
                                 is_out_of_memory, lambda _: self.rt.free_memory())
            for i, value in zip(chunk, values, strict=True):
                results[i] = value
        return results

    def _plan(self, prompts: list[Prompt], texts: list[str], order: list[int]) -> list[list[int]]:
        """Sub-batches of ``order``: ``batch_size`` rows, within the token budget when set."""
        rt = self.rt
        if rt.max_tokens_per_batch is None:
            return [order[s : s + rt.batch_size] for s in range(0, len(order), rt.batch_size)]
        lengths = {i: rt.estimate_tokens(prompts[i], texts[i]) for i in order}
        order = sorted(order, key=lengths.__getitem__)
        plan = plan_batches([lengths[i] for i in order], rt.batch_size, rt.max_tokens_per_batch)
        return [[order[k] for k in batch] for batch in plan]

    def _run_isolated(
        self, prompts: Sequence[Prompt], texts: Sequence[str], chunk: list[int]
    ) -> list[np.ndarray | RowError]:
        try:
            return list(self._forward([prompts[i] for i in chunk], [texts[i] for i in chunk]))
        except Exception as exc:
            if len(chunk) > 1 and is_out_of_memory(exc):
                raise  # halved and retried by the caller, not split one by one
            if len(chunk) == 1:
                logger.warning("model error on one prompt: %s: %s", type(exc).__name__, exc)
                return [RowError(ErrorCode.MODEL_ERROR, f"{type(exc).__name__}: {exc}")]
        # A batch failed: rerun one by one so only the bad prompt gets an error.
        return [self._run_isolated(prompts, texts, [i])[0] for i in chunk]

    def _forward(self, prompts: Sequence[Prompt], texts: Sequence[str]) -> list[np.ndarray]:
        rt = self.rt
        images = [list(p.images) for p in prompts]
        enc = rt.model_inputs(list(texts), images)
        with torch.inference_mode():
            last = rt.last_logits(enc)
        mask = enc["attention_mask"]
        rt.stats.add(forward_calls=1, tokens=int(mask.sum()), padded_tokens=mask.numel(),
                     images_encoded=sum(len(i) for i in images))
        rows = []
        for r, (prompt, text) in enumerate(zip(prompts, texts, strict=True)):
            ids = torch.tensor([rt.word_id(text, w) for w in prompt.words], device=last.device)
            rows.append(last[r, ids].double().cpu().numpy())
        return rows

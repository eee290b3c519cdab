"""Encoding one call's prompts for the shared-prefix path of the transformers backend.

Each distinct image (by ``Prompt.image_keys``, checked against the pixels, or by content hash)
is preprocessed and run through the vision encoder once, into a feature bank; CPU
preprocessing of the next chunk of images overlaps the encoder on the GPU. Every prompt is
rendered, its image placeholders expanded, tokenized, and each token given an identity
(``prefix.token_keys``). Once per backend, the expansion is checked against the processor's own
output for one prompt. The model-specific steps are hooks of the loaded model
(``LoadedModel.preprocess_images``, ``image_features``, ``shared_token_ids``, ...): the generic
family uses the processor's ``replace_image_token``, a native family its own rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from iqa_ray.backends.batching import is_out_of_memory, prefetch_map, run_halving
from iqa_ray.backends.prompt import Prompt
from iqa_ray.backends.transformers.prefix import dedupe_images, token_keys
from iqa_ray.backends.transformers.runtime import LoadedModel


class ExpansionMismatch(ValueError):
    """Our placeholder expansion differs from the processor's: the shared path is unusable."""


@dataclass
class EncodedPrompt:
    """One prompt, rendered and tokenized: its text (word ids come from its tail), its words
    and its token identities."""

    text: str
    words: tuple[str, ...]
    keys: list[int]


class PromptEncoder:
    """Turns a call's prompts into a feature bank and token identities (see module doc)."""

    _MEMO_SIZE = 4096

    def __init__(self, rt: LoadedModel) -> None:
        self.rt = rt
        self._checked = False
        # (rendered text, its images' placeholder texts) -> token ids: a call repeats a few
        # prompt shapes many times, and their expanded texts are long to tokenize.
        self._ids: dict[tuple[str, tuple[str, ...]], list[int]] = {}

    def _encode(self, arrays: list[np.ndarray]) -> tuple[Any, list[range], list[str]]:
        """Feature bank of the distinct images, each image's rows in it, its placeholder text."""
        b = self.rt
        chunks = [arrays[i : i + b.batch_size] for i in range(0, len(arrays), b.batch_size)]
        features: list[Any] = []
        texts: list[str] = []
        for processed in prefetch_map(b.preprocess_images, chunks, overlap=b.device == "cuda"):
            pixels = b.image_pixels(processed)
            chunk = run_halving(
                list(range(len(pixels))),
                lambda idx, p=pixels: self._vision(p[idx]),
                is_out_of_memory,
                lambda _: b.free_memory(),
            )
            texts.extend(b.image_placeholders(processed, [int(f.shape[0]) for f in chunk]))
            features.extend(chunk)
        sizes = [int(f.shape[0]) for f in features]
        starts = np.cumsum([0, *sizes]).tolist()
        rows = [range(starts[k], starts[k + 1]) for k in range(len(sizes))]
        hidden = b.model.get_input_embeddings().weight.shape[1]
        bank = torch.cat(features) if features else torch.empty(0, hidden, device=b.device)
        return bank.to(b.model.dtype), rows, texts

    def _vision(self, pixels: Any) -> list[Any]:
        self.rt.stats.add(images_encoded=len(pixels))
        with self.rt.stats.cpu_time("device_cpu_s"):
            return self.rt.image_features(pixels)

    def _token_ids(
        self, texts: list[str], slots: list[list[int]], placeholder: list[str]
    ) -> list[list[int]]:
        """Token ids of each prompt (image slots marked), tokenizing each distinct
        (text, placeholders) once and remembering it across calls."""
        if not self.rt.memo:
            return self.rt.shared_token_ids(texts, [placeholder[k] for row in slots for k in row])
        keys = [(text, tuple(placeholder[k] for k in row)) for text, row in zip(
            texts, slots, strict=True)]
        missing = list(dict.fromkeys(k for k in keys if k not in self._ids))
        if missing:
            if len(self._ids) + len(missing) > self._MEMO_SIZE:
                self._ids.clear()
            ids = self.rt.shared_token_ids([t for t, _ in missing],
                                           [p for _, ps in missing for p in ps])
            self._ids.update(zip(missing, ids, strict=True))
        return [self._ids[k] for k in keys]

    def encode(self, prompts: Sequence[Prompt]) -> tuple[Any, list[EncodedPrompt]]:
        """The feature bank of the call's distinct images and every prompt, tokenized."""
        arrays, slots = dedupe_images(prompts)
        bank, rows, placeholder = self._encode(arrays)
        texts = [self.rt.text(p) for p in prompts]
        ids = self._token_ids(texts, slots, placeholder)
        image_token_id = self.rt.image_token_id
        encoded = [
            EncodedPrompt(
                text, p.words, token_keys(seq, image_token_id, [r for k in row for r in rows[k]])
            )
            for p, text, seq, row in zip(prompts, texts, ids, slots, strict=True)
        ]
        if not self._checked:
            self._check_against_processor(prompts, texts, ids)
        return bank, encoded

    def _check_against_processor(
        self, prompts: Sequence[Prompt], texts: list[str], ids: list[list[int]]
    ) -> None:
        """Once per backend: our expansion must give the processor's own token ids."""
        i = next((k for k, p in enumerate(prompts) if p.images), 0)
        ref = self.rt.reference_token_ids(prompts[i], texts[i])
        self._checked = True
        if [int(t) for t in ref] != [int(t) for t in ids[i]]:
            raise ExpansionMismatch("placeholder expansion differs from the processor's")

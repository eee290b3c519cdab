"""Shared-prefix execution for the transformers backend: KV-cache and vision-encoder reuse.

For one call's prompts:

1. ``hf_encode.PromptEncoder``: each distinct image runs through the vision encoder once,
   into a feature bank; each prompt is tokenized with its placeholders expanded by the
   processor, and each token gets an identity (text id, or the bank row of its image feature).
2. Prompts are grouped by longest common identity prefix (Q-Debias: the two questions of one
   [prior, query] pair; Compare2Score: every test image against one anchor).
3. Per unit of groups, the prefixes run once (left padded, ``use_cache=True``), then every
   member's suffix runs against its group's cache row (read-only), left padded, with explicit
   ``position_ids = prefix_len + j``. Correctness: keys of the padding slots (before a prefix,
   and between a prefix and a left-padded suffix) are masked out, and rotary attention depends
   only on position differences, which are those of the unshared sequence; so the logits
   equal the unshared forward up to float rounding (tested to 1e-4 in float32).

Images enter as input embeddings: the text tokens are embedded by the model's own embedding
table and each image token's slot takes its bank feature, so a suffix or prefix carries exactly
the features of the image tokens it contains (the forward's arguments come from the loaded
model's ``embeds_forward_kwargs``: a native family adds what its forward needs, e.g. the image
positions of mPLUG-Owl2's modality-adaptive layers). ``inputs_embeds`` is the oldest, most
stable entry of every transformers 5.x model (the newer ``mm_encoder_outputs`` argument does
not exist in 5.17 and is then silently ignored, which would score the placeholder tokens
instead of the images).

Only model types verified by a test (``runtime.SHARING_VERIFIED``) take this path: models with
multimodal rotary positions (Qwen2-VL's mrope), bidirectional attention over image tokens
(Gemma 3, PaliGemma), sliding-window or recurrent layers would need their own position or
cache handling, so they fall back to the unshared path with one INFO log line.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from iqa_ray.backends.batching import is_out_of_memory, plan_batches, run_halving
from iqa_ray.backends.prompt import Prompt
from iqa_ray.backends.transformers.encode import EncodedPrompt, ExpansionMismatch, PromptEncoder
from iqa_ray.backends.transformers.prefix import (
    Group,
    SharingPlan,
    bank_rows,
    dedupe_images,
    group_by_prefix,
)
from iqa_ray.backends.transformers.runtime import LoadedModel
from iqa_ray.errors import RowError

Results = list[np.ndarray | RowError]

logger = logging.getLogger(__name__)
def _log_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max()
    return shifted - np.log(np.exp(shifted).sum())


@dataclasses.dataclass
class _Prefix:
    """A unit's computed prefixes: the cache (one row per group) and its attention mask."""

    cache: Any
    mask: Any


class SharedPrefixRunner:
    """Runs a backend's prompts with shared prefixes; any failure falls back to unshared."""

    def __init__(self, rt: LoadedModel, unshared: Callable[[list[Prompt]], Results]) -> None:
        self.rt = rt
        self.unshared = unshared  # the reference path, and the fallback when sharing fails
        self.encoder = PromptEncoder(rt)
        self.enabled = True
        # None until the first call checks the shared path against the unshared one.
        self.verified: bool | None = None

    def plan(self, prompts: Sequence[Prompt]) -> SharingPlan:
        """The grouping ``run`` would use (encodes the images; works on the meta device)."""
        with torch.inference_mode():
            _, encoded = self.encoder.encode(prompts)
        groups = group_by_prefix([e.keys for e in encoded])
        lengths = [len(e.keys) for e in encoded]
        return SharingPlan(groups, lengths, len(dedupe_images(prompts)[0]))

    # ---- execution ----------------------------------------------------------------------
    def run(self, prompts: Sequence[Prompt]) -> list[np.ndarray | RowError]:
        """Logits of each prompt's words (same contract as ``next_token_logits``).

        The first call first checks a few of its prompts both ways (``verify``); a mismatch
        turns sharing off for this backend, so a model or library version that computes the
        shared path differently costs speed, never correctness.
        """
        if self.verified is None and prompts:
            self.verify(prompts)
        if not self.enabled:
            return self.unshared(list(prompts))
        return self._run_shared(prompts)

    def verify(self, prompts: Sequence[Prompt]) -> float:
        """Compare shared and unshared logits on a probe of ``prompts``; disable on mismatch.

        The probe is the first prompt and up to two later ones that show the same first image
        with the same question (they share a cached prefix). Compared: the log-softmax over
        each prompt's words, the quantity the methods use. Tolerance: 1e-3 in float32, 0.15
        in 16-bit types (rounding differs between the two orders of computation). The probe's
        passes are not counted in ``stats``. Returns the largest difference.
        """
        first = prompts[0]
        key = first.image_keys[:1]
        peers = [
            p for p in prompts[1:]
            if key and p.image_keys[:1] == key and p.question == first.question
        ]
        probe = [first, *peers[:2]]
        saved = dataclasses.replace(self.rt.stats)
        try:
            shared = self._run_shared(probe)
            unshared = self.unshared(probe)
        finally:
            for field in dataclasses.fields(saved):
                setattr(self.rt.stats, field.name, getattr(saved, field.name))
        gaps = [
            float(np.abs(_log_softmax(a) - _log_softmax(b)).max())
            for a, b in zip(shared, unshared, strict=True)
            if isinstance(a, np.ndarray) and isinstance(b, np.ndarray)
        ]
        if not gaps:  # every probe prompt failed: decide on a later call
            return float("nan")
        worst = max(gaps)
        tolerance = 1e-3 if self.rt.model.dtype == torch.float32 else 0.15
        self.verified = worst <= tolerance
        if not self.verified:
            self.enabled = False
            logger.warning(
                "prefix sharing disabled: on %d probe prompts the shared path differs from the "
                "unshared one by up to %.3g (tolerance %.3g) for %s; running unshared",
                len(probe), worst, tolerance, self.rt.source,
            )
        return worst

    def _run_shared(self, prompts: Sequence[Prompt]) -> list[np.ndarray | RowError]:
        try:
            with torch.inference_mode():
                bank, encoded = self.encoder.encode(prompts)
        except Exception as exc:
            self.enabled = not isinstance(exc, ExpansionMismatch)
            how = "disabled for this model" if not self.enabled else "skipped for this call"
            logger.info(
                "prefix sharing %s (%s: %s): running unshared", how, type(exc).__name__, exc
            )
            return self.unshared(list(prompts))
        self.rt.stats.add(prompts=len(prompts))
        results: list[Any] = [None] * len(prompts)
        for unit in self._units(group_by_prefix([e.keys for e in encoded])):
            for i, value in self._run_unit_safe(unit, prompts, encoded, bank):
                results[i] = value
        return results

    def _units(self, groups: list[Group]) -> list[list[Group]]:
        """Groups whose prefixes run in one forward, and one unit of the unshared prompts.

        A unit's prefixes all have the same length: the prefix pass needs no padding, so no
        cached key or value comes from a padding token.
        """
        by_length: dict[int, list[Group]] = {}
        for group in groups:
            by_length.setdefault(group.prefix_len, []).append(group)
        units = []
        for length, same in sorted(by_length.items()):
            if length:
                plan = plan_batches(
                    [length] * len(same), self.rt.batch_size, self.rt.max_tokens_per_batch
                )
                units.extend([same[k] for k in batch] for batch in plan)
        return units + ([by_length[0]] if 0 in by_length else [])

    def _run_unit_safe(
        self, unit: list[Group], prompts: Sequence[Prompt], encoded: list[EncodedPrompt], bank: Any
    ) -> list[tuple[int, Any]]:
        try:
            with torch.inference_mode():
                return run_halving(
                    unit,
                    lambda gs: self._run_unit(gs, encoded, bank),
                    is_out_of_memory,
                    lambda _: self.rt.free_memory(),
                )
        except Exception as exc:  # isolate per prompt on the unshared path
            members = [i for g in unit for i in g.members]
            logger.warning(
                "shared pass failed on %d prompts (%s: %s): rerunning them unshared",
                len(members),
                type(exc).__name__,
                exc,
            )
            self.rt.stats.add(prompts=-len(members))
            return list(
                zip(members, self.unshared([prompts[i] for i in members]), strict=True)
            )

    def _run_unit(
        self, groups: list[Group], encoded: list[EncodedPrompt], bank: Any
    ) -> list[tuple[int, Any]]:
        prefix = None
        if groups[0].prefix_len:
            seqs = [encoded[g.members[0]].keys[: g.prefix_len] for g in groups]
            out, mask = self._forward(seqs, [0] * len(groups), bank)
            # Not out.get("cache", out.past_key_values): that reads the deprecated name too.
            prefix = _Prefix(out["cache"] if "cache" in out else out.past_key_values, mask)  # noqa: SIM401
        rows = [(i, slot) for slot, g in enumerate(groups) for i in g.members]
        rows.sort(key=lambda r: len(encoded[r[0]].keys) - groups[r[1]].prefix_len)
        width = 0 if prefix is None else int(prefix.mask.shape[1])
        costs = [width + len(encoded[i].keys) - groups[s].prefix_len for i, s in rows]
        results: list[tuple[int, Any]] = []
        for batch in plan_batches(costs, self.rt.batch_size, self.rt.max_tokens_per_batch):
            chunk = [rows[k] for k in batch]
            results.extend(
                run_halving(
                    chunk,
                    lambda c: self._suffixes(c, groups, prefix, encoded, bank),
                    is_out_of_memory,
                    lambda _: self.rt.free_memory(),
                )
            )
        return results

    def _suffixes(
        self,
        rows: list[tuple[int, int]],
        groups: list[Group],
        prefix: _Prefix | None,
        encoded: list[EncodedPrompt],
        bank: Any,
    ) -> list[tuple[int, Any]]:
        seqs = [encoded[i].keys[groups[s].prefix_len :] for i, s in rows]
        starts = [groups[s].prefix_len for _, s in rows]
        out, _ = self._forward(seqs, starts, bank, prefix, [s for _, s in rows])
        last = out.logits[:, -1, :].float()
        results = []
        for r, (i, _) in enumerate(rows):
            ids = [self.rt.word_id(encoded[i].text, w) for w in encoded[i].words]
            results.append((i, last[r, ids].double().cpu().numpy()))
        return results

    def _forward(
        self,
        seqs: list[list[int]],
        starts: list[int],
        bank: Any,
        prefix: _Prefix | None = None,
        slots: list[int] | None = None,
    ) -> tuple[Any, Any]:
        """One left-padded forward of ``seqs`` (token keys) placed after ``starts`` tokens;
        with ``prefix``, row r continues the prefix of group ``slots[r]``."""
        from transformers import DynamicCache

        b = self.rt
        ids, mask, image_slots = self._pad(seqs)
        offsets = (mask.cumsum(-1) - 1).clamp(min=0)
        positions = torch.tensor(starts, device=b.device)[:, None] + offsets
        rows = [r for seq in seqs for r in bank_rows(seq)]
        with b.stats.cpu_time("device_cpu_s"):  # device work: embedding, feature scatter
            embeds = b.model.get_input_embeddings()(ids)
            if rows:
                # Row-major order of the slots matches the order of ``rows``.
                features = bank[torch.tensor(rows, device=bank.device)]
                embeds = embeds.masked_scatter(
                    image_slots[..., None].expand_as(embeds),
                    features.to(embeds.device, embeds.dtype),
                )
        kwargs = b.embeds_forward_kwargs(embeds, image_slots)
        full_mask = mask
        if prefix is not None:
            index = torch.tensor(slots, device=b.device)
            layer = shared_prefix_layer_class()
            cache = DynamicCache()
            cache.layers = [layer(k, v, index) for k, v, *_ in prefix.cache]
            kwargs[cache_argument(type(b.model))] = cache
            full_mask = torch.cat([prefix.mask.index_select(0, index), mask], dim=1)
        with b.stats.cpu_time("device_cpu_s"):
            out = b.model(
                attention_mask=full_mask,
                position_ids=positions,
                use_cache=True,
                logits_to_keep=1,
                **kwargs,
            )
        b.stats.add(forward_calls=1, tokens=int(mask.sum()), padded_tokens=mask.numel())
        return out, mask

    def _pad(self, seqs: list[list[int]]) -> tuple[Any, Any, Any]:
        """Token ids (image keys become the placeholder id), mask and image-slot mask, left
        padded."""
        b = self.rt
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), b.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        images = torch.zeros((len(seqs), width), dtype=torch.bool)
        embedding_id = b.image_embedding_id
        for r, seq in enumerate(seqs):
            keys = np.asarray(seq, dtype=np.int64)
            image = keys < 0
            ids[r, width - len(seq) :] = torch.from_numpy(np.where(image, embedding_id, keys))
            mask[r, width - len(seq) :] = 1
            images[r, width - len(seq) :] = torch.from_numpy(image)
        return ids.to(b.device), mask.to(b.device), images.to(b.device)


@functools.cache
def cache_argument(model_class: type) -> str:
    """The forward's name for a KV cache: ``cache`` where the model takes it (transformers 5.24
    renamed ``past_key_values``, to be removed in 5.40), else ``past_key_values``."""
    parameters = inspect.signature(model_class.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


@functools.cache
def shared_prefix_layer_class() -> type:
    """A cache layer holding one unit's prefixes (one row per group), read-only.

    Each suffix row sees its group's prefix, gathered per layer only while that layer runs;
    the suffix's own keys and values are returned for attention but not stored. So a batch of
    suffixes holds the prefixes once, not one copy per row across all layers. Defined on first
    use: transformers is imported lazily.
    """
    from transformers.cache_utils import DynamicLayer

    class SharedPrefixLayer(DynamicLayer):
        def __init__(self, keys: Any, values: Any, index: Any) -> None:
            super().__init__()
            self.keys, self.values, self.index = keys, values, index
            self.dtype, self.device = keys.dtype, keys.device
            self.is_initialized = True

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> Any:
            keys = torch.cat([self.keys.index_select(0, self.index), key_states], dim=-2)
            values = torch.cat([self.values.index_select(0, self.index), value_states], dim=-2)
            return keys, values

    return SharedPrefixLayer

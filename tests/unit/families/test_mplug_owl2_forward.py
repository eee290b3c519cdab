"""Native mPLUG-Owl2 forward paths on a tiny random model: left-padded batches, eager vs SDPA,
``inputs_embeds`` + ``image_mask``, and a cached prefix continued by suffixes (prefix sharing)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from iqa_ray.backends.families.mplug_owl2.modeling import IMAGE_TOKEN_INDEX, MplugOwl2ForCausalLM
from tests.unit.families.mplug_owl2_tiny import (
    PAIR,
    PROMPT,
    TEXT_ONLY,
    TOL,
    last_logits,
    load,
    random_images,
    randomize,
    tiny,
    tiny_config,
)

__all__ = ["tiny"]  # a fixture, used by name


def _batch_cases(proc: Any) -> tuple[list[str], list[list[Any]]]:
    images = random_images(3, [(30, 50), (50, 20), (56, 56), (12, 40)])
    texts = [PROMPT, PAIR, TEXT_ONLY, PROMPT + " rather"]
    return texts, [[images[0]], images[1:3], [], [images[3]]]


def _assert_batch_equals_singles(model: MplugOwl2ForCausalLM, proc: Any) -> None:
    texts, images = _batch_cases(proc)
    batch = proc(texts, images)
    assert len(set(batch["attention_mask"].sum(1).tolist())) == len(texts)  # really padded
    together = last_logits(model, batch)
    for i, (text, row) in enumerate(zip(texts, images, strict=True)):
        alone = last_logits(model, proc([text], [row]))[0]
        assert (together[i] - alone).abs().max() < TOL, i


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_left_padded_batch_equals_one_by_one(tiny: dict, attn: str) -> None:
    model = load(tiny["folder"], attn_implementation=attn)
    assert model.config._attn_implementation == attn
    _assert_batch_equals_singles(model, tiny["proc"])


def test_grouped_query_attention_batch_equals_one_by_one(tiny: dict) -> None:
    vocab = tiny["proc"].tokenizer.vocab_size
    model = MplugOwl2ForCausalLM(tiny_config(vocab, num_key_value_heads=2)).eval()
    randomize(model, seed=5)
    assert model.model.layers[0].self_attn.k_proj.multiway[0].out_features == 16
    _assert_batch_equals_singles(model, tiny["proc"])


def test_eager_and_sdpa_agree(tiny: dict) -> None:
    texts, images = _batch_cases(tiny["proc"])
    batch = tiny["proc"](texts, images)
    with torch.no_grad():
        eager = load(tiny["folder"], attn_implementation="eager")(**batch).logits
        sdpa = load(tiny["folder"], attn_implementation="sdpa")(**batch).logits
    real = batch["attention_mask"].bool()
    assert (eager[real] - sdpa[real]).abs().max() < TOL


def _spliced_embeds(model: MplugOwl2ForCausalLM, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    ids = batch["input_ids"]
    image_mask = ids == IMAGE_TOKEN_INDEX
    embeds = model.get_input_embeddings()(ids.masked_fill(image_mask, 0))
    features = model.get_image_features(batch["pixel_values"])
    assert features.shape == (len(batch["pixel_values"]), 9, model.config.hidden_size)
    flat = features.reshape(-1, features.shape[-1])
    return embeds.masked_scatter(image_mask[..., None], flat), image_mask


def test_inputs_embeds_with_image_mask_equals_input_ids_path(tiny: dict) -> None:
    model: MplugOwl2ForCausalLM = tiny["model"]
    texts, images = _batch_cases(tiny["proc"])
    batch = tiny["proc"](texts, images)
    with torch.no_grad():
        embeds, image_mask = _spliced_embeds(model, batch)
        mask = batch["attention_mask"]
        via_embeds = model(inputs_embeds=embeds, image_mask=image_mask, attention_mask=mask)
        no_image = torch.zeros_like(image_mask)
        as_text = model(inputs_embeds=embeds, image_mask=no_image, attention_mask=mask)
        with pytest.raises(ValueError, match="image_mask"):
            model(inputs_embeds=embeds, attention_mask=mask)
    via_ids = last_logits(model, batch)
    assert (via_embeds.logits[:, -1] - via_ids).abs().max() < 1e-5
    # With image positions marked as text they take the text multiway copy: routing matters.
    assert (as_text.logits[:2, -1] - via_ids[:2]).abs().max() > 1e-2


def test_prefix_cache_then_suffix_equals_full_forward(tiny: dict) -> None:
    model, proc = tiny["model"], tiny["proc"]
    batch = proc([PROMPT], [random_images(4, [(40, 30)])])
    full = last_logits(model, batch)[0]
    ids = batch["input_ids"]
    split = int((ids[0] == IMAGE_TOKEN_INDEX).nonzero().max()) + 3  # image inside the prefix
    with torch.no_grad():
        prefix = model(input_ids=ids[:, :split], pixel_values=batch["pixel_values"], use_cache=True)
        cache = prefix.past_key_values
        assert isinstance(cache, DynamicCache) and cache.get_seq_length() == split
        out = model(
            input_ids=ids[:, split:],
            attention_mask=torch.ones_like(ids),
            position_ids=torch.arange(split, ids.shape[1])[None],
            past_key_values=cache,
            use_cache=True,
        )
    assert (out.logits[0, -1] - full).abs().max() < TOL
    assert out.past_key_values.get_seq_length() == ids.shape[1]
    with torch.no_grad():  # positions counted from the mask when not given
        again = model(input_ids=ids[:, :split], pixel_values=batch["pixel_values"], use_cache=True)
        tail = model(
            input_ids=ids[:, split:], attention_mask=torch.ones_like(ids),
            past_key_values=again.past_key_values,
        )
    assert (tail.logits[0, -1] - full).abs().max() < TOL


class _ReadOnlyPrefix(DynamicLayer):
    """One prefix row per group, gathered for each suffix row and never extended (the shape of
    the lead's shared-prefix cache layer)."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, index: torch.Tensor) -> None:
        super().__init__()
        self.keys, self.values, self.index = keys, values, index
        self.dtype, self.device = keys.dtype, keys.device
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kw: Any):
        keys = torch.cat([self.keys.index_select(0, self.index), key_states], dim=-2)
        values = torch.cat([self.values.index_select(0, self.index), value_states], dim=-2)
        return keys, values


def test_shared_prefix_with_left_padded_suffixes_via_inputs_embeds(tiny: dict) -> None:
    model, proc = tiny["model"], tiny["proc"]
    image = random_images(6, [(44, 28)])
    texts = [PROMPT + " good", PROMPT + " rather bad or poor", PROMPT]
    singles = [last_logits(model, proc([t], [image]))[0] for t in texts]
    rows = [proc([t], [image]) for t in texts]
    split = int((rows[0]["input_ids"][0] == IMAGE_TOKEN_INDEX).nonzero().max()) + 2
    with torch.no_grad():
        embeds, image_mask = _spliced_embeds(model, rows[0])
        prefix = model(
            inputs_embeds=embeds[:, :split], image_mask=image_mask[:, :split], use_cache=True
        ).past_key_values
        suffixes = proc.tokenizer  # suffixes are text only: pad them left by hand
        tails = [r["input_ids"][0, split:].tolist() for r in rows]
        width = max(len(t) for t in tails)
        ids = torch.tensor([[suffixes.pad_token_id] * (width - len(t)) + t for t in tails])
        mask = torch.tensor([[0] * (width - len(t)) + [1] * len(t) for t in tails])
        cache = DynamicCache()
        index = torch.zeros(len(texts), dtype=torch.long)
        cache.layers = [_ReadOnlyPrefix(layer.keys, layer.values, index) for layer in prefix.layers]
        out = model(
            inputs_embeds=model.get_input_embeddings()(ids),
            image_mask=torch.zeros_like(mask, dtype=torch.bool),
            attention_mask=torch.cat([torch.ones(len(texts), split, dtype=torch.long), mask], 1),
            position_ids=split + (mask.cumsum(-1) - 1).clamp(min=0),
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
    assert out.logits.shape[1] == 1
    for i, single in enumerate(singles):
        assert (out.logits[i, -1] - single).abs().max() < TOL, i


def test_logits_to_keep_and_cache_flags(tiny: dict) -> None:
    model, proc = tiny["model"], tiny["proc"]
    batch = proc([TEXT_ONLY], [[]])
    with torch.no_grad():
        full = model(**batch)
        kept = model(**batch, logits_to_keep=1)
    assert full.logits.shape[:2] == batch["input_ids"].shape and full.past_key_values is None
    assert kept.logits.shape[1] == 1
    assert (kept.logits[:, 0] - full.logits[:, -1]).abs().max() < 1e-5
    assert full.logits.dtype == torch.float32


def test_image_position_count_must_match_the_images(tiny: dict) -> None:
    model, proc = tiny["model"], tiny["proc"]
    batch = proc([PROMPT], [random_images(7, [(20, 20)])])
    two = torch.cat([batch["pixel_values"]] * 2)
    with pytest.raises(ValueError, match="image positions"):
        model(input_ids=batch["input_ids"], pixel_values=two)
    with pytest.raises(ValueError, match="no pixel_values"):
        model(input_ids=batch["input_ids"])

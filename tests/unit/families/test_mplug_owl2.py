"""Native mPLUG-Owl2 without the reference fixture: pure pixel / prompt functions, the processor,
and loading round trips of a tiny random model (F32, F16, BF16) through from_pretrained."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from iqa_ray.backends.families.mplug_owl2.configuration import MplugOwl2Config
from iqa_ray.backends.families.mplug_owl2.language import MultiwayNetwork, Route
from iqa_ray.backends.families.mplug_owl2.modeling import (
    IMAGE_TOKEN_INDEX,
    MplugOwl2ForCausalLM,
    register_mplug_owl2,
)
from iqa_ray.backends.families.mplug_owl2.processing import (
    MplugOwl2Processor,
    expand_image_positions,
    expand_to_square,
    left_pad,
    tokenize_with_images,
)
from tests.unit.families.mplug_owl2_tiny import (
    PAIR,
    PROMPT,
    TEXT_ONLY,
    last_logits,
    random_images,
    tiny,
    tiny_config,
    write_folder,
)

__all__ = ["tiny"]  # a fixture, used by name


# ---- pure functions ---------------------------------------------------------------------------
def test_expand_to_square_centres_on_the_short_side() -> None:
    wide = np.full((2, 6, 3), 7, dtype=np.uint8)
    out = expand_to_square(wide, (1, 2, 3))
    assert out.shape == (6, 6, 3)
    assert (out[2:4] == 7).all() and (out[:2] == [1, 2, 3]).all() and (out[4:] == [1, 2, 3]).all()
    tall = np.full((5, 2, 3), 9, dtype=np.uint8)
    out = expand_to_square(tall, (0, 0, 0))
    assert (out[:, 1:3] == 9).all() and (out[:, :1] == 0).all() and (out[:, 3:] == 0).all()
    square = np.zeros((4, 4, 3), dtype=np.uint8)
    assert expand_to_square(square, (5, 5, 5)) is square


def test_tokenize_with_images_keeps_one_bos_and_marks_each_image() -> None:
    def encode(text: str) -> list[int]:
        return [1, *(ord(c) for c in text)]

    assert tokenize_with_images("ab<|image|>c", encode, 1) == [1, 97, 98, -200, 99]
    assert tokenize_with_images("<|image|><|image|>x", encode, 1) == [1, -200, -200, 120]
    assert tokenize_with_images("no image", encode, 1) == encode("no image")
    without_bos = tokenize_with_images("a<|image|>b", lambda t: [ord(c) for c in t], 1)
    assert without_bos == [97, -200, 98]
    assert expand_image_positions([5, -200, 6], 3) == [5, -200, -200, -200, 6]


def test_left_pad() -> None:
    ids, mask = left_pad([[4, 5, 6], [7]], pad_id=0)
    assert ids.tolist() == [[4, 5, 6], [0, 0, 7]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]


# ---- processor --------------------------------------------------------------------------------
def test_processor_expands_images_and_pads_left(tiny: dict) -> None:
    proc: MplugOwl2Processor = tiny["proc"]
    assert proc.num_image_tokens == 9 and proc.image_token == "<|image|>"
    images = random_images(0, [(30, 50), (40, 20), (56, 56)])
    batch = proc([PROMPT, PAIR], [[images[0]], images[1:]])
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert batch["pixel_values"].shape == (3, 3, 56, 56)
    assert (ids == IMAGE_TOKEN_INDEX).sum(dim=1).tolist() == [9, 18]
    lengths = [len(proc.prompt_ids(PROMPT)), len(proc.prompt_ids(PAIR))]
    assert mask.sum(dim=1).tolist() == lengths
    short = int(np.argmin(lengths))
    assert mask[short, 0] == 0 and ids[short, 0] == proc.tokenizer.pad_token_id
    with pytest.raises(ValueError, match="images"):
        proc([PAIR], [[images[0]]])
    with pytest.raises(ValueError, match="special token"):
        proc.tokenize_prompt("USER: hi</s>")


# ---- loading ----------------------------------------------------------------------------------
def test_save_and_reload_loads_every_key(tiny: dict) -> None:
    model, info = MplugOwl2ForCausalLM.from_pretrained(
        tiny["folder"], dtype=torch.float32, output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert not info["mismatched_keys"]
    reference = tiny["model"].state_dict()
    loaded = model.state_dict()
    assert set(loaded) == set(reference)
    assert all(torch.equal(loaded[k], reference[k]) for k in reference)
    inputs = tiny["proc"]([PROMPT], [random_images(1, [(20, 40)])])
    assert torch.equal(last_logits(model.eval(), inputs), last_logits(tiny["model"], inputs))


@pytest.mark.parametrize("stored", [torch.float16, torch.bfloat16])
def test_half_precision_checkpoints_load_as_float32(tiny: dict, tmp_path: Path, stored) -> None:
    write_folder(tmp_path, tiny["model"], stored)
    (tmp_path / "tokenizer.model").write_bytes((tiny["folder"] / "tokenizer.model").read_bytes())
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        assert f.get_tensor("lm_head.weight").dtype == stored
    model, info = MplugOwl2ForCausalLM.from_pretrained(
        tmp_path, dtype=torch.float32, output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert model.dtype == torch.float32
    for name, value in tiny["model"].state_dict().items():
        assert torch.equal(model.state_dict()[name], value.to(stored).float()), name


def test_bfloat16_forward_runs_close_to_float32(tiny: dict) -> None:
    model = MplugOwl2ForCausalLM.from_pretrained(tiny["folder"], dtype=torch.bfloat16).eval()
    inputs = tiny["proc"]([PROMPT, TEXT_ONLY], [random_images(2, [(30, 30)]), []])
    low = last_logits(model, inputs)
    assert low.dtype == torch.float32 and torch.isfinite(low).all()
    high = last_logits(tiny["model"], inputs)
    assert (low - high).abs().max() < 0.1 * high.abs().max()


def test_auto_classes_after_registration_ignore_auto_map(tiny: dict, tmp_path: Path) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM

    for path in tiny["folder"].iterdir():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    config = json.loads((tmp_path / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_missing.NoSuchClass"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    register_mplug_owl2()
    register_mplug_owl2()  # idempotent
    assert isinstance(AutoConfig.from_pretrained(tmp_path), MplugOwl2Config)
    model = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32)
    assert type(model) is MplugOwl2ForCausalLM


def test_fresh_model_tables_are_sincos_and_rotary_is_not_a_buffer(tiny: dict) -> None:
    model = MplugOwl2ForCausalLM(tiny_config(64))
    attention = model.model.visual_abstractor.encoder.layers[0].crossattention.attention
    q_table, k_table = attention.sincos_tables()
    assert torch.equal(attention.q_pos_embed, q_table)
    assert torch.equal(attention.k_pos_embed, k_table)
    assert (k_table[0] == 0).all() and k_table.shape == (17, 16)
    names = {name for name, _ in model.named_buffers()}
    assert names and all(name.endswith(("q_pos_embed", "k_pos_embed")) for name in names)


def test_multiway_routes_each_position_to_its_modality_copy() -> None:
    torch.manual_seed(3)
    layer = MultiwayNetwork(lambda: torch.nn.Linear(4, 3))
    x = torch.randn(2, 5, 4)
    image_mask = torch.tensor([[0, 1, 1, 0, 0], [1, 1, 1, 0, 1]], dtype=torch.bool)
    mixed = layer(x, Route.from_mask(image_mask))
    expected = torch.where(image_mask[..., None], layer.multiway[1](x), layer.multiway[0](x))
    assert torch.allclose(mixed, expected, atol=1e-6)
    assert Route.from_mask(torch.ones_like(image_mask)).mode == "image"
    assert Route.from_mask(torch.zeros_like(image_mask)).mode == "text"
    all_image = layer(x, Route.from_mask(torch.ones_like(image_mask)))
    assert torch.allclose(all_image, layer.multiway[1](x), atol=1e-6)
    assert torch.allclose(layer(x, Route.from_mask(None)), layer.multiway[0](x), atol=1e-6)

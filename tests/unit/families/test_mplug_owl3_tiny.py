"""Native mPLUG-Owl3 without the reference fixture: pure functions and a tiny local model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from PIL import Image  # noqa: E402

from iqa_ray.backends.families.mplug_owl3 import image_processing as ip  # noqa: E402
from iqa_ray.backends.families.mplug_owl3 import processing as pr  # noqa: E402
from iqa_ray.backends.families.mplug_owl3.modeling import (  # noqa: E402
    MplugOwl3ForCausalLM,
    register_auto_classes,
)
from iqa_ray.backends.families.mplug_owl3.tiny import build_tiny_checkpoint  # noqa: E402


def random_image(width: int, height: int, seed: int) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


# ------------------------------------------------------------------------ pure functions


def test_anchor_rule_prefers_the_matching_aspect_ratio() -> None:
    anchors = ip.GRID_SQU_6
    assert anchors[ip.select_anchor(500, 500)] == (2, 2)  # square anchor: IoU 1
    assert anchors[ip.select_anchor(1000, 250)] == (1, 4)
    assert anchors[ip.select_anchor(250, 1000)] == (4, 1)
    assert anchors[ip.select_anchor(300, 100)] == (1, 3)
    # ties go to the first anchor
    assert ip.select_anchor(64, 64, anchors=((1, 1), (1, 1))) == 0


def test_crop_image_tiles_then_global_view() -> None:
    image = random_image(50, 30, seed=1)
    crops = ip.crop_image(image, image_size=16)
    rows, cols = crops.grid
    assert crops.pixel_values.shape == (rows * cols + 1, 3, 16, 16)
    assert crops.pixel_values.dtype == torch.float32
    full = ip.normalize(image.resize((cols * 16, rows * 16), Image.BICUBIC))
    for index in range(rows * cols):
        r, c = divmod(index, cols)
        tile = full[:, r * 16 : (r + 1) * 16, c * 16 : (c + 1) * 16]
        assert torch.equal(crops.pixel_values[index], tile)
    assert torch.equal(crops.pixel_values[-1], ip.normalize(image.resize((16, 16), Image.BICUBIC)))
    assert crops.pixel_values.min() >= -1.0 and crops.pixel_values.max() <= 1.0
    as_array = ip.crop_image(np.asarray(image), image_size=16)
    assert torch.equal(as_array.pixel_values, crops.pixel_values)


def test_normalize_maps_0_and_255_to_minus_one_and_one() -> None:
    image = Image.fromarray(np.array([[[0, 255, 0]]], dtype=np.uint8))
    assert ip.normalize(image)[:, 0, 0].tolist() == [-1.0, 1.0, -1.0]


def test_cut_prompt_layout() -> None:
    text = pr.cut_prompt(2, 3)
    lines = text.split("\n")
    assert lines[0] == "Cut to 2 rows 3 columns with a global view"
    assert lines[1] == "subimg(0,0)<|image|> subimg(0,1)<|image|> subimg(0,2)<|image|>"
    assert lines[2].startswith("subimg(1,0)<|image|>")
    assert lines[3] == "global_view<|image|>"
    assert text.count("<|image|>") == 2 * 3 + 1


def test_cut_shape_pairing_reference_quirk_and_fix() -> None:
    grids = [(2, 3), (3, 1)]
    assert pr.cut_shapes_for_placeholders(grids, "reference") == [(2, 3), (1, 1), (3, 1), (1, 1)]
    assert pr.cut_shapes_for_placeholders(grids, "per_image") == grids
    with pytest.raises(ValueError):
        pr.cut_shapes_for_placeholders(grids, "other")  # type: ignore[arg-type]


def test_expand_messages_consumes_shapes_across_messages() -> None:
    messages = [
        {"role": "user", "content": "<|image|> a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "<|image|> c"},
    ]
    out = pr.expand_messages(messages, [(1, 3), (2, 2)])
    assert out[0]["content"].startswith("Cut to 1 rows 3 columns")
    assert out[2]["content"].startswith("Cut to 2 rows 2 columns")
    with pytest.raises(ValueError):
        pr.expand_placeholders("<|image|><|image|>", [(1, 1)])


def test_chat_text_drops_the_answer_prefix_by_default() -> None:
    messages = [
        {"role": "user", "content": "Q?"},
        {"role": "assistant", "content": "The quality of the image is "},
    ]
    head = "<|im_start|>system\n<|im_end|>\n<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\n"
    assert pr.build_chat_text(messages) == head
    assert pr.build_chat_text(messages[:1]) == head
    kept = pr.build_chat_text(messages, drop_last_assistant_content=False)
    assert kept == head + "The quality of the image is "
    system = pr.build_chat_text([{"role": "system", "content": "S"}, *messages[:1]])
    assert system.startswith("<|im_start|>system\nS<|im_end|>")


def test_tokenize_with_placeholders_marks_first_token_of_each() -> None:
    def encode(text: str) -> list[int]:
        return [ord(ch) for ch in text]

    text = "ab<|image|>c<|image|><|image|>"
    ids, starts = pr.tokenize_with_placeholders(encode, text, "<|image|>")
    marker = encode("<|image|>")
    assert ids == encode("ab") + marker + encode("c") + marker + marker
    assert starts == [2, 2 + len(marker) + 1, 2 + 2 * len(marker) + 1]
    assert all(ids[s : s + len(marker)] == marker for s in starts)


def test_media_offset_counts_starts_strictly_before() -> None:
    offset = pr.media_offset_from_starts([1, 3], 6)
    assert offset.tolist() == [0, 0, 1, 1, 2, 2]


# ------------------------------------------------------------------------ tiny checkpoint


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny_owl3"), seed=3)


@pytest.fixture(scope="module")
def tiny(tiny_dir: Path) -> MplugOwl3ForCausalLM:
    model, info = MplugOwl3ForCausalLM.from_pretrained(
        tiny_dir, dtype=torch.float32, output_loading_info=True
    )
    assert info["missing_keys"] == set() and info["unexpected_keys"] == set()
    return model.eval()


@pytest.fixture(scope="module")
def proc(tiny_dir: Path) -> pr.MplugOwl3Processor:
    return pr.MplugOwl3Processor.from_pretrained(tiny_dir)


def last_logits(model: MplugOwl3ForCausalLM, inputs: dict) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs, logits_to_keep=1).logits[:, -1]


def test_saved_config_is_native(tiny_dir: Path) -> None:
    config = json.loads((tiny_dir / "config.json").read_text())
    assert config["model_type"] == "mplugowl3"
    assert config["architectures"] == ["MplugOwl3ForCausalLM"]
    assert "auto_map" not in config


def test_processor_reads_checkpoint_settings(proc: pr.MplugOwl3Processor) -> None:
    assert proc.image_size == 28
    assert len(proc.encode("<|image|>")) == 1  # an added special token in this tokenizer
    assert len({proc.word_id(w) for w in ("Yes", "No", "Good", "Poor")}) == 4
    with pytest.raises(ValueError):
        proc.word_id("Yes No")


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_save_reload_in_each_dtype(tiny, tiny_dir, proc, tmp_path, dtype) -> None:
    torch_dtype = getattr(torch, dtype)
    rounded = MplugOwl3ForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        for param in rounded.parameters():
            param.copy_(param.to(torch_dtype).float())
    rounded.to(torch_dtype).save_pretrained(tmp_path)
    reloaded, info = MplugOwl3ForCausalLM.from_pretrained(
        tmp_path, dtype=torch.float32, output_loading_info=True
    )
    assert info["missing_keys"] == set() and info["unexpected_keys"] == set()
    inputs = proc("<|image|> Good or poor?", [random_image(40, 20, seed=5)])
    torch.testing.assert_close(
        last_logits(reloaded.eval(), inputs), last_logits(rounded.float(), inputs)
    )


def test_auto_classes_registration_is_idempotent(tiny_dir: Path) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM

    register_auto_classes()
    register_auto_classes()
    assert type(AutoConfig.from_pretrained(tiny_dir)).__name__ == "MplugOwl3Config"
    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    assert isinstance(model, MplugOwl3ForCausalLM)


def _mixed_batch() -> tuple[list, list]:
    wide, tall = random_image(60, 20, 11), random_image(20, 70, 12)
    square = random_image(30, 30, 13)
    prompts = [
        [
            {"role": "user", "content": "<|image|><|image|> Good or poor?"},
            {"role": "assistant", "content": "The quality of the image is "},
        ],
        "<|image|> Yes or no",
        "No image, a longer text prompt here: good or poor, yes or no?",
        "<|image|><|image|><|image|> Three images: Good?",
    ]
    images = [[tall, wide], [square], [], [square, wide, tall]]
    return prompts, images


@pytest.mark.parametrize("pairing", ["reference", "per_image"])
def test_batched_equals_one_by_one(tiny, tiny_dir, pairing) -> None:
    proc = pr.MplugOwl3Processor.from_pretrained(tiny_dir, pair_cut_shapes=pairing)
    prompts, images = _mixed_batch()
    batch = proc.prepare(prompts, images)
    lengths = batch.attention_mask.sum(1).tolist()
    assert len(set(lengths)) == len(prompts) and len(set(batch.num_crops.tolist())) > 2
    with torch.no_grad():
        batched = tiny(**batch.model_inputs()).logits
    for row, (prompt, row_images) in enumerate(zip(prompts, images, strict=True)):
        single = proc.prepare(prompt, row_images)
        assert single.crops_seen[0] == batch.crops_seen[row]
        with torch.no_grad():
            alone = tiny(**single.model_inputs()).logits[0]
        real = batched[row, batched.shape[1] - lengths[row] :]
        torch.testing.assert_close(real, alone, atol=1e-5, rtol=1e-5)


def test_crop_visibility_follows_media_offset(tiny, proc) -> None:
    """Crop n changes only positions after its placeholder start; text before sees no image."""
    images = [random_image(60, 20, 21), random_image(20, 60, 22)]
    batch = proc.prepare("Rate <|image|> and <|image|> now.", images)
    inputs = batch.model_inputs()
    starts = batch.placeholder_starts[0]
    with torch.no_grad():
        base = tiny(**inputs).logits[0]
        text_only = tiny(input_ids=inputs["input_ids"]).logits[0]
        torch.testing.assert_close(base[: starts[0] + 1], text_only[: starts[0] + 1])
        assert (base[starts[0] + 1 :] - text_only[starts[0] + 1 :]).abs().max() > 1e-3
        crop = 4  # a crop whose placeholder starts after the first few
        changed = dict(inputs)
        changed["pixel_values"] = inputs["pixel_values"].clone()
        changed["pixel_values"][crop] = -inputs["pixel_values"][crop]
        moved = tiny(**changed).logits[0]
    edge = starts[crop] + 1
    torch.testing.assert_close(moved[:edge], base[:edge])
    assert (moved[edge:] - base[edge:]).abs().max() > 1e-3


def test_image_embeds_path_equals_pixel_path(tiny, proc) -> None:
    prompts, images = _mixed_batch()
    inputs = proc(prompts, images)
    with torch.no_grad():
        embeds = tiny.encode_images(inputs["pixel_values"])
    by_embeds = {k: v for k, v in inputs.items() if k != "pixel_values"}
    torch.testing.assert_close(
        last_logits(tiny, by_embeds | {"image_embeds": embeds}), last_logits(tiny, inputs)
    )


def test_bad_inputs_raise(tiny, proc) -> None:
    prompts, images = _mixed_batch()
    inputs = proc(prompts, images)
    right_padded = dict(inputs)
    right_padded["attention_mask"] = inputs["attention_mask"].flip(1)
    with pytest.raises(ValueError, match="LEFT padding"):
        tiny(**right_padded)
    wrong_counts = dict(inputs)
    wrong_counts["num_crops"] = inputs["num_crops"].flip(0)
    with pytest.raises(ValueError):
        tiny(**wrong_counts)
    with pytest.raises(ValueError, match="placeholders"):
        proc.prepare("<|image|> one marker", [random_image(20, 20, 1)] * 2)


def test_bfloat16_forward_is_finite(tiny_dir, proc) -> None:
    model = MplugOwl3ForCausalLM.from_pretrained(tiny_dir, dtype=torch.bfloat16).eval()
    prompts, images = _mixed_batch()
    logits = last_logits(model, proc(prompts, images))
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()

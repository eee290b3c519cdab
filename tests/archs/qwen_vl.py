"""Tiny random-weight Qwen2-VL and Qwen2.5-VL models, built on the spot for tests.

SCORES FROM THESE MODELS MEAN NOTHING: the weights are random. Each builder saves a model of
the real transformers class (``Qwen2VLForConditionalGeneration`` /
``Qwen2_5_VLForConditionalGeneration``, a few hundred thousand parameters), a tiny BPE
tokenizer with the Qwen special tokens, and the real processor (``Qwen2VLProcessor`` /
``Qwen2_5_VLProcessor`` with ``Qwen2VLImageProcessor`` and ``Qwen2VLVideoProcessor``) into one
folder, loadable with ``AutoModelForImageTextToText`` / ``AutoProcessor``.

The image and video processors need torchvision; where it is missing, construction fails.
Images are resized to a small pixel budget (``MIN_PIXELS``..``MAX_PIXELS``, multiples of
``patch_size * merge_size`` = 28), so each image becomes 1 to 12 tokens, with non-square
grids (mrope's height and width positions differ).

Written for transformers 5.17 to 5.23: only constructor keywords both versions accept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.archs.common import build_bpe_tokenizer, finish

# Special tokens of the Qwen2-VL family, in their order in the real vocabulary.
QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",  # pad (and the config's bos, as in the real checkpoints)
    "<|im_start|>",
    "<|im_end|>",  # eos
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# Qwen-style template: every image (then every video) first, then the text, no system turn.
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% endif %}"
    "{% endfor %}"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>{% endif %}"
    "{% endfor %}"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}"
    "{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

PATCH_SIZE = 14
MERGE_SIZE = 2
TEMPORAL_PATCH_SIZE = 2
_FACTOR = PATCH_SIZE * MERGE_SIZE  # 28: resized sides are multiples of this
MIN_PIXELS = _FACTOR * _FACTOR  # at least one token
MAX_PIXELS = _FACTOR * _FACTOR * 12  # at most 12 tokens per image

# Text model: head_dim 16, so mrope_section must sum to 8 (temporal, height, width).
# initializer_range 0.1 (default 0.02): with the default, wrong positions (1-D instead of
# mrope) move the logits by ~1e-3 only; with 0.1 by ~0.4, so a 1e-4 equality test sees them.
_TEXT: dict[str, Any] = {
    "initializer_range": 0.1,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 1024,
    "rope_parameters": {
        "rope_type": "default",
        "rope_theta": 1000000.0,
        "mrope_section": [2, 3, 3],
    },
}


def build_qwen_tokenizer(path: Path) -> Any:
    """Save a tiny tokenizer with the Qwen special tokens into ``path`` and load it back."""
    return build_bpe_tokenizer(
        path,
        QWEN_SPECIAL_TOKENS,
        pad_token="<|endoftext|>",
        eos_token="<|im_end|>",
        extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"},
        corpus=("system\nuser\nassistant\n", "user\n", "assistant\n"),
    )


def _token_ids(tokenizer: Any) -> dict[str, int]:
    """Config ids of the special tokens, read from the tokenizer."""
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    return {
        "pad_token_id": ids["<|endoftext|>"],
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
    }


def _text_config(tokenizer: Any) -> dict[str, Any]:
    ids = _token_ids(tokenizer)
    return {
        **_TEXT,
        "rope_parameters": dict(_TEXT["rope_parameters"]),
        "vocab_size": len(tokenizer),
        "pad_token_id": ids["pad_token_id"],
        "bos_token_id": ids["bos_token_id"],
        "eos_token_id": ids["eos_token_id"],
    }


def _mm_token_ids(tokenizer: Any) -> dict[str, int]:
    ids = _token_ids(tokenizer)
    keys = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
    return {k: ids[k] for k in keys}


def _save(path: Path, model: Any, processor_class: Any, tokenizer: Any) -> Path:
    """Save the model, the real processor (image + video) and the smoke marker."""
    from transformers import Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    # Fresh dicts: transformers 5.17 writes min_pixels/max_pixels into the shared class-level
    # ``size`` default when they are passed as keywords.
    pixels = {"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS}
    common = {
        "patch_size": PATCH_SIZE,
        "temporal_patch_size": TEMPORAL_PATCH_SIZE,
        "merge_size": MERGE_SIZE,
    }
    image_processor = Qwen2VLImageProcessor(size=dict(pixels), **common)
    video_processor = Qwen2VLVideoProcessor(size=dict(pixels), **common)
    processor = processor_class(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=QWEN_CHAT_TEMPLATE,
    )
    return finish(path, model, processor)


def _build(path: Path, tokenizer: Any, vision: dict[str, Any], classes: tuple, seed: int) -> Path:
    """Config from the text and vision settings, random weights from ``seed``, then save."""
    import torch

    config_class, model_class, processor_class = classes
    config = config_class(
        text_config=_text_config(tokenizer),
        vision_config=vision,
        tie_word_embeddings=False,
        **_mm_token_ids(tokenizer),
    )
    torch.manual_seed(seed)
    model = model_class(config).eval()
    return _save(path, model, processor_class, tokenizer)


def build_tiny_qwen2_vl(path: str | Path, *, seed: int = 0) -> Path:
    """Build and save a ~214k-parameter Qwen2-VL (2-block ViT, 2-layer LM).

    Returns:
        The folder, loadable with ``AutoModelForImageTextToText`` / ``AutoProcessor``.
    """
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = build_qwen_tokenizer(path)
    vision = {
        "depth": 2,
        "embed_dim": 32,
        "hidden_size": _TEXT["hidden_size"],  # the merger's output: the LM's width
        "mlp_ratio": 2,
        "num_heads": 2,
        "in_channels": 3,
        "patch_size": PATCH_SIZE,
        "spatial_merge_size": MERGE_SIZE,
        "temporal_patch_size": TEMPORAL_PATCH_SIZE,
    }
    classes = (Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor)
    return _build(path, tokenizer, vision, classes, seed)


def build_tiny_qwen2_5_vl(path: str | Path, *, seed: int = 0) -> Path:
    """Build and save a ~218k-parameter Qwen2.5-VL (2-block windowed ViT, 2-layer LM).

    The vision window is 56 pixels (2x2 merged tokens), so images of more than 2x2 tokens
    run the windowed blocks on several windows; block 1 is a full-attention block.

    Returns:
        The folder, loadable with ``AutoModelForImageTextToText`` / ``AutoProcessor``.
    """
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
    )

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = build_qwen_tokenizer(path)
    vision = {
        "depth": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 2,
        "in_channels": 3,
        "out_hidden_size": _TEXT["hidden_size"],  # the merger's output: the LM's width
        "patch_size": PATCH_SIZE,
        "spatial_merge_size": MERGE_SIZE,
        "temporal_patch_size": TEMPORAL_PATCH_SIZE,
        "window_size": 2 * _FACTOR,
        "fullatt_block_indexes": [1],
        "tokens_per_second": 2,
    }
    classes = (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor)
    return _build(path, tokenizer, vision, classes, seed)

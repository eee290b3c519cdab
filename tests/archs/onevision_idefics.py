"""Tiny random-weight LLaVA-OneVision and Idefics3 (SmolVLM-style) models, built on the spot.

SCORES FROM THESE MODELS MEAN NOTHING: the weights are random. Each builder saves a model of the
real transformers class (``LlavaOnevisionForConditionalGeneration`` /
``Idefics3ForConditionalGeneration``, a few hundred thousand parameters), a tiny BPE tokenizer
with the special tokens its processor expects, and the real processor into one folder, loadable
with ``AutoModelForImageTextToText`` / ``AutoProcessor``.

The configurations mirror ``llava-hf/llava-onevision-qwen2-0.5b-ov-hf`` and
``HuggingFaceTB/SmolVLM-256M-Instruct``, shrunk:

* OneVision: SigLIP tower (no CLS token, ``vision_feature_select_strategy="full"``, last
  layer), 32x32 tiles of 8x8 patches (16 tokens per tile), anyres tiling over a few
  ``image_grid_pinpoints`` up to 4x3 tiles with ``vision_aspect_ratio="anyres_max_9"`` (so the
  largest grids are pooled down, as 6x6 grids are in the real model), an ``image_newline``
  token per row; prompts with several images use one base tile per image plus a newline.
  Qwen2 text model, tied embeddings, ``<|im_start|>``/``<|im_end|>`` template.
* Idefics3: Idefics3 vision tower, 32x32 tiles of 8x8 patches, pixel shuffle with
  ``scale_factor=2`` (4 tokens per tile), image splitting on: an image is resized to a
  longest edge of 128 (4 tiles, as 2048 = 4 x 512 in SmolVLM), split into up to 4x4 tiles
  plus a global tile. Llama text model, tied embeddings, ``User:``/``Assistant:`` template.

The OneVision processor includes a video processor and both default image processors use
torchvision; where torchvision is missing, transformers falls back to the PIL image
processors, but ``LlavaOnevisionVideoProcessor`` cannot be built, so the OneVision builder
fails there.

Written for transformers 5.17 to 5.23: only constructor keywords both versions accept.
"""

from __future__ import annotations

from pathlib import Path

from tests.archs.common import build_bpe_tokenizer, finish

# ---- shared --------------------------------------------------------------------------------

_VISION = {  # both towers: 2 layers, 32 wide, 32x32 tiles of 8x8 patches
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "image_size": 32,
    "patch_size": 8,
}
_TEXT = {  # both text models: 2 layers, 64 wide, head_dim 16, grouped-query attention
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": True,
}
TILE = _VISION["image_size"]
PATCH = _VISION["patch_size"]


# ---- LLaVA-OneVision -----------------------------------------------------------------------

OV_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>")
# The llava-onevision-qwen2 template: images, then videos, then each text after a newline;
# no system turn; the generation prompt opens the assistant turn and ends with a newline.
# (Chat templates render with trim_blocks, which drops a newline right after a block tag, so
# those newlines are written as Jinja string escapes.)
OV_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }} "
    "{% if message['content'] is string %}{{ '\\n' + message['content'] }}"
    "{% else %}"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}<image>{% endif %}"
    "{% endfor %}"
    "{% for item in message['content'] %}{% if item['type'] == 'video' %}<video>{% endif %}"
    "{% endfor %}"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'text' %}{{ '\\n' + item['text'] }}{% endif %}"
    "{% endfor %}"
    "{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Tile grids (height, width) up to 4x3: an 80x100 image picks 96x128, whose 12x15 unpadded
# feature grid exceeds anyres_max_9 and is pooled by the model (and counted by the processor).
OV_GRID_PINPOINTS = [
    [TILE * r, TILE * c]
    for r, c in ((1, 1), (1, 2), (2, 1), (2, 2), (2, 3), (3, 2), (3, 3), (3, 4), (4, 3))
]
OV_TOKENS_PER_TILE = (TILE // PATCH) ** 2  # SigLIP has no CLS token: every patch is a token


def build_tiny_llava_onevision(path: str | Path, *, seed: int = 0) -> Path:
    """Build and save a tiny ``LlavaOnevisionForConditionalGeneration`` (SigLIP + Qwen2).

    Returns:
        The folder, loadable with ``AutoModelForImageTextToText`` / ``AutoProcessor``.
    """
    import torch
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
        Qwen2Config,
        SiglipVisionConfig,
    )

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = build_bpe_tokenizer(
        path, OV_SPECIAL_TOKENS, pad_token="<|endoftext|>", eos_token="<|im_end|>",
        extra_special_tokens={"image_token": "<image>", "video_token": "<video>"},
        corpus=("user", "assistant", "system", "You are a helpful assistant."),
    )
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    video_id = tokenizer.convert_tokens_to_ids("<video>")
    vision = SiglipVisionConfig(**_VISION, vision_use_head=False)
    text = Qwen2Config(
        vocab_size=len(tokenizer), **_TEXT, rms_norm_eps=1e-6,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    config = LlavaOnevisionConfig(
        vision_config=vision, text_config=text, image_token_index=image_id,
        video_token_index=video_id, projector_hidden_act="gelu",
        vision_feature_select_strategy="full", vision_feature_layer=-1,
        image_grid_pinpoints=OV_GRID_PINPOINTS, vision_aspect_ratio="anyres_max_9",
        multimodal_projector_bias=True, tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlavaOnevisionForConditionalGeneration(config).eval()

    siglip_norm = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
    image_processor = LlavaOnevisionImageProcessor(
        size={"height": TILE, "width": TILE}, image_grid_pinpoints=OV_GRID_PINPOINTS,
        do_pad=True, do_convert_rgb=True, resample=3, **siglip_norm,  # 3: bicubic
    )
    video_processor = LlavaOnevisionVideoProcessor(
        size={"height": TILE, "width": TILE}, resample=3, **siglip_norm,
    )
    processor = LlavaOnevisionProcessor(
        image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor,
        num_image_tokens=OV_TOKENS_PER_TILE, vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_9", chat_template=OV_CHAT_TEMPLATE,
    )
    return finish(path, model, processor)


# ---- Idefics3 (SmolVLM-style) --------------------------------------------------------------

IDEFICS3_SCALE_FACTOR = 2
# Tokens per tile after the pixel shuffle: (32 / 8)^2 / 2^2.
IDEFICS3_IMAGE_SEQ_LEN = (TILE // PATCH) ** 2 // IDEFICS3_SCALE_FACTOR**2
IDEFICS3_LONGEST_EDGE = 4 * TILE  # SmolVLM: 2048 = 4 x 512, so at most 4x4 tiles + global
IDEFICS3_SPECIAL_TOKENS = (
    "<|endoftext|>",  # unk
    "<|im_start|>",  # bos
    "<|im_end|>",  # pad
    "<fake_token_around_image>",
    "<image>",
    "<end_of_utterance>",  # eos
    "<global-img>",
    *(f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)),
)
# The SmolVLM-Instruct template, images moved before the text: "User:<image>...<image>text"
# (a colon without a space when the turn starts with an image, as in SmolVLM); the
# generation prompt is "Assistant:" without a trailing space.
IDEFICS3_CHAT_TEMPLATE = (
    "<|im_start|>"
    "{% for message in messages %}"
    "{{ message['role'] | capitalize }}"
    "{% if message['content'] is string %}: {{ message['content'] }}"
    "{% else %}"
    "{% set images = message['content'] | selectattr('type', 'equalto', 'image') | list %}"
    "{% if images %}:{% else %}: {% endif %}"
    "{% for item in images %}<image>{% endfor %}"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}"
    "{% endif %}"
    "<end_of_utterance>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


def build_tiny_idefics3(path: str | Path, *, seed: int = 0) -> Path:
    """Build and save a tiny ``Idefics3ForConditionalGeneration`` (SmolVLM-style, Llama text).

    Returns:
        The folder, loadable with ``AutoModelForImageTextToText`` / ``AutoProcessor``.
    """
    import torch
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessor,
        Idefics3Processor,
        Idefics3VisionConfig,
        LlamaConfig,
    )

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = build_bpe_tokenizer(
        path, IDEFICS3_SPECIAL_TOKENS, bos_token="<|im_start|>", eos_token="<end_of_utterance>",
        pad_token="<|im_end|>", unk_token="<|endoftext|>",
        corpus=("User:", "Assistant:", "User: Assistant:"),
    )
    vision = Idefics3VisionConfig(**_VISION)
    text = LlamaConfig(
        vocab_size=len(tokenizer), **_TEXT, rms_norm_eps=1e-5,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    config = Idefics3Config(
        vision_config=vision, text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        scale_factor=IDEFICS3_SCALE_FACTOR, tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = Idefics3ForConditionalGeneration(config).eval()

    image_processor = Idefics3ImageProcessor(
        do_resize=True, size={"longest_edge": IDEFICS3_LONGEST_EDGE},
        max_image_size={"longest_edge": TILE}, do_image_splitting=True, do_pad=True,
        resample=1,  # Lanczos, as SmolVLM
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
    )
    processor = Idefics3Processor(
        image_processor=image_processor, tokenizer=tokenizer,
        image_seq_len=IDEFICS3_IMAGE_SEQ_LEN, chat_template=IDEFICS3_CHAT_TEMPLATE,
    )
    return finish(path, model, processor)

"""Random-weight LLaVA-architecture models of published sizes, built in memory for speed tests.

Random weights are enough to time the GPU stage: the work per token does not depend on the
weights. Nothing is downloaded: the tokenizer is the project's tiny locally trained one (its
ids fit any vocabulary); the shapes follow the published configs.

SCORES FROM THESE MODELS MEAN NOTHING.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

# name -> (vision config kwargs, text model type, text config kwargs, llava kwargs)
ARCHES: dict[str, dict[str, Any]] = {
    # llava-hf/llava-1.5-7b-hf: CLIP ViT-L/14-336 + Llama-2-7B (576 image tokens).
    "llava-1.5-7b": {
        "vision": dict(
            model_type="clip_vision_model",
            hidden_size=1024,
            intermediate_size=4096,
            num_hidden_layers=24,
            num_attention_heads=16,
            image_size=336,
            patch_size=14,
            projection_dim=768,
        ),
        "text": dict(
            model_type="llama",
            hidden_size=4096,
            intermediate_size=11008,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=32,
            vocab_size=32064,
            max_position_embeddings=4096,
        ),
        "llava": dict(vision_feature_layer=-2, vision_feature_select_strategy="default"),
        "extra_image_tokens": 1,
    },
    # llava-hf/llava-interleave-qwen-0.5b-hf (the project's default model id): SigLIP
    # so400m/14-384 + Qwen1.5-0.5B-sized text model (729 image tokens).
    "llava-interleave-qwen-0.5b": {
        "vision": dict(
            model_type="siglip_vision_model",
            hidden_size=1152,
            intermediate_size=4304,
            num_hidden_layers=26,
            num_attention_heads=16,
            image_size=384,
            patch_size=14,
        ),
        "text": dict(
            model_type="qwen2",
            hidden_size=1024,
            intermediate_size=2816,
            num_hidden_layers=24,
            num_attention_heads=16,
            num_key_value_heads=16,
            vocab_size=151646,
            max_position_embeddings=32768,
            tie_word_embeddings=True,
        ),
        "llava": dict(vision_feature_layer=-1, vision_feature_select_strategy="full"),
        "extra_image_tokens": 0,
    },
    # Small enough for a 2-core CPU, big enough that matrix work (not Python) dominates.
    "cpu-small": {
        "vision": dict(
            model_type="clip_vision_model",
            hidden_size=128,
            intermediate_size=256,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=224,
            patch_size=14,
            projection_dim=128,
        ),
        "text": dict(
            model_type="qwen2",
            hidden_size=384,
            intermediate_size=1024,
            num_hidden_layers=4,
            num_attention_heads=6,
            num_key_value_heads=2,
            vocab_size=1024,
            max_position_embeddings=4096,
        ),
        "llava": dict(vision_feature_layer=-1, vision_feature_select_strategy="default"),
        "extra_image_tokens": 1,
    },
}


@dataclass(frozen=True)
class ParamCounts:
    """Parameters applied per token: language model (no embedding table), vision tower +
    projector (per patch); and the vision tokens each image costs."""

    language: int
    vision: int
    vision_tokens_per_image: int


def build_processor(arch: str, folder: Path) -> Any:
    """A LLaVA processor with the arch's image size and the tiny tokenizer (saved in ``folder``)."""
    from transformers import (
        AutoTokenizer,
        CLIPImageProcessorPil,
        LlavaProcessor,
        SiglipImageProcessorPil,
    )

    from iqa_ray.devtools.smoke import CHAT_TEMPLATE, build_tokenizer

    spec = ARCHES[arch]
    size = spec["vision"]["image_size"]
    build_tokenizer(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if spec["vision"]["model_type"] == "siglip_vision_model":
        images = SiglipImageProcessorPil(size={"height": size, "width": size})
    else:
        images = CLIPImageProcessorPil(
            size={"shortest_edge": size}, crop_size={"height": size, "width": size}
        )
    return LlavaProcessor(
        image_processor=images,
        tokenizer=tokenizer,
        patch_size=spec["vision"]["patch_size"],
        vision_feature_select_strategy=spec["llava"]["vision_feature_select_strategy"],
        chat_template=CHAT_TEMPLATE,
        num_additional_image_tokens=spec["extra_image_tokens"],
    )


def llava_config(arch: str, image_token_id: int, pad_token_id: int) -> Any:
    """The LlavaConfig of ``arch`` (published shapes)."""
    from transformers import CONFIG_MAPPING, LlavaConfig

    spec = ARCHES[arch]
    vision = dict(spec["vision"])
    text = dict(spec["text"])
    vision_config = CONFIG_MAPPING[vision.pop("model_type")](**vision)
    text_config = CONFIG_MAPPING[text.pop("model_type")](pad_token_id=pad_token_id, **text)
    side = spec["vision"]["image_size"] // spec["vision"]["patch_size"]
    return LlavaConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=image_token_id,
        image_seq_length=side * side,
        **spec["llava"],
    )


def build_model(arch: str, processor: Any, device: str, dtype: Any, attn: str | None = None) -> Any:
    """Random-weight model of ``arch`` on ``device`` ("meta" allocates nothing)."""
    import torch
    from transformers import LlavaForConditionalGeneration

    tok = processor.tokenizer
    config = llava_config(arch, tok.convert_tokens_to_ids("<image>"), tok.pad_token_id)
    kwargs = {"attn_implementation": attn} if attn else {}
    torch.manual_seed(0)
    with torch.device(device):
        model = LlavaForConditionalGeneration._from_config(config, dtype=dtype, **kwargs)
    return model.eval()


def param_counts(model: Any) -> ParamCounts:
    """Per-token parameter counts of a LLaVA model (works on the meta device too)."""
    inner = model.model
    language = sum(p.numel() for p in inner.language_model.parameters())
    language -= inner.language_model.get_input_embeddings().weight.numel()
    vision = sum(p.numel() for p in inner.vision_tower.parameters())
    vision += sum(p.numel() for p in inner.multi_modal_projector.parameters())
    vcfg = model.config.vision_config
    tokens = (vcfg.image_size // vcfg.patch_size) ** 2 + (
        1 if vcfg.model_type == "clip_vision_model" else 0
    )
    return ParamCounts(language, vision, tokens)

"""Tiny random-weight vision-language models built on the spot, for tests and plumbing demos.

SCORES FROM THESE MODELS MEAN NOTHING: the weights are random. They exist so the real loading
and inference code (``from_pretrained`` on a local folder, chat templates, several images per
prompt, left padding, next-token logits) can run on machines with no model hub access.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

SMOKE_WARNING = (
    "SMOKE MODEL: random weights built on the spot; its scores MEAN NOTHING. "
    "Use it to try the plumbing only, never to judge images."
)

# Words every built-in prompt reads; each becomes one token of the tiny tokenizer, both at the
# start of a turn and after a space.
_WORDS = [
    "excellent", "good", "fair", "poor", "bad",
    "Excellent", "Good", "Fair", "Poor", "Bad",
    "Yes", "No", "yes", "no",
    "inferior", "worse", "similar", "better", "superior",
    "Inferior", "Worse", "Similar", "Better", "Superior",
    "high", "low",
]
_CORPUS = [
    "How would you rate the quality of this image?",
    "The quality of the image is",
    "Do these two images describe the same object? Yes or no",
    "The visual quality of the first image is poor. How about the visual quality of the "
    "second image. Good or poor?",
    "Compared with the first image, what is your quality rating for second image?",
    "The quality of the second image is",
    "USER: ASSISTANT: system user assistant",
]
# A LLaVA-1.5-style template: images first, then the question, then "ASSISTANT:".
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: "
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<image>\n{% endif %}"
    "{% endfor %}"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %} {% elif message['role'] == 'assistant' %}ASSISTANT: "
    "{% for item in message['content'] %}{% if item['type'] == 'text' %}{{ item['text'] }}"
    "{% endif %}{% endfor %}</s>{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


MARKER = "SMOKE_MODEL_SCORES_MEAN_NOTHING.txt"


def is_smoke_model(model_id: str) -> bool:
    """True when ``model_id`` is a local folder built by this module (random weights)."""
    return (Path(model_id.removeprefix("file://")) / MARKER).exists()


def build_tokenizer(path: Path) -> None:
    """Train a tiny byte-level BPE tokenizer where every rating word is a single token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = ["<pad>", "<s>", "</s>", "<image>"]
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    words = " ".join(_WORDS)
    # Repeat the words at turn starts and after spaces so BPE merges each into one token.
    corpus = _CORPUS * 20 + [words, " " + words, "\n" + "\n".join(_WORDS)] * 50
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        extra_special_tokens={"image_token": "<image>"},
        padding_side="left",
    )
    fast.save_pretrained(path)


def build_tiny_llava(path: str | Path, *, seed: int = 0, image_size: int = 32) -> Path:
    """Build and save a ~200k-parameter LLaVA (2-layer CLIP tower, 2-layer Qwen2 LM).

    Returns:
        The folder, loadable with ``AutoModelForImageTextToText`` / ``AutoProcessor``.
    """
    import torch
    from transformers import (
        AutoTokenizer,
        CLIPImageProcessorPil,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    build_tokenizer(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    patch = 8
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(_tiny_llava_config(tokenizer, image_size, patch)).eval()
    model.save_pretrained(path)
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
    )
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=patch,
        vision_feature_select_strategy="default", chat_template=CHAT_TEMPLATE,
        num_additional_image_tokens=1,
    )
    processor.save_pretrained(path)
    (path / MARKER).write_text(SMOKE_WARNING + "\n")
    return path


def _tiny_llava_config(tokenizer: Any, image_size: int, patch: int) -> Any:
    """A LLaVA config of a 2-layer CLIP tower (width 32) and a 2-layer Qwen2 LM (width 64)."""
    from transformers import CLIPVisionConfig, LlavaConfig, Qwen2Config

    vision = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        image_size=image_size, patch_size=patch, projection_dim=32,
    )
    text = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    n_image_tokens = (image_size // patch) ** 2
    return LlavaConfig(
        vision_config=vision, text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_seq_length=n_image_tokens, vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )

"""Tiny random-weight CLIP and backbone configs for tests and plumbing demos.

SCORES FROM THESE MODELS MEAN NOTHING (random weights). They let the real loading code
(``CLIPModel`` / ``CLIPProcessor.from_pretrained`` on a folder) run without a model hub.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from iqa_ray.devtools.smoke import MARKER, SMOKE_WARNING

# A 2-stage ResNet of width 8/16: about 6k parameters, fast on CPU.
TINY_RESNET: dict[str, Any] = {
    "model_type": "resnet",
    "config": {"embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1],
               "layer_type": "basic", "num_channels": 3},
}


def _char_vocab() -> dict[str, int]:
    """CLIP-style vocabulary: the byte-level alphabet, each also as an end-of-word token."""
    from tokenizers import pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokens = ["<|startoftext|>", "<|endoftext|>", *alphabet, *(c + "</w>" for c in alphabet)]
    return {token: i for i, token in enumerate(tokens)}


_TINY_TOWER = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
               "num_attention_heads": 2}


def build_tiny_clip(path: str | Path, *, seed: int = 0, image_size: int = 32) -> Path:
    """Build and save a ~60k-parameter CLIP (2-layer text and vision towers, width 32).

    The tokenizer is a real ``CLIPTokenizer`` with a character vocabulary and no merges, so
    every prompt tokenizes (one token per character) and loads back with ``from_pretrained``.

    Returns:
        The folder, loadable with ``CLIPModel`` / ``CLIPProcessor``.
    """
    return build_clip(path, text=_TINY_TOWER, vision={**_TINY_TOWER, "patch_size": 8},
                      projection_dim=16, image_size=image_size, seed=seed)


def build_clip(path: str | Path, *, text: dict[str, Any], vision: dict[str, Any],
               projection_dim: int, image_size: int, seed: int = 0) -> Path:
    """Build and save a random-weight CLIP with the given tower shapes (see build_tiny_clip)."""
    import torch
    import transformers as tf

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    vocab = _char_vocab()
    tokenizer = tf.CLIPTokenizer(vocab=vocab, merges=[])
    eos = vocab["<|endoftext|>"]
    config = tf.CLIPConfig(
        text_config={**text, "vocab_size": len(vocab), "max_position_embeddings": 77,
                     "bos_token_id": vocab["<|startoftext|>"], "eos_token_id": eos,
                     "pad_token_id": eos},
        vision_config={**vision, "image_size": image_size},
        projection_dim=projection_dim,
    )
    torch.manual_seed(seed)
    tf.CLIPModel(config).eval().save_pretrained(path)
    image_processor = tf.CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size})
    tf.CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(path)
    (path / MARKER).write_text(SMOKE_WARNING + "\n")
    return path

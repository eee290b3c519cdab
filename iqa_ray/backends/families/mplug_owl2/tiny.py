"""A tiny random mPLUG-Owl2 checkpoint (model, SentencePiece tokenizer, processor config) built
locally with this package's ``save_pretrained``, for tests and smoke runs.

It checks plumbing (loading through the backend, batching, prefix sharing, the Ray pipeline),
not agreement with the reference: the reference fixture does that. Scores mean nothing.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import torch

from iqa_ray.backends.families.mplug_owl2.configuration import MplugOwl2Config
from iqa_ray.backends.families.mplug_owl2.modeling import MplugOwl2ForCausalLM

# Every word a built-in method reads: each must be one SentencePiece piece (checked on build).
WORDS = (
    "excellent", "good", "fair", "poor", "bad", "inferior", "worse", "similar", "better",
    "superior", "Yes", "No", "Good", "Poor",
)  # fmt: skip
_CORPUS = (
    "USER: How would you rate the quality of this image?",
    "ASSISTANT: The quality of the image is good.",
    "Compared with the first image, what is your quality rating for second image?",
    "The quality of the second image is better.",
    "Do these two images describe the same object? Yes or no",
    "The visual quality of the first image is poor. How about the visual quality of the "
    "second image. Good or poor?",
)
IMAGE_SIZE = 56  # 4x4 patches of 14 px: the abstractor's grid must be image_size / patch_size


def build_tokenizer(folder: Path) -> int:
    """Train a tiny byte-fallback BPE ``tokenizer.model`` into ``folder``; returns its size.

    Raises:
        RuntimeError: a word of :data:`WORDS` is not a single piece.
    """
    import sentencepiece as spm

    sentences = [*_CORPUS, *(" ".join(WORDS),)] * 10 + [f"{w} {w} {w}" for w in WORDS] * 20
    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_writer=buffer, vocab_size=500,
        model_type="bpe", byte_fallback=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        remove_extra_whitespaces=False, normalization_rule_name="identity",
        hard_vocab_limit=False, minloglevel=2,
    )
    (folder / "tokenizer.model").write_bytes(buffer.getvalue())
    sp = spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
    split = [w for w in WORDS if len(sp.encode(w)) != 1]
    if split:
        raise RuntimeError(f"tiny tokenizer splits {split}: raise its vocabulary")
    return int(sp.get_piece_size())


def tiny_config(vocab_size: int) -> MplugOwl2Config:
    """2 decoder layers, hidden 32; 56 px images, 8 queries -> 9 image tokens."""
    visual = {
        "visual_model": {
            "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
            "num_attention_heads": 2, "image_size": IMAGE_SIZE, "patch_size": 14,
            "layer_norm_eps": 1e-6,
        },
        "visual_abstractor": {
            "num_learnable_queries": 8, "hidden_size": 16, "num_hidden_layers": 1,
            "num_attention_heads": 2, "intermediate_size": 24, "encoder_hidden_size": 16,
            "grid_size": IMAGE_SIZE // 14, "layer_norm_eps": 1e-6,
        },
    }  # fmt: skip
    return MplugOwl2Config(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, rms_norm_eps=1e-5, visual_config=visual,
    )


def spread_weights(model: torch.nn.Module, seed: int) -> None:
    """Redraw every parameter so that each part of the model moves the logits (the default
    initialisation leaves the outputs of a tiny model near zero)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=gen)
            if param.ndim == 1:
                param.copy_(1 + 0.2 * noise if name.endswith("weight") else 0.05 * noise)
            elif "embed_tokens" in name:
                param.copy_(noise)
            elif param.ndim in (2, 4):
                gain = 3.0 if name.startswith("lm_head") else 1.0
                param.copy_(gain * noise / np.sqrt(param[0].numel()))
            else:
                param.copy_(0.5 * noise)


def build_tiny_mplug_owl2(path: str | Path, *, seed: int = 0) -> Path:
    """Write a tiny random mPLUG-Owl2 checkpoint folder (float32 safetensors) to ``path``."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = build_tokenizer(folder)
    torch.manual_seed(seed)
    model = MplugOwl2ForCausalLM(tiny_config(vocab)).eval()
    spread_weights(model, seed + 1)
    model.save_pretrained(folder)
    write_processor_files(folder, IMAGE_SIZE)
    return folder


def write_processor_files(folder: Path, image_size: int) -> None:
    """``preprocessor_config.json`` (CLIP settings at ``image_size``, bicubic) and a
    ``special_tokens_map.json`` padding with ``<unk>`` as the published checkpoints do."""
    settings = {"size": image_size, "crop_size": image_size, "resample": 3, "do_center_crop": True}
    (folder / "preprocessor_config.json").write_text(json.dumps(settings))
    (folder / "special_tokens_map.json").write_text(json.dumps({"pad_token": "<unk>"}))

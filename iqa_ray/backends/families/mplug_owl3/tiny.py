"""A tiny random mPLUG-Owl3 checkpoint (model + tokenizer) built locally, for tests and smoke runs.

Built with this package's own classes, so it checks plumbing (loading, batching, processor), not
agreement with the reference; the reference fixture does that.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from .configuration import MplugOwl3Config
from .modeling import MplugOwl3ForCausalLM

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
# Every word a Q-Debias or rating prompt reads becomes one token, at a turn start or after a space.
_WORDS = ("Yes", "No", "Good", "Poor", "good", "poor", "yes", "no", "assistant", "user", "system")


def build_tokenizer(path: Path, image_token_special: bool = True) -> None:
    """Train a tiny byte-level BPE tokenizer with the chatml specials and save it to ``path``.

    Args:
        path: output folder.
        image_token_special: add ``<|image|>`` as one special token (True) or leave it ordinary
            text split into several tokens (False, as in the reference fixture).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = [*SPECIAL_TOKENS, *(["<|image|>"] if image_token_special else [])]
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [" ".join(_WORDS), " ".join(f" {w}" for w in _WORDS)] * 50
    corpus += ["Cut to rows columns with a global view subimg global_view quality image"] * 20
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<|endoftext|>",
        eos_token="<|im_end|>",
        additional_special_tokens=special[1:],
    )
    fast.save_pretrained(str(path))


def tiny_config(vocab_size: int, **overrides: object) -> MplugOwl3Config:
    """A few-kilobyte config: 28-px crops (4 patches), GQA, hyper layers 1 and 3 (1-based)."""
    vision = {
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": 28,
        "patch_size": 14,
    }
    values: dict[str, object] = {
        "vision_config": vision,
        "vocab_size": vocab_size,
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "hyper_layers": [1, 3],
        "rope_theta": 10000.0,
        "image_size": 28,
        "patch_size": 14,
    }
    values.update(overrides)
    return MplugOwl3Config(**values)


@torch.no_grad()
def randomize(model: torch.nn.Module, seed: int = 0) -> None:
    """Re-draw every parameter at unit scale, so that each path visibly moves the logits.

    Matrices N(0, 1/fan_in), biases N(0, 0.05^2), norm weights 1 + N(0, 0.2^2), embedding tables
    and the pooling probe N(0, 1).
    """
    gen = torch.Generator().manual_seed(seed)
    for name, param in sorted(model.named_parameters()):
        noise = torch.randn(param.shape, generator=gen, dtype=torch.float32)
        if name.endswith("bias"):
            value = 0.05 * noise
        elif param.dim() == 1:
            value = 1.0 + 0.2 * noise
        elif "embed" in name or name.endswith("probe"):
            value = noise
        else:
            value = noise / math.sqrt(param[0].numel())
        param.copy_(value.to(param.dtype))


def build_tiny_checkpoint(
    path: Path, seed: int = 0, image_token_special: bool = True, dtype: torch.dtype = torch.float32
) -> Path:
    """Write a tiny random mPLUG-Owl3 checkpoint (config, safetensors, tokenizer) to ``path``.

    Returns:
        ``path``, loadable by ``MplugOwl3ForCausalLM.from_pretrained`` and
        ``MplugOwl3Processor.from_pretrained``.
    """
    from transformers import AutoTokenizer

    path.mkdir(parents=True, exist_ok=True)
    build_tokenizer(path, image_token_special)
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    config = tiny_config(
        len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = MplugOwl3ForCausalLM(config)
    randomize(model, seed)
    model.to(dtype).save_pretrained(str(path))
    return path

"""Helpers of the tiny test architectures: a locally trained tokenizer, saving, counting.

SCORES FROM THESE MODELS MEAN NOTHING: the weights are random.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from iqa_ray.devtools.smoke import _CORPUS, _WORDS, MARKER, SMOKE_WARNING


def build_bpe_tokenizer(
    path: Path,
    special_tokens: tuple[str, ...],
    *,
    pad_token: str,
    eos_token: str,
    bos_token: str | None = None,
    unk_token: str | None = None,
    extra_special_tokens: dict[str, str] | None = None,
    corpus: tuple[str, ...] = (),
    vocab_size: int = 640,
) -> Any:
    """Train, save and reload a byte-level BPE where every rating word is a single token
    (at a turn start, after a newline and after a space), like ``iqa_ray.devtools.smoke``.

    ``special_tokens`` come first in the vocabulary (ids 0..n-1), in order, as special added
    tokens that are never split. Returns the tokenizer loaded back from ``path``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    words = " ".join(_WORDS)
    lines = [*_CORPUS, *corpus] * 20 + [words, " " + words, "\n" + "\n".join(_WORDS)] * 50
    tok.train_from_iterator(lines, trainer=trainer)
    kwargs: dict[str, Any] = {"pad_token": pad_token, "eos_token": eos_token}
    if bos_token is not None:
        kwargs["bos_token"] = bos_token
    if unk_token is not None:
        kwargs["unk_token"] = unk_token
    if extra_special_tokens:
        kwargs["extra_special_tokens"] = dict(extra_special_tokens)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, padding_side="left", **kwargs)
    fast.save_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"
    for token in special_tokens:  # every special token is one id of its own
        ids = tokenizer.encode(token, add_special_tokens=False)
        if len(ids) != 1:
            raise RuntimeError(f"special token {token!r} encodes to {ids}")
    return tokenizer


def finish(path: Path, model: Any, processor: Any) -> Path:
    model.save_pretrained(path)
    processor.save_pretrained(path)
    (path / MARKER).write_text(SMOKE_WARNING + "\n")
    return path


def count_parameters(model: Any) -> int:
    """Distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in model.parameters())

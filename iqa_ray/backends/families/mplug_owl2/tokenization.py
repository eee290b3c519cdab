"""The LLaMA SentencePiece tokenizer exactly as the reference's slow ``LlamaTokenizer`` encodes
plain prompt text (transformers 5's tokenizers-backed ``LlamaTokenizer`` does not: it drops the
dummy-prefix space before a chunk that starts with a space, e.g. ``" ASSISTANT"``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import sentencepiece as spm

SPECIAL_TOKEN_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token")


def _token_text(value: Any) -> str | None:
    if isinstance(value, dict):
        return value.get("content")
    return value


class LlamaSentencePieceTokenizer:
    """Encodes with ``sentencepiece`` directly: ``[BOS] + sp.encode(text)``.

    For text without special-token strings this is what transformers 4.x's slow
    ``LlamaTokenizer`` returns, with ``legacy`` true or false (both add the dummy prefix once
    at the start of the text). Text that contains a special token's string (``<s>``, ``</s>``,
    ``<unk>``) is refused rather than encoded differently from the reference.

    Args:
        model_file: path of ``tokenizer.model``.
        add_bos_token: prepend BOS in ``encode`` (``tokenizer_config.json``'s ``add_bos_token``).
        pad_token: the pad token's string (``None``: the unk token pads).
    """

    def __init__(
        self, model_file: str | Path, add_bos_token: bool = True, pad_token: str | None = None
    ) -> None:
        self.sp = spm.SentencePieceProcessor(model_file=str(model_file))
        self.add_bos_token = add_bos_token
        self.bos_token_id = int(self.sp.bos_id())
        self.eos_token_id = int(self.sp.eos_id())
        self.unk_token_id = int(self.sp.unk_id())
        pad_id = self.sp.piece_to_id(pad_token) if pad_token else self.unk_token_id
        self.pad_token_id = int(pad_id)
        self._specials = [
            self.sp.id_to_piece(i)
            for i in (self.bos_token_id, self.eos_token_id, self.unk_token_id)
            if i >= 0
        ]

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> LlamaSentencePieceTokenizer:
        """Load ``tokenizer.model`` plus the BOS / pad settings of the folder's JSON files.

        Raises:
            FileNotFoundError: the folder has no ``tokenizer.model``.
        """
        folder = Path(folder)
        model_file = folder / "tokenizer.model"
        if not model_file.is_file():
            raise FileNotFoundError(
                f"{model_file} is missing: mPLUG-Owl2 prompts are tokenized with the LLaMA "
                "SentencePiece model (a tokenizer.json alone gives different ids)"
            )
        settings: dict[str, Any] = {}
        for name in ("special_tokens_map.json", "tokenizer_config.json"):
            path = folder / name
            if path.is_file():
                for key, value in json.loads(path.read_text()).items():
                    if value is not None or key not in settings:
                        settings[key] = value
        return cls(
            model_file,
            add_bos_token=bool(settings.get("add_bos_token", True)),
            pad_token=_token_text(settings.get("pad_token")),
        )

    @property
    def vocab_size(self) -> int:
        """Pieces in the SentencePiece model."""
        return int(self.sp.get_piece_size())

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (BOS first when ``add_bos_token``).

        Raises:
            ValueError: ``text`` contains a special token's string.
        """
        for special in self._specials:
            if special in text:
                raise ValueError(f"prompt text contains the special token {special!r}")
        ids = [int(i) for i in self.sp.encode(text)]
        return [self.bos_token_id, *ids] if self.add_bos_token else ids

    def word_id(self, word: str) -> int:
        """The reference's id of a single answer word: ``tokenizer(word).input_ids[1]``."""
        return self.encode(word)[1 if self.add_bos_token else 0]

    def decode(self, ids: list[int]) -> str:
        """Text of ``ids`` (negative sentinel ids are skipped)."""
        return str(self.sp.decode([int(i) for i in ids if i >= 0]))

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
        """SentencePiece pieces of ``ids``."""
        return [str(self.sp.id_to_piece(int(i))) for i in ids]

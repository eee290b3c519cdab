"""Prompt text for the transformers backend: chat-template rendering and word-id resolution.

Used by the transformers backend and by the vLLM backend (which needs the same text and word
ids without loading the model through transformers).
"""

from __future__ import annotations

from typing import Any, ClassVar

from iqa_ray.backends.config import ModelConfig
from iqa_ray.backends.prompt import Prompt
from iqa_ray.errors import ConfigError


class PromptText:
    """Renders prompts with a processor's chat template and resolves words to token ids.

    Args:
        processor: a transformers processor with ``apply_chat_template`` and a ``tokenizer``.
        cfg: the model config (``word_policy``).
        source: where the model came from (named in error messages).
    """

    # Whether the rendered text depends on the images' sizes (a processor that writes a tile
    # grid per image into the prompt); else it depends only on the text and the image count.
    text_depends_on_image_sizes: ClassVar[bool] = False
    _MEMO_SIZE: ClassVar[int] = 4096

    def __init__(self, processor: Any, cfg: ModelConfig, source: str) -> None:
        self.processor, self.cfg, self.source = processor, cfg, source
        self.tokenizer = processor.tokenizer
        self._word_ids: dict[tuple[str, str], int] = {}
        self._texts: dict[tuple[Any, ...], str] = {}
        self.memo = True  # off: render and tokenize every prompt (benchmarks compare both)

    def text(self, prompt: Prompt) -> str:
        """``render(prompt)``, memoised: a batch of thousands of prompts repeats a handful of
        texts (Q-Debias: two per prior), and rendering runs a chat template each time."""
        if not self.memo:
            return self.render(prompt)
        key: tuple[Any, ...] = (prompt.question, prompt.answer_prefix, prompt.layout,
                                len(prompt.images))
        if self.text_depends_on_image_sizes:
            key += tuple(im.shape[:2] for im in prompt.images)
        found = self._texts.get(key)
        if found is None:
            if len(self._texts) >= self._MEMO_SIZE:
                self._texts.clear()
            found = self._texts[key] = self.render(prompt)
        return found

    def render(self, prompt: Prompt) -> str:
        """Chat-template text of a prompt, ending with the pre-filled answer prefix."""
        content: list[dict[str, str]] = [
            {"type": "text", "text": part} if isinstance(part, str) else {"type": "image"}
            for part in prompt.user_parts()
        ]
        messages = [{"role": "user", "content": content}]
        text = self.processor.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )
        if prompt.answer_prefix:
            sep = "" if text.endswith((" ", "\n")) else " "
            text = f"{text}{sep}{prompt.answer_prefix}"
        return text

    def word_id(self, text: str, word: str) -> int:
        """Token id the model would emit first for ``word`` right after ``text``.

        A word follows a space unless the text ends in whitespace (the start of an assistant
        turn in many templates); ids come from the loaded tokenizer, never hard-coded.
        """
        tail = text[-48:]
        key = (tail, word)
        if key not in self._word_ids:
            self._word_ids[key] = self._resolve(tail, word)
        return self._word_ids[key]

    def _resolve(self, tail: str, word: str) -> int:
        """Id of ``word`` after ``tail`` (a family may override how it is read)."""
        spaced = word if tail.endswith((" ", "\n")) or not tail else f" {word}"
        base = self.tokenizer.encode(tail, add_special_tokens=False)
        full = self.tokenizer.encode(tail + spaced, add_special_tokens=False)
        if full[: len(base)] == base:
            pieces = full[len(base):]
        else:  # a merge across the boundary: fall back to the word on its own
            pieces = self.tokenizer.encode(spaced, add_special_tokens=False)
        return self._pick_piece(pieces, spaced)

    def _pick_piece(self, pieces: list[int], spaced: str) -> int:
        """The token read for a word encoded as ``pieces``, under ``model.word_policy``."""
        if not pieces:
            raise ConfigError(f"word {spaced!r} encodes to no token with {self.source}")
        if len(pieces) > 1 and self.cfg.word_policy == "single":
            shown = [self.tokenizer.decode([p]) for p in pieces]
            raise ConfigError(
                f"word {spaced!r} is {len(pieces)} tokens {shown} for the tokenizer of "
                f"{self.source}; choose single-token words or set model.word_policy: first"
            )
        return int(pieces[0])

    def check_words(self, templates: list[Prompt]) -> None:
        """Resolve the words of every prompt shape now, so a bad word fails the actor at start."""
        for template in templates:
            text = self.text(template)
            ids = [self.word_id(text, w) for w in template.words]
            if len(set(ids)) != len(ids):
                raise ConfigError(
                    f"words {template.words} share a first token for {self.source}: "
                    "their logits cannot be told apart"
                )

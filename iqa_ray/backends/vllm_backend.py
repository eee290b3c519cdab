"""Optional vLLM backend: exact log-probabilities of the words each method reads.

vLLM's sampler reports the top-k tokens, not chosen ones. To read exactly the words a method
needs, every (prompt, word) becomes one request whose prompt is the rendered prompt followed
by the word, with ``prompt_logprobs=0``: vLLM returns the log-probability of that last prompt
token given everything before it, i.e. ``log_softmax(logits)[word]`` at the position the
transformers backend reads. The requests of one prompt differ only in their last token, so
vLLM's automatic prefix caching computes the shared part once (and, across requests, the
image/template prefixes of Q-Debias pairs and Compare2Score anchors too).

Log-probabilities equal the logits minus a per-prompt constant, so every softmax over the words
(all built-in methods, at any temperature) gives the same result as with the transformers
backend; raw values stored in ``word_logits``-style columns are log-probabilities here.

Install: ``pip install 'iqa_ray[vllm]'`` on a CUDA machine. NOT TESTED in this repository's CI
(no GPU, and no vllm wheel for its CPU torch): only the request building and result parsing
are unit-tested, with stand-in outputs. Supported models are those vLLM serves with the same
chat template and ``<image>``-style placeholders as the HF processor.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from iqa_ray.backends.batching import ForwardStats
from iqa_ray.backends.config import ModelConfig
from iqa_ray.backends.prompt import Prompt
from iqa_ray.errors import RowError
from iqa_ray.schema import ErrorCode

logger = logging.getLogger(__name__)
_INSTALL_HINT = "the vllm backend needs vLLM on a CUDA machine: pip install 'iqa_ray[vllm]'"


def word_continuation(text: str, word: str) -> str:
    """``text`` followed by ``word`` exactly as the word is read (space-led unless the text ends
    in whitespace; the rule of ``PromptText.word_id``)."""
    return text + (word if not text or text.endswith((" ", "\n")) else f" {word}")


def build_requests(
    prompts: Sequence[Prompt], texts: Sequence[str]
) -> tuple[list[dict[str, Any]], list[tuple[int, int]]]:
    """One vLLM request per (prompt, word), and its (prompt index, word index)."""
    from PIL import Image

    requests, owners = [], []
    for i, (prompt, text) in enumerate(zip(prompts, texts, strict=True)):
        images = [Image.fromarray(np.asarray(im)) for im in prompt.images]
        for j, word in enumerate(prompt.words):
            request: dict[str, Any] = {"prompt": word_continuation(text, word)}
            if images:
                request["multi_modal_data"] = {"image": images}
            requests.append(request)
            owners.append((i, j))
    return requests, owners


def collect(
    outputs: Sequence[Any], owners: Sequence[tuple[int, int]], word_ids: Sequence[Sequence[int]]
) -> list[np.ndarray | RowError]:
    """Per prompt, the log-probability of each word from its request's last prompt position.

    A request whose last prompt token is not the expected word id (the word did not stay one
    token after the prompt) fails its prompt with a ``model_error``.
    """
    values = [np.full(len(ids), np.nan) for ids in word_ids]
    errors: dict[int, RowError] = {}
    for out, (i, j) in zip(outputs, owners, strict=True):
        expected = word_ids[i][j]
        token_ids = list(out.prompt_token_ids)
        if not token_ids or token_ids[-1] != expected or not out.prompt_logprobs:
            errors[i] = RowError(
                ErrorCode.MODEL_ERROR, f"word {j} did not end its request as token {expected}"
            )
            continue
        values[i][j] = float(out.prompt_logprobs[-1][expected].logprob)
    return [errors.get(i, v) for i, v in enumerate(values)]


class VllmBackend:
    """vLLM engine plus the HF processor for rendering prompts and resolving word ids."""

    def __init__(self, cfg: ModelConfig) -> None:
        try:
            import vllm
        except ImportError as exc:
            raise ImportError(_INSTALL_HINT) from exc
        from transformers import AutoProcessor

        from iqa_ray.backends.sources import resolve_model_source
        from iqa_ray.backends.transformers.checkpoint import model_type
        from iqa_ray.backends.transformers.text import PromptText

        source = resolve_model_source(cfg)
        kwargs: dict[str, Any] = {"revision": cfg.revision} if cfg.revision else {}
        # Rendering and word resolution are the transformers backend's, without its model.
        self._text = PromptText(AutoProcessor.from_pretrained(source, **kwargs), cfg, source)
        self.family = model_type(source, cfg.revision)
        self.stats = ForwardStats()
        dtype = {
            "auto": "auto",
            "float32": "float32",
            "bfloat16": "bfloat16",
            "float16": "float16",
        }[cfg.dtype]
        options = {
            "enable_prefix_caching": True,
            "limit_mm_per_prompt": {"image": 4},
            **cfg.options,
        }
        self.llm = vllm.LLM(model=source, dtype=dtype, **kwargs, **options)
        self._params = vllm.SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)

    def prepare_image(self, image: np.ndarray) -> np.ndarray:
        """vLLM preprocesses inside its engine: the image as it is."""
        return image

    def check_words(self, templates: list[Prompt]) -> None:
        """Resolve every word of these prompt shapes (as the transformers backend does)."""
        self._text.check_words(templates)

    def next_token_logits(self, prompts: list[Prompt]) -> list[np.ndarray | RowError]:
        """Log-probabilities of each prompt's words (see the module docstring)."""
        texts = [self._text.text(p) for p in prompts]
        word_ids = [
            [self._text.word_id(t, w) for w in p.words] for p, t in zip(prompts, texts, strict=True)
        ]
        requests, owners = build_requests(prompts, texts)
        outputs = self.llm.generate(requests, self._params, use_tqdm=False)
        self.stats.add(prompts=len(prompts), forward_calls=1)
        return collect(outputs, owners, word_ids)

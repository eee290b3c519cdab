"""The five ATTIQA attributes, their (positive, negative) prompt pairs, and the CLIP-IQA maths.

Pure numpy: ``pair_probabilities`` turns image and prompt embeddings into
``s = softmax(logit_scale * [cos(x, t+), cos(x, t-)])[0]`` and ``attribute_scores`` averages the
pairs of each attribute.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import model_validator
from scipy.special import expit

from iqa_ray.settings import StrictModel

# Order is part of the contract: network heads, output columns and label tables follow it.
ATTRIBUTES: tuple[str, ...] = ("sharpness", "contrast", "brightness", "colorfulness", "noisiness")


class PromptPair(StrictModel):
    """An antonym pair: the score is P(positive) against the negative prompt.

    In YAML either ``{positive: "Sharp photo.", negative: "Blurry photo."}`` or the two-item
    list ``["Sharp photo.", "Blurry photo."]``.
    """

    positive: str
    negative: str

    @model_validator(mode="before")
    @classmethod
    def _from_list(cls, data: Any) -> Any:
        if isinstance(data, list | tuple):
            if len(data) != 2:
                raise ValueError(f"a prompt pair has 2 items (positive, negative), got {data!r}")
            return {"positive": data[0], "negative": data[1]}
        return data

    def swapped(self) -> PromptPair:
        """The same pair with the roles exchanged (its score is 1 - this pair's score)."""
        return PromptPair(positive=self.negative, negative=self.positive)


PromptTable = dict[str, tuple[PromptPair, ...]]


def _table(pairs: Mapping[str, Sequence[tuple[str, str]]]) -> PromptTable:
    return {a: tuple(PromptPair(positive=p, negative=n) for p, n in pairs[a]) for a in ATTRIBUTES}


# Paper mode: the spec's pair per attribute ("noisiness" is scored as P(clean), so every
# attribute reads "higher = more of the positive word").
DEFAULT_PROMPTS: PromptTable = _table({
    "sharpness": [("Sharp photo.", "Blurry photo.")],
    "contrast": [("High contrast photo.", "Low contrast photo.")],
    "brightness": [("Bright photo.", "Dark photo.")],
    "colorfulness": [("Colorful photo.", "Dull photo.")],
    "noisiness": [("Clean photo.", "Noisy photo.")],
})  # fmt: skip

# Candidates ranked by the selection step (jobs/select_prompts.py); the paper's own candidates
# came from an LLM and are not published in full, these are ours.
CANDIDATE_PROMPTS: PromptTable = _table({
    "sharpness": [("Sharp photo.", "Blurry photo."), ("Sharp image.", "Blurry image."),
                  ("In-focus photo.", "Out-of-focus photo."), ("Crisp photo.", "Fuzzy photo.")],
    "contrast": [("High contrast photo.", "Low contrast photo."),
                 ("High contrast image.", "Low contrast image."),
                 ("Punchy photo.", "Flat photo."), ("Vivid photo.", "Washed-out photo.")],
    "brightness": [("Bright photo.", "Dark photo."), ("Bright image.", "Dark image."),
                   ("Well-lit photo.", "Dim photo."), ("Light photo.", "Gloomy photo.")],
    "colorfulness": [("Colorful photo.", "Dull photo."), ("Colorful image.", "Colorless image."),
                     ("Vibrant photo.", "Faded photo."), ("Saturated photo.", "Grayscale photo.")],
    "noisiness": [("Clean photo.", "Noisy photo."), ("Clean image.", "Noisy image."),
                  ("Smooth photo.", "Grainy photo."), ("Noise-free photo.", "Speckled photo.")],
})  # fmt: skip


def check_prompt_table(table: Mapping[str, Sequence[PromptPair]]) -> PromptTable:
    """Validate that every attribute (and nothing else) has at least one pair; return a copy.

    Raises:
        ValueError: an unknown or missing attribute, or an attribute without pairs.
    """
    unknown = sorted(set(table) - set(ATTRIBUTES))
    missing = [a for a in ATTRIBUTES if a not in table]
    if unknown or missing:
        raise ValueError(f"prompt attributes must be exactly {list(ATTRIBUTES)}: "
                         f"unknown {unknown}, missing {missing}")
    empty = [a for a in ATTRIBUTES if not table[a]]
    if empty:
        raise ValueError(f"attributes without a prompt pair: {empty}")
    return {a: tuple(table[a]) for a in ATTRIBUTES}


def flatten_pairs(table: PromptTable) -> tuple[list[PromptPair], list[list[int]]]:
    """All pairs in attribute order, and for each attribute the indices of its pairs."""
    pairs: list[PromptPair] = []
    groups: list[list[int]] = []
    for attribute in ATTRIBUTES:
        groups.append(list(range(len(pairs), len(pairs) + len(table[attribute]))))
        pairs.extend(table[attribute])
    return pairs, groups


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float64); cosine similarity is then a dot product."""
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def pair_probabilities(
    image_emb: np.ndarray, positive_emb: np.ndarray, negative_emb: np.ndarray, logit_scale: float
) -> np.ndarray:
    """CLIP-IQA antonym score of every (image, pair): (N, D), (P, D), (P, D) -> (N, P).

    ``s = softmax(logit_scale * [cos(x, t+), cos(x, t-)])[0]``, in (0, 1).
    """
    x = unit_rows(image_emb)
    gap = x @ unit_rows(positive_emb).T - x @ unit_rows(negative_emb).T
    # softmax([a, b])[0] == sigmoid(a - b): one stable expression, no (N, P, 2) array.
    return expit(logit_scale * gap)


def attribute_scores(pair_probs: np.ndarray, groups: Sequence[Sequence[int]]) -> np.ndarray:
    """Average the pair probabilities of each attribute: (N, P) -> (N, len(groups))."""
    return np.stack([pair_probs[:, list(g)].mean(axis=1) for g in groups], axis=1)

"""Shared-prefix planning: which prompts share a computed prefix, and how long it is.

Prompts are compared as sequences of token *identities*: a text token is its id; an image
placeholder token is ``-(1 + row)`` where ``row`` is the row of that image's encoder output
in a per-call feature bank. Two prompts therefore share a prefix only where their text AND
their images agree, so the image tokens of two different pictures (which have the same
placeholder id) never count as shared. Pure Python and numpy, unit-tested without a model.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from iqa_ray.backends import Prompt

MIN_SHARED_TOKENS = 8  # a shorter common prefix (a chat header) is not worth a separate pass


@dataclass(frozen=True)
class Group:
    """Prompts computed together: ``prefix_len`` tokens once, then each member's suffix.

    Attributes:
        members: prompt indices (positions in the call's prompt list).
        prefix_len: tokens shared by every member and computed once (0 = no sharing). Always
            less than every member's length, so each member keeps at least one suffix token
            (its next-token logits come from the suffix pass).
    """

    members: tuple[int, ...]
    prefix_len: int


@dataclass(frozen=True)
class SharingPlan:
    """How a call would run, without running the language model (benchmarks, tests).

    Attributes:
        groups: the prompt groups and their shared prefix lengths.
        lengths: each prompt's full sequence length in tokens.
        distinct_images: images the vision encoder runs (the unshared path runs
            ``sum(len(p.images))``).
    """

    groups: list[Group]
    lengths: list[int]
    distinct_images: int

    @property
    def unshared_tokens(self) -> int:
        """Language-model tokens of one full pass per prompt."""
        return sum(self.lengths)

    @property
    def shared_tokens(self) -> int:
        """Language-model tokens with each group's prefix computed once."""
        return sum(self.lengths) - sum((len(g.members) - 1) * g.prefix_len for g in self.groups)


def image_key(bank_row: int) -> int:
    """Identity of the image token whose encoder output is row ``bank_row`` of the bank."""
    return -(1 + bank_row)


def bank_rows(keys: Sequence[int]) -> list[int]:
    """Bank rows of the image tokens among ``keys``, in order (text tokens skipped)."""
    return [-(1 + k) for k in keys if k < 0]


def token_keys(ids: Sequence[int], image_token_id: int, image_rows: Sequence[int]) -> list[int]:
    """Identity sequence of one prompt: placeholders take ``image_rows`` in order.

    Args:
        ids: the prompt's token ids with image placeholders expanded.
        image_token_id: the placeholder id.
        image_rows: the bank row of each placeholder, in order of appearance.

    Raises:
        ValueError: the number of placeholders differs from ``len(image_rows)``.
    """
    keys = np.asarray(ids, dtype=np.int64)
    slots = keys == image_token_id
    found = int(slots.sum())
    if found > len(image_rows):
        raise ValueError("more image placeholders than image features")
    if found < len(image_rows):
        raise ValueError("fewer image placeholders than image features")
    keys[slots] = -(1 + np.asarray(image_rows, dtype=np.int64))  # image_key, vectorised
    return keys.tolist()


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two sequences."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def group_by_prefix(
    seqs: Sequence[Sequence[int]], min_shared: int = MIN_SHARED_TOKENS
) -> list[Group]:
    """Partition prompts into groups that maximise the tokens not recomputed.

    Sorting the sequences puts every set with a long common prefix next to each other; the
    common prefix of a run of sorted sequences is the minimum of its neighbours' common
    prefixes. A dynamic programme over the sorted order then picks the cut into runs that
    saves the most tokens, ``sum((members - 1) * prefix_len)``, using only prefixes of at least
    ``min_shared`` tokens (other prompts become groups with ``prefix_len`` 0). So with a long
    system prompt shared by all, the pairs of Q-Debias (which share far more) still win.
    Cost: O(n x run length); the scan of a run stops once its prefix falls below ``min_shared``.
    """
    n = len(seqs)
    order = sorted(range(n), key=lambda i: list(seqs[i]))
    adjacent = [common_prefix_len(seqs[order[k]], seqs[order[k + 1]]) for k in range(n - 1)]
    best = [0] * (n + 1)
    start = [0] * (n + 1)  # start[j]: first sorted position of the run ending at j - 1
    shared = [0] * (n + 1)
    for j in range(1, n + 1):
        best[j], start[j], shared[j] = best[j - 1], j - 1, 0
        lcp, shortest = len(seqs[order[j - 1]]), len(seqs[order[j - 1]])
        for i in range(j - 2, -1, -1):
            lcp = min(lcp, adjacent[i])
            shortest = min(shortest, len(seqs[order[i]]))
            prefix = min(lcp, shortest - 1)
            if prefix < max(min_shared, 1):
                break
            gain = best[i] + (j - 1 - i) * prefix
            if gain > best[j]:
                best[j], start[j], shared[j] = gain, i, prefix
    groups: list[Group] = []
    j = n
    while j > 0:
        groups.append(Group(tuple(order[start[j] : j]), shared[j]))
        j = start[j]
    return groups[::-1]


def tokens_saved(groups: Sequence[Group]) -> int:
    """Tokens the grouping does not recompute, compared with one full pass per prompt."""
    return sum((len(g.members) - 1) * g.prefix_len for g in groups)


def dedupe_images(prompts: Sequence[Prompt]) -> tuple[list[np.ndarray], list[list[int]]]:
    """Each distinct image once, and per prompt the index of each of its images.

    Identity is ``Prompt.image_keys`` when given (one comparison of the pixels guards a key
    reused for other pixels), else a content hash; the same array object is matched at once.
    """
    arrays: list[np.ndarray] = []
    by_key: dict[str, int] = {}
    by_object: dict[int, int] = {}
    slots: list[list[int]] = []
    for prompt in prompts:
        row = []
        for j, image in enumerate(prompt.images):
            if id(image) not in by_object:
                key = f"key:{prompt.image_keys[j]}" if j < len(prompt.image_keys) else None
                found = by_key.get(key) if key is not None else None
                if key is None or (found is not None and not np.array_equal(arrays[found], image)):
                    digest = hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=16)
                    key = f"sha:{image.shape}:{digest.hexdigest()}"
                if key not in by_key:
                    by_key[key] = len(arrays)
                    arrays.append(image)
                by_object[id(image)] = by_key[key]
            row.append(by_object[id(image)])
        slots.append(row)
    return arrays, slots

"""Sub-batching of model work: token budgets, OOM halving, CPU/GPU overlap, work counters.

Pure Python (no torch import): the backends pass in what is device-specific (how to run a
sub-batch, how to recognise an out-of-memory error), so all of it is unit-tested on CPU.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

logger = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")


def plan_batches(costs: Sequence[int], max_rows: int, max_tokens: int | None) -> list[list[int]]:
    """Cut positions ``0..n-1`` (in the given order) into consecutive sub-batches.

    A sub-batch holds at most ``max_rows`` rows and, when ``max_tokens`` is set, at most
    ``max_tokens`` padded tokens (rows x its longest row's cost). A row that alone exceeds the
    budget goes alone: the budget limits batching, never which rows run. Sort by cost first to
    waste the least padding.
    """
    if max_rows < 1:
        raise ValueError(f"max_rows must be >= 1, got {max_rows}")
    batches: list[list[int]] = []
    current: list[int] = []
    widest = 0
    for index, cost in enumerate(costs):
        wider = max(widest, cost)
        too_many = len(current) >= max_rows
        too_big = max_tokens is not None and wider * (len(current) + 1) > max_tokens
        if current and (too_many or too_big):
            batches.append(current)
            current, wider = [], cost
        current.append(index)
        widest = wider
    if current:
        batches.append(current)
    return batches


def run_halving(
    items: list[T],
    run: Callable[[list[T]], list[R]],
    is_oom: Callable[[BaseException], bool],
    on_oom: Callable[[list[T]], None] = lambda _items: None,
) -> list[R]:
    """``run(items)``; on an out-of-memory error, halve the sub-batch and retry each half.

    Results keep the order of ``items``. A single item that still runs out of memory re-raises
    (the caller turns it into that row's error). ``on_oom`` runs between the failure and the
    retry (free the allocator cache there). The retry happens outside the ``except`` block so
    the failed attempt's traceback, and the tensors its frames hold, are released first.
    """
    try:
        return run(items)
    except Exception as exc:
        if len(items) <= 1 or not is_oom(exc):
            raise
        logger.warning(
            "out of memory on a sub-batch of %d: retrying as two halves (set "
            "stages.max_tokens_per_batch lower to avoid the retry)",
            len(items),
        )
    on_oom(items)
    middle = len(items) // 2
    return run_halving(items[:middle], run, is_oom, on_oom) + run_halving(
        items[middle:], run, is_oom, on_oom
    )


def prefetch_map(fn: Callable[[T], R], items: Iterable[T], overlap: bool) -> Iterator[R]:
    """Yield ``fn(item)`` in order; with ``overlap``, ``fn`` of the next item runs in a worker
    thread while the caller consumes the current result (CPU preprocessing of sub-batch k+1
    overlapping GPU work on sub-batch k). Exceptions surface at the item that raised them.
    """
    if not overlap:
        yield from (fn(item) for item in items)
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="iqa-prefetch") as pool:
        pending: Future[R] | None = None
        for item in items:
            upcoming = pool.submit(fn, item)
            if pending is not None:
                yield pending.result()
            pending = upcoming
        if pending is not None:
            yield pending.result()


@dataclass
class ForwardStats:
    """Work a backend did: what the benchmarks turn into passes/s and FLOPs.

    Attributes:
        prompts: logical passes answered (one per prompt, shared or not).
        forward_calls: language-model forward calls (sub-batches).
        tokens: language-model tokens computed (no padding, no reused prefix).
        padded_tokens: token slots computed, padding included.
        images_encoded: images run through the vision encoder.
        cpu_s: process CPU seconds spent in ``next_token_logits`` (all threads).
        device_cpu_s: the part of ``cpu_s`` spent in device work: model calls (vision encoder,
            language model), the embedding lookup and pixel normalisation (on a CPU device the
            compute itself; on a GPU, kernel launches). The rest is host work that leaves a
            GPU waiting: preprocessing, rendering, tokenizing, planning.
    """

    prompts: int = 0
    forward_calls: int = 0
    tokens: int = 0
    padded_tokens: int = 0
    images_encoded: int = 0
    cpu_s: float = 0.0
    device_cpu_s: float = 0.0

    def add(self, **counts: float) -> None:
        """Add to the named counters."""
        for name, value in counts.items():
            current = getattr(self, name)
            setattr(self, name, current + type(current)(value))

    @contextmanager
    def cpu_time(self, counter: str) -> Iterator[None]:
        """Add the process CPU time of the ``with`` block to ``counter``."""
        start = time.process_time()
        try:
            yield
        finally:
            self.add(**{counter: time.process_time() - start})

    @property
    def padding_fraction(self) -> float:
        """Share of computed token slots that were padding."""
        return 1.0 - self.tokens / self.padded_tokens if self.padded_tokens else 0.0

    def reset(self) -> None:
        """Zero every counter."""
        for name, value in asdict(self).items():
            setattr(self, name, type(value)(0))

    def as_dict(self) -> dict[str, Any]:
        """The counters as a plain dict."""
        return asdict(self)


def is_out_of_memory(exc: BaseException) -> bool:
    """True for torch's out-of-memory error (``torch.cuda.OutOfMemoryError``).

    False when torch was never imported (nothing can have run out of device memory then).
    """
    torch = sys.modules.get("torch")
    oom = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    return oom is not None and isinstance(exc, oom)

"""A deterministic CPU stand-in for a VLM, for pipeline-wiring tests only (never model tests)."""

from __future__ import annotations

import glob
import hashlib
import os
import time
from pathlib import Path

import numpy as np
from pydantic import Field

from iqa_ray.backends.prompt import Prompt
from iqa_ray.errors import RowError
from iqa_ray.settings import StrictModel


class FakeOptions(StrictModel):
    """Failure injection for the fake backend (``model.options`` with ``backend: fake``; crash-
    and-resume tests only, never result-affecting)."""

    fail_after_batches: int | None = Field(None, ge=0, description="Fail after N batches.")
    fail_delay_s: float = Field(0.0, ge=0, description="Seconds to hang before failing.")
    fail_after_glob: str | None = Field(
        None, description="Local glob: fail only once a file matches (a committed score file); "
        "until then calls wait up to `fail_delay_s` and succeed."
    )
    delay_s: float = Field(0.0, ge=0, description="Seconds each model batch takes (a slow model).")
    crash_process_once_marker: str | None = Field(
        None,
        description="Marker file: the first actor to reach batch `crash_on_batch` creates it and "
        "kills its own process (os._exit); later lives see the marker and never crash.",
    )
    crash_on_batch: int = Field(1, ge=1, description="Model batch (1-based) the crash happens on.")


class FakeBackend:
    """Logits from image statistics and a stable hash of the text: same input, same output.

    Args:
        fail_after_batches: raise a RuntimeError (an infrastructure failure that stops the job)
            on the call after this many calls; used to test crash-and-resume.
        fail_delay_s: hang this long before failing, as a dying device often does, so that
            earlier batches reach the bucket first.
        fail_after_glob: a local glob; with it, a call past ``fail_after_batches`` fails only
            once a file matches (a committed score file): it waits up to ``fail_delay_s`` for
            one and, if none appears, succeeds so the work goes on. Ray Data emits a task's
            rows only when the whole task ends, so a failure inside the first task would
            leave nothing behind; this way a crash test always leaves partial output.
        delay_s: sleep this long in every call (a slow model: lets a test kill a run mid-way).
        crash_marker: a file path; on call ``crash_on_batch`` the first process to get there
            creates it and exits at once (``os._exit``, as an OOM-killed worker does). A
            restarted actor finds the marker and carries on, so the crash happens once.
        crash_on_batch: the 1-based call that crashes.
    """

    def __init__(
        self,
        fail_after_batches: int | None = None,
        fail_delay_s: float = 0.0,
        *,
        delay_s: float = 0.0,
        crash_marker: str | None = None,
        crash_on_batch: int = 1,
        fail_after_glob: str | None = None,
    ) -> None:
        self._fail_after = fail_after_batches
        self._fail_delay_s = fail_delay_s
        self._fail_after_glob = fail_after_glob
        self._delay_s = delay_s
        self._crash_marker = crash_marker
        self._crash_on_batch = crash_on_batch
        self._calls = 0
        self.family = "fake"

    @classmethod
    def from_options(cls, options: dict[str, object]) -> FakeBackend:
        """A fake backend configured by ``model.options`` (see :class:`FakeOptions`)."""
        o = FakeOptions.model_validate(options)
        return cls(
            o.fail_after_batches, o.fail_delay_s, delay_s=o.delay_s,
            crash_marker=o.crash_process_once_marker, crash_on_batch=o.crash_on_batch,
            fail_after_glob=o.fail_after_glob,
        )

    def _should_fail(self) -> bool:
        """Hang up to ``fail_delay_s``; with a glob, fail only once it matches."""
        deadline = time.monotonic() + self._fail_delay_s
        while True:
            if self._fail_after_glob and glob.glob(self._fail_after_glob):
                return True
            if time.monotonic() >= deadline:
                return self._fail_after_glob is None
            time.sleep(min(0.1, self._fail_delay_s))

    def check_words(self, templates: list[Prompt]) -> None:
        """Every word is acceptable to the fake backend."""

    def prepare_image(self, image: np.ndarray) -> np.ndarray:
        """No preprocessing to move: the image as it is."""
        return image

    def next_token_logits(self, prompts: list[Prompt]) -> list[np.ndarray | RowError]:
        """Deterministic logits in [-4, 4]; brighter, busier images get higher first words."""
        self._calls += 1
        time.sleep(self._delay_s)
        if self._crash_marker is not None and self._calls == self._crash_on_batch:
            self._crash_once(Path(self._crash_marker))
        if self._fail_after is not None and self._calls > self._fail_after and self._should_fail():
            raise RuntimeError(f"FakeBackend: injected failure after {self._fail_after} batches")
        return [self._one(p) for p in prompts]

    @staticmethod
    def _crash_once(marker: Path) -> None:
        """Kill this process unless a previous life already did (exclusive create = one winner)."""
        try:
            marker.parent.mkdir(parents=True, exist_ok=True)
            with open(marker, "x") as handle:
                handle.write(f"{os.getpid()}\n")
        except FileExistsError:
            return
        os._exit(17)  # no cleanup, no exception: the process is simply gone mid-batch

    @staticmethod
    def _one(prompt: Prompt) -> np.ndarray:
        stats = [float(im.mean()) / 255.0 + float(im.std()) / 128.0 for im in prompt.images]
        level = float(np.mean(stats)) if stats else 0.5
        out = np.empty(len(prompt.words), dtype=np.float64)
        for j, word in enumerate(prompt.words):
            text = prompt.question if prompt.layout is None else prompt.layout
            digest = hashlib.sha256(f"{text}|{word}".encode()).digest()
            base = int.from_bytes(digest[:4], "big") / 2**32 - 0.5
            out[j] = 4.0 * np.tanh(base + (len(prompt.words) - 2 * j) * (level - 0.5))
        return out

"""The fake backend's failure injection (what the crash-and-resume tests rely on)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from iqa_ray.backends import Prompt
from iqa_ray.backends.fake import FakeBackend

PROMPT = Prompt(images=(np.full((8, 8, 3), 128, np.uint8),), question="q?", answer_prefix="",
                words=("good", "poor"))


def test_fail_after_batches_fails_on_the_next_call() -> None:
    backend = FakeBackend(fail_after_batches=2)
    assert len(backend.next_token_logits([PROMPT, PROMPT])) == 2
    backend.next_token_logits([PROMPT])
    with pytest.raises(RuntimeError, match="injected failure after 2 batches"):
        backend.next_token_logits([PROMPT])


def test_fail_after_glob_keeps_working_until_a_file_matches(tmp_path: Path) -> None:
    backend = FakeBackend(fail_after_batches=1, fail_delay_s=0.2,
                          fail_after_glob=str(tmp_path / "*.parquet"))
    backend.next_token_logits([PROMPT])
    # Past the threshold but nothing committed yet: the calls wait, then succeed.
    for _ in range(3):
        out = backend.next_token_logits([PROMPT])
        assert out[0].shape == (2,)
    (tmp_path / "part-0.parquet").write_bytes(b"")
    with pytest.raises(RuntimeError, match="injected failure"):
        backend.next_token_logits([PROMPT])

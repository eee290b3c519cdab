"""The compare2score method without Ray: prompts, reduction by the maths, calibration warning."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from iqa_ray.backends.config import ModelConfig
from iqa_ray.backends.fake import FakeBackend
from iqa_ray.errors import ConfigError
from iqa_ray.images import ImageConfig
from iqa_ray.methods import ImageBatch, MethodContext, get_method
from iqa_ray.methods.compare2score.anchor_set import (
    Anchor,
    AnchorSet,
    Calibration,
    anchor_file,
    sha256_hex,
    write_anchor_set,
)
from iqa_ray.methods.compare2score.maths import (
    OFFICIAL_ANCHOR_MATRIX,
    map_estimate,
    soft_comparison,
)
from iqa_ray.methods.compare2score.method import ANSWER_PREFIX, QUESTION, WORDS
from iqa_ray.scoring.config import RunConfig

MODEL_ID = "org/model"


@pytest.fixture
def anchor_uri(tmp_path: Path) -> str:
    """Five anchors of rising brightness with the official P_a, calibrated for MODEL_ID."""
    data = []
    for k in range(5):
        buf = io.BytesIO()
        Image.new("RGB", (40 + 4 * k, 30), (40 * k + 20, 60, 90)).save(buf, format="PNG")
        data.append(buf.getvalue())
    anchors = tuple(Anchor(str(k), f"file:///src/{k}.png", anchor_file(k, f"{k}.png"),
                           sha256_hex(d)) for k, d in enumerate(data))
    calibration = Calibration(MODEL_ID, None, QUESTION, ANSWER_PREFIX, WORDS, 100.0)
    uri = str(tmp_path / "anchors")
    anchor_set = AnchorSet(anchors, OFFICIAL_ANCHOR_MATRIX.copy(), calibration)
    write_anchor_set(uri, anchor_set, data, None)
    return uri


def _context(model_id: str = MODEL_ID, max_side: int | None = None) -> MethodContext:
    backend = FakeBackend()
    model = ModelConfig(id=model_id, backend="fake")
    return MethodContext(vlm_factory=lambda: backend, model=model,
                         image=ImageConfig(max_side=max_side))


def _batch(n: int) -> ImageBatch:
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (20 + k, 24, 3), dtype=np.uint8) for k in range(n)]
    return ImageBatch(np.arange(100, 100 + n, dtype=np.int64), images)


def test_prompts_put_the_anchor_first_with_stable_keys(anchor_uri: str) -> None:
    method = get_method("compare2score")({"anchors": anchor_uri})
    method.setup(_context(max_side=32))
    batch = _batch(2)
    first, second = method.prompts(batch, 0), method.prompts(batch, 1)
    assert len(first) == 5
    assert [p.image_keys[0] for p in first] == [p.image_keys[0] for p in second]
    assert len({p.image_keys[0] for p in first}) == 5
    assert first[0].image_keys[1] == "100" and second[0].image_keys[1] == "101"
    assert first[2].images[1] is batch.query[0]
    # Anchors are resized like queries (max side 32) and keep their order (widths 40..56).
    assert [p.images[0].shape[1] for p in first] == [32] * 5
    assert [int(p.images[0][0, 0, 0]) for p in first] == [20, 60, 100, 140, 180]
    assert (first[0].question, first[0].answer_prefix, first[0].words) == (
        QUESTION, ANSWER_PREFIX, WORDS)


def test_scores_follow_the_maths_on_the_whole_batch(anchor_uri: str) -> None:
    ctx = _context()
    method = get_method("compare2score")({"anchors": anchor_uri})
    method.setup(ctx)
    batch = _batch(4)
    result = method.score_batch(batch, ctx)
    assert result.errors == [None] * 4
    for row in range(4):
        logits = np.stack(ctx.vlm.next_token_logits(method.prompts(batch, row)))
        b = soft_comparison(logits, 100.0)
        np.testing.assert_allclose(result.columns["b"][row], b, rtol=0, atol=1e-15)
        single = map_estimate(OFFICIAL_ANCHOR_MATRIX, b)
        assert result.columns["score"][row] == pytest.approx(single.score[0], abs=1e-9)
        assert result.columns["converged"][row] is True
    adam = get_method("compare2score")({"anchors": anchor_uri, "solver": "reference_adam"})
    adam.setup(ctx)
    adam_scores = np.array(adam.score_batch(batch, ctx).columns["score"])
    # The spec: the reference's 100 Adam steps land within about 0.3 points of the optimum.
    np.testing.assert_allclose(adam_scores, result.columns["score"], atol=0.5)
    assert not np.array_equal(adam_scores, result.columns["score"])


def test_calibration_mismatch_warns_once_per_setup(
    anchor_uri: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="iqa_ray.methods.compare2score.method")
    get_method("compare2score")({"anchors": anchor_uri}).setup(_context())
    assert not caplog.records
    method = get_method("compare2score")({"anchors": anchor_uri, "temperature": 50.0})
    method.setup(_context(model_id="other/model"))
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert "model_id: anchors 'org/model', run 'other/model'" in message
    assert "temperature: anchors 100.0, run 50.0" in message


def test_params_are_validated() -> None:
    base = {"input": {"uri": "/in"}, "output": {"uri": "/out"}}
    with pytest.raises(ConfigError, match="looks like a credential"):
        RunConfig.from_dict({**base, "methods": [{"method": "compare2score", "params": {
            "anchors": "s3://a", "anchor_storage_options": {"secret": "x"}}}]})
    with pytest.raises(ConfigError, match="words"):
        RunConfig.from_dict({**base, "methods": [{"method": "compare2score", "params": {
            "anchors": "s3://a", "words": ["worse", "better"]}}]})
    with pytest.raises(ConfigError, match="anchors"):
        RunConfig.from_dict({**base, "methods": ["compare2score"]})
    with pytest.raises(ConfigError, match="no anchor set"):
        get_method("compare2score")({"anchors": "/nonexistent/set"}).setup(_context())

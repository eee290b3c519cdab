"""The ``input:`` section for corpora: which keys apply to which format, clear errors, and
fingerprints (objects runs keep theirs, so existing runs resume)."""

from __future__ import annotations

from typing import Any

import pytest

from iqa_ray.errors import ConfigError
from iqa_ray.scoring.config import RunConfig

OUT = {"uri": "s3://out/"}


def make(source: dict[str, Any], **extra: Any) -> RunConfig:
    return RunConfig.from_dict({"input": source, "output": OUT, **extra})


def test_objects_fingerprints_are_those_of_iqa_ray_0_2() -> None:
    """Computed by iqa_ray 0.2.0 (main at 0662d9a): a changed value would orphan every run
    started before corpora existed (a new derived run id, a refused resume)."""
    plain = make({"uri": "s3://corpus/images/"})
    assert plain.fingerprint() == (
        "9a0f8dfbd17a131f8c4589ac0337afe4109d3b10f30f266bb87187ec8f8e253d")
    listed = make({"manifest": "s3://corpus/list.parquet", "manifest_uri_column": "path",
                   "extensions": [".png"], "limit": 5},
                  model={"backend": "fake"}, methods=["qalign_levels", "qbench_binary"])
    assert listed.fingerprint() == (
        "8efbeb24a7718797fe052182eeb54192dbc65c10d49e1f70e919b31d2eb917af")
    assert set(plain.result_fields()["input"]) == {"uri", "manifest", "manifest_uri_column"}


def test_corpus_fingerprints_cover_what_makes_a_sample() -> None:
    wds = make({"format": "webdataset", "uri": "s3://c/shards/"})
    assert wds.fingerprint() != make({"uri": "s3://c/shards/"}).fingerprint()
    other_image = make({"format": "webdataset", "uri": "s3://c/shards/", "extensions": [".png"]})
    assert other_image.fingerprint() != wds.fingerprint()
    resized = make({"format": "webdataset", "uri": "s3://c/shards/", "split_bytes": 1 << 20})
    assert resized.fingerprint() == wds.fingerprint()  # how it is read, not what is scored
    table = make({"format": "parquet", "uri": "s3://c/t/"})
    assert make({"format": "parquet", "uri": "s3://c/t/", "id_column": "sid"}).fingerprint() \
        != table.fingerprint()


@pytest.mark.parametrize(("source", "message"), [
    ({"uri": "s3://x/", "id_column": "sid"}, "input.id_column applies to format"),
    ({"uri": "s3://x/", "paths": ["s3://x/a.tar"]}, "input.paths applies to format"),
    ({"format": "webdataset", "uri": "s3://x/", "limit": 3}, "input.limit does not apply"),
    ({"format": "webdataset", "uri": "s3://x/", "id_column": "a"}, "input.id_column does not"),
    ({"format": "parquet", "manifest": "s3://x/m.parquet"}, "input.manifest does not apply"),
    ({"format": "parquet"}, "set exactly one of input.uri"),
    ({"format": "webdataset", "uri": "s3://x/", "paths": ["s3://x/a.tar"]}, "exactly one"),
    ({"format": "webdataset", "paths": []}, "input.paths is empty"),
    ({"format": "webdataset", "uri": "s3://x/", "carry": ["json", ".json"]}, "distinct"),
    ({"format": "tfrecord", "uri": "s3://x/"}, "input.format"),
])
def test_keys_that_do_not_apply_are_refused(source: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make(source)


def test_a_dumped_corpus_config_loads_back() -> None:
    cfg = make({"format": "parquet", "paths": ["s3://c/a.parquet"], "id_column": "sid",
                "carry": ["caption"]})
    again = RunConfig.from_dict(cfg.model_dump(mode="json"))
    assert again == cfg and again.fingerprint() == cfg.fingerprint()

"""The configuration tree: validation messages, secrets, overrides, YAML and the fingerprint."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from iqa_ray.errors import ConfigError
from iqa_ray.scoring.config import RunConfig
from iqa_ray.settings import apply_overrides

BASE: dict[str, Any] = {
    "input": {"uri": "s3://bucket/images"},
    "output": {"uri": "s3://bucket/out"},
    "model": {"id": "org/model", "revision": "abc123"},
    "methods": [
        {"method": "qalign_levels"},
        {"method": "qbench_binary", "params": {"temperature": 100}},
    ],
}


def make(**changes: Any) -> RunConfig:
    """BASE with top-level sections replaced or merged (dicts merge one level deep)."""
    data = copy.deepcopy(BASE)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return RunConfig.from_dict(data)


def config_error(**changes: Any) -> str:
    with pytest.raises(ConfigError) as info:
        make(**changes)
    return str(info.value)


@pytest.mark.parametrize(
    ("changes", "path"),
    [
        ({"inptu": {}}, "inptu"),
        ({"input": {"uri": "s3://b/i", "extension": [".jpg"]}}, "input.extension"),
        ({"stages": {"score": {"num_gpu": 1}}}, "stages.score.num_gpu"),
        (
            {"methods": [{"method": "qalign_levels", "params": {"questoin": "?"}}]},
            "methods.0.params.questoin",
        ),
    ],
)
def test_unknown_key_names_dotted_path(changes: dict[str, Any], path: str) -> None:
    message = config_error(**changes)
    assert f"  {path}: unknown key" in message


def test_backend_options_validated_by_the_backend() -> None:
    message = config_error(model={"backend": "fake", "options": {"fail_after": 3}})
    assert "model" in message and "options.fail_after: Extra inputs are not permitted" in message
    message = config_error(model={"options": {"gpu_memory_utilization": 0.8}})
    assert "unknown transformers option(s) ['gpu_memory_utilization']" in message
    assert "'mplugowl3': ['drop_last_assistant_content', 'pair_cut_shapes']" in message
    assert make(model={"backend": "vllm", "options": {"gpu_memory_utilization": 0.8}})


@pytest.mark.parametrize(
    ("changes", "old", "new"),
    [
        ({"model": {"max_image_side": 512}}, "model.max_image_side", "image.max_side"),
        ({"stages": {"model_batch_size": 4}}, "stages.model_batch_size", "model.batch_size"),
        ({"stages": {"max_tokens_per_batch": 9}}, "stages.max_tokens_per_batch",
         "model.max_tokens_per_batch"),
        ({"model": {"vllm_options": {}}}, "model.vllm_options", "model.options"),
        ({"model": {"fake": {"delay_s": 1}}}, "model.fake", "model.options"),
    ],
)
def test_renamed_keys_say_where_they_went(changes: dict[str, Any], old: str, new: str) -> None:
    message = config_error(**changes)
    assert f"  {old}: renamed to {new}" in message


def test_fingerprint_kept_across_the_key_renames() -> None:
    """0.1 fingerprinted the downscale as model.max_image_side: 0.2 keeps that shape, so the run
    ids derived before the rename stay the same (resuming an older run keeps working)."""
    cfg = make(image={"max_side": 640})
    fields = cfg.result_fields()
    assert fields["model"]["max_image_side"] == 640 and "max_side" not in fields["image"]
    assert make(image={"max_side": 512}).fingerprint() != cfg.fingerprint()


def test_error_names_source_file(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({**BASE, "output": {"uri": "x", "rows_per_file": 0}}))
    with pytest.raises(ConfigError, match=rf"{path}[\s\S]*output\.rows_per_file"):
        RunConfig.from_yaml(path)


@pytest.mark.parametrize(("typo", "suggestion"), [("qalgn_levels", "qalign_levels"),
                                                  ("qbench_binarry", "qbench_binary")])
def test_unknown_method_did_you_mean(typo: str, suggestion: str) -> None:
    message = config_error(methods=[{"method": typo}])
    assert f"unknown method {typo!r}" in message
    assert f"did you mean {suggestion!r}" in message


def test_unknown_method_without_close_match_lists_known() -> None:
    message = config_error(methods=["zzzz"])
    assert "did you mean" not in message and "qalign_levels" in message


@pytest.mark.parametrize(
    "options",
    [
        {"key": "AKIA..."},
        {"secret": "s"},
        {"aws_secret_access_key": "s"},
        {"aws_access_key_id": "AKIA..."},
        {"token": "t"},
        {"client_kwargs": {"aws_session_token": "t"}},
        {"client_kwargs": {"password": "p"}},
        {"config_kwargs": {"nested": {"account_key": "k"}}},
    ],
)
@pytest.mark.parametrize("section", ["input", "output", "model"])
def test_credentials_in_storage_options_rejected(section: str, options: dict[str, Any]) -> None:
    base = {"input": BASE["input"], "output": BASE["output"], "model": BASE["model"]}[section]
    message = config_error(**{section: {**base, "storage_options": options}})
    assert "looks like a credential" in message
    assert f"{section}.storage_options" in message


def test_non_secret_storage_options_pass() -> None:
    options = {
        "anon": False,
        "client_kwargs": {"endpoint_url": "http://127.0.0.1:9000", "region_name": "eu-west-1"},
        "config_kwargs": {"retries": {"max_attempts": 3}},
        "s3_additional_kwargs": {"SSEKMSKeyId": "alias/key"},
    }
    cfg = make(input={"storage_options": options})
    assert cfg.input.storage_options == options


@pytest.mark.parametrize(
    "section",
    [{"uri": "s3://b/i", "manifest": "s3://b/m.csv"}, {}, {"uri": None, "manifest": None}],
    ids=["both", "none", "both-null"],
)
def test_exactly_one_input_source(section: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=r"input: .*exactly one of input\.uri"):
        RunConfig.from_dict({**BASE, "input": section})


def test_manifest_input_is_valid() -> None:
    cfg = RunConfig.from_dict({**BASE, "input": {"manifest": "s3://b/m.parquet"}})
    assert cfg.input.manifest == "s3://b/m.parquet" and cfg.input.uri is None


def test_fingerprint_stable_across_loads(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(BASE))
    first, second = RunConfig.from_yaml(path), RunConfig.from_yaml(path)
    assert first.fingerprint() == second.fingerprint()
    assert len(first.fingerprint()) == 64
    # Key order and spelled-out defaults do not matter.
    reordered = dict(reversed(list(copy.deepcopy(BASE).items())))
    reordered["methods"][0]["params"] = {"weights": [5, 4, 3, 2, 1]}
    assert RunConfig.from_dict(reordered).fingerprint() == first.fingerprint()


@pytest.mark.parametrize(
    "changes",
    [
        {"methods": [{"method": "qalign_levels", "params": {"question": "Rate it."}},
                     {"method": "qbench_binary"}]},
        {"methods": [{"method": "qalign_levels"},
                     {"method": "qbench_binary", "params": {"temperature": 1.0}}]},
        {"methods": [{"method": "qalign_levels", "name": "levels"}, {"method": "qbench_binary"}]},
        {"methods": [{"method": "qalign_levels"}]},
        {"model": {"id": "org/other-model"}},
        {"model": {"revision": "def456"}},
        {"model": {"dtype": "float32"}},
        {"image": {"min_side": 32}},
        {"input": {"uri": "s3://bucket/other-images"}},
    ],
    ids=["question", "temperature", "label", "methods", "model-id", "revision", "dtype",
         "min-side", "input-uri"],
)
def test_fingerprint_changes_with_results(changes: dict[str, Any]) -> None:
    assert make(**changes).fingerprint() != make().fingerprint()


@pytest.mark.parametrize(
    "changes",
    [
        {"stages": {"score": {"batch_size": 2, "max_actors": 3}}, "model": {"batch_size": 1}},
        {"stages": {"fetch": {"num_cpus": 2}}},
        {"output": {"rows_per_file": 7}},
        {"output": {"uri": "s3://elsewhere/out"}},
        {"retry": {"attempts": 9}},
        {"run_id": "explicit"},
        {"retry_errors": True},
        {"input": {"limit": 10}},
        {"model": {"batch_size": 2, "max_tokens_per_batch": 4096}},
    ],
    ids=["score-stage", "fetch-cpus", "rows-per-file", "output-uri", "retry", "run-id",
         "retry-errors", "limit", "model-batching"],
)
def test_fingerprint_ignores_resources(changes: dict[str, Any]) -> None:
    assert make(**changes).fingerprint() == make().fingerprint()


def test_fingerprint_ignores_backend_options() -> None:
    fake = make(model={"backend": "fake"})
    failing = make(model={"backend": "fake", "options": {"fail_after_batches": 2}})
    assert failing.fingerprint() == fake.fingerprint() != make().fingerprint()


def test_resolved_run_id() -> None:
    cfg = make()
    assert cfg.run_id is None
    assert cfg.resolved_run_id() == f"r-{cfg.fingerprint()[:12]}"
    assert make(methods=["qalign_levels"]).resolved_run_id() != cfg.resolved_run_id()
    assert make(run_id="my-run_1.0").resolved_run_id() == "my-run_1.0"


@pytest.mark.parametrize("run_id", ["../escape", "a/b", "", "-leading", "x" * 200])
def test_unsafe_run_id_rejected(run_id: str) -> None:
    assert "run_id" in config_error(run_id=run_id)


def test_overrides_are_yaml_typed_and_nested() -> None:
    data = {"output": {"uri": "s3://b/o"}, "methods": [{"method": "qalign_levels"}]}
    result = apply_overrides(
        data,
        [
            "output.rows_per_file=5",
            "retry_errors=true",
            "model.revision=0123abc",
            "model.options.fail_after_batches=3",
            "input.extensions=[.jpg, .png]",
            "run_id=2024-01-01",  # YAML would read a date: the value stays what YAML says
            "methods.0.params.question=Is it sharp?",
            "model.id=a=b",  # only the first '=' splits
        ],
    )
    assert result["output"] == {"uri": "s3://b/o", "rows_per_file": 5}
    assert result["retry_errors"] is True
    assert result["model"]["revision"] == "0123abc"
    assert result["model"]["options"] == {"fail_after_batches": 3}
    assert result["input"]["extensions"] == [".jpg", ".png"]
    assert result["methods"][0]["params"]["question"] == "Is it sharp?"
    assert result["model"]["id"] == "a=b"
    assert data == {"output": {"uri": "s3://b/o"}, "methods": [{"method": "qalign_levels"}]}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("output.rows_per_file", "a.b.c=value"),
        ("output..uri=x", "a.b.c=value"),
        ("output.uri.deeper=1", "'uri' is not a mapping"),
        ("methods.5.params.question=x", "'5' is not an index"),
        ("methods.first.name=x", "'first' is not an index"),
    ],
)
def test_bad_override_messages(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        apply_overrides(copy.deepcopy(BASE), [override])
    assert override in str(info.value)


def test_override_into_unknown_key_is_validated(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(BASE))
    cfg = RunConfig.from_yaml(path, ["stages.score.batch_size=3", "methods.1.params.temperature=2"])
    assert cfg.stages.score.batch_size == 3 and cfg.methods[1].params["temperature"] == 2.0
    with pytest.raises(ConfigError, match=r"stages\.score\.batchsize: unknown key"):
        RunConfig.from_yaml(path, ["stages.score.batchsize=3"])


def test_from_yaml_roundtrip(tmp_path: Path) -> None:
    cfg = make(run_id="round", image={"min_side": 4}, model={"batch_size": 2})
    path = tmp_path / "dumped.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    loaded = RunConfig.from_yaml(path)
    assert loaded == cfg
    assert loaded.fingerprint() == cfg.fingerprint()
    assert loaded.methods[0].params["words"] == ("excellent", "good", "fair", "poor", "bad")


def test_yaml_top_level_must_be_mapping(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        RunConfig.from_yaml(path)


def test_config_is_frozen() -> None:
    cfg = make()
    with pytest.raises(Exception, match="frozen"):
        cfg.run_id = "x"  # type: ignore[misc]


def test_duplicate_method_labels_rejected() -> None:
    message = config_error(methods=["qalign_levels", {"method": "qalign_levels"}])
    assert "unique" in message and "qalign_levels" in message
    cfg = make(methods=["qalign_levels", {"method": "qalign_levels", "name": "levels_b",
                                          "params": {"question": "Sharp?"}}])
    assert [m.name for m in cfg.methods] == ["qalign_levels", "levels_b"]


def test_method_defaults_resolved() -> None:
    spec = make(methods=["qbench_binary"]).methods[0]
    assert spec.name == "qbench_binary"
    assert spec.params["temperature"] == 100.0 and tuple(spec.params["words"]) == ("good", "poor")


@pytest.mark.parametrize(
    ("params", "path", "text"),
    [
        ({"temprature": 1.0}, "methods.0.params.temprature", "unknown key"),
        ({"temperature": 0}, "methods.0.params.temperature", "greater than 0"),
        ({"words": ["good"]}, "methods.0.params.words.1", "required"),
    ],
)
def test_binary_params_validated(params: dict[str, Any], path: str, text: str) -> None:
    message = config_error(methods=[{"method": "qbench_binary", "params": params}])
    assert f"  {path}:" in message and text in message


def test_level_weights_words_mismatch_rejected() -> None:
    message = config_error(
        methods=[{"method": "qalign_levels",
                  "params": {"words": ["good", "bad"], "weights": [1.0, 0.5, 0.0]}}]
    )
    assert "methods.0.params" in message and "3 weights for 2 words" in message


def test_level_words_without_weights_rejected() -> None:
    assert "weights" in config_error(
        methods=[{"method": "qalign_levels", "params": {"words": ["good", "fair", "bad"]}}]
    )

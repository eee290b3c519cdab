"""Before any actor starts: does a model resolve? A local folder or bucket prefix must hold a
complete checkpoint; a hub id must be in the local cache or the hub must answer within seconds.
Nothing here downloads weights or imports torch.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from iqa_ray import io
from iqa_ray.backends.config import ModelConfig
from iqa_ray.io import probe

HUB_TIMEOUT_S = 5.0
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "spiece.model")
_PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
_OFFLINE_FIXES = (
    "one of\n"
    "      - a local folder saved with save_pretrained (or a bucket prefix) as model.id, e.g. "
    "`make demo MODEL=/path/to/folder`\n"
    "      - download it once where the hub is reachable (`hf download {id}`), then set "
    "HF_HUB_OFFLINE=1\n"
    "      - try the plumbing with random weights (scores mean nothing): `make demo MODEL=smoke`"
    " or `iqa-ray score FOLDER --model smoke`\n"
    "      (`iqa-ray models` lists the catalogue's checkpoints for model.preset)"
)


@dataclass(frozen=True)
class ModelSource:
    """A model reference to check: ``kind`` ``vlm`` needs tokenizer and processor files too."""

    id: str
    revision: str | None = None
    storage_options: dict[str, Any] | None = None
    kind: str = "vlm"
    what: str = "model.id"

    @classmethod
    def of(cls, cfg: ModelConfig) -> ModelSource:
        """The run's shared vision-language model."""
        return cls(cfg.id, cfg.revision, cfg.storage_options)


def looks_local(model_id: str) -> bool:
    """True for ids meant as folders: paths, file:// URIs, or anything that exists here."""
    if model_id.startswith(("/", "./", "../", "~", "file://")) or os.path.isdir(model_id):
        return True
    return not _HUB_ID.match(model_id)


def source_problems(src: ModelSource) -> list[str]:
    """What keeps ``src`` from loading, one message (with the fix) per problem."""
    if io.is_remote(src.id):
        return _bucket_problems(src)
    if looks_local(src.id):
        return _local_problems(src)
    return _hub_problems(src)


def _local_problems(src: ModelSource) -> list[str]:
    folder = os.path.expanduser(src.id.removeprefix("file://"))
    if not os.path.isdir(folder):
        rel = "" if os.path.isabs(folder) else f" (resolved against {os.getcwd()})"
        return [f"{src.what} {src.id!r}: no such folder{rel}. Fix: give the folder the model was "
                "saved to with save_pretrained, a bucket prefix, or a hub id"]
    missing = missing_files(sorted(os.listdir(folder)), _local_reader(folder), src.kind)
    return [_incomplete(src, folder, missing)] if missing else []


def _bucket_problems(src: ModelSource) -> list[str]:
    try:
        names = probe.names_in(src.id, src.storage_options)
    except probe.StorageProblem as exc:
        return [f"{src.what} {src.id!r}: {exc}"]
    if not names:
        return [f"{src.what} {src.id!r}: the bucket prefix is empty or does not exist. Fix: copy "
                "the folder saved with save_pretrained there, or fix the prefix"]

    def read(name: str) -> bytes:
        return io.read_bytes(io.join(src.id, name), src.storage_options, attempts=1)

    missing = missing_files(names, read, src.kind)
    return [_incomplete(src, src.id, missing)] if missing else []


def _incomplete(src: ModelSource, where: str, missing: list[str]) -> str:
    return (f"{src.what} {src.id!r}: the checkpoint in {where} is incomplete, missing "
            f"{'; '.join(missing)}. Fix: save the model and its processor there again "
            "(model.save_pretrained(folder); processor.save_pretrained(folder))")


def _local_reader(folder: str) -> Callable[[str], bytes]:
    def read(name: str) -> bytes:
        with open(os.path.join(folder, name), "rb") as handle:
            return handle.read()

    return read


def missing_files(names: list[str], read: Callable[[str], bytes], kind: str) -> list[str]:
    """What a checkpoint folder with these file names lacks (``read`` reads one of them).

    Every kind needs ``config.json`` and weights (every shard an index names); a ``vlm`` also
    needs tokenizer files and, unless its family brings its own image processing, an image
    processor config.
    """
    have = set(names)
    missing = [] if "config.json" in have else ["config.json"]
    missing += _missing_weights(have, read)
    if kind == "vlm":
        if not have.intersection(_TOKENIZER_FILES):
            missing.append(f"tokenizer files (one of {', '.join(_TOKENIZER_FILES)})")
        if not have.intersection(_PROCESSOR_FILES) and not _native_family(have, read):
            missing.append(f"an image processor config (one of {', '.join(_PROCESSOR_FILES)})")
    return missing


def _missing_weights(have: set[str], read: Callable[[str], bytes]) -> list[str]:
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if index in have:
            shards = set(json.loads(read(index)).get("weight_map", {}).values())
            lost = sorted(shards - have)
            return [f"weight shards {lost} named in {index}"] if lost else []
    if any(n.endswith(".safetensors") or re.match(r"pytorch_model.*\.bin$", n) for n in have):
        return []
    return ["weights (model.safetensors, or pytorch_model.bin)"]


def _native_family(have: set[str], read: Callable[[str], bytes]) -> bool:
    """True when config.json names a family whose processor is built from code constants."""
    if "config.json" not in have:
        return False
    model_type = json.loads(read("config.json")).get("model_type", "")
    from iqa_ray.backends.transformers.checkpoint import NATIVE_FAMILIES  # no torch import

    return model_type in NATIVE_FAMILIES


def _hub_problems(src: ModelSource) -> list[str]:
    from huggingface_hub import constants

    cached = _cached_snapshot(src)
    if cached is not None:
        names = [n for n in sorted(os.listdir(cached)) if not n.startswith(".")]
        missing = missing_files(names, _local_reader(cached), src.kind)
        if not missing or not constants.HF_HUB_OFFLINE:
            return []  # complete, or the hub will fill in the rest
        return [f"{src.what} {src.id!r}: the cached copy in {cached} lacks {'; '.join(missing)} "
                f"and HF_HUB_OFFLINE=1 forbids downloading it. Fix: "
                + _OFFLINE_FIXES.format(id=src.id)]
    # A relative folder that does not exist reads as a hub id: say so when its parent exists.
    parent = src.id.split("/", 1)[0]
    not_local = (f"; there is no local folder {os.path.abspath(src.id)} either"
                 if "/" in src.id and os.path.isdir(parent) else "")
    if constants.HF_HUB_OFFLINE:
        return [f"{src.what} {src.id!r} is a hub id that is not in the local hub cache "
                f"({constants.HF_HUB_CACHE}) and HF_HUB_OFFLINE=1 forbids downloading it"
                f"{not_local}. Fix: " + _OFFLINE_FIXES.format(id=src.id)]
    reason = _hub_reachable(src)
    if reason is None:
        return []
    return [f"{src.what} {src.id!r}: {reason}{not_local}. Fix: " + _OFFLINE_FIXES.format(id=src.id)]


def _cached_snapshot(src: ModelSource) -> str | None:
    from huggingface_hub import snapshot_download

    try:
        return str(snapshot_download(src.id, revision=src.revision, local_files_only=True))
    except Exception:  # not cached (LocalEntryNotFoundError) or an unusable cache entry
        return None


def _hub_reachable(src: ModelSource) -> str | None:
    """None when the hub serves the model's config.json, else why not (within seconds)."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    url = hf_hub_url(src.id, "config.json", revision=src.revision)
    try:
        get_hf_file_metadata(url, timeout=HUB_TIMEOUT_S)
    except GatedRepoError:
        return "the hub repository is gated: accept its terms and set HF_TOKEN"
    except RepositoryNotFoundError:
        return "no such hub repository (a typo, or a private one: set HF_TOKEN)"
    except RevisionNotFoundError:
        return f"the hub repository has no revision {src.revision!r}"
    except EntryNotFoundError:
        return "the hub repository has no config.json (not a transformers checkpoint)"
    except Exception as exc:
        text = " ".join(str(exc).split())[:160]
        return (f"the model hub is unreachable within {HUB_TIMEOUT_S:g} s ({type(exc).__name__}: "
                f"{text}) and the model is not in the local hub cache")
    return None

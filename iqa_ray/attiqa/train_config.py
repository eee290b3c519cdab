"""Validated configuration of ATTIQA training (pretraining on pseudo-labels, fine-tuning on MOS).

One YAML holds the shared keys at the top level and a ``pretrain:`` and a ``finetune:`` block;
``load_train_config(path, stage)`` merges the shared keys with one block into a flat
``TrainConfig`` (the ``finetune.init`` default is ``pretrain.output``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from iqa_ray.errors import ConfigError
from iqa_ray.methods.attiqa.backbone import BackboneSpec
from iqa_ray.settings import (
    StageResources,
    StrictModel,
    apply_overrides,
    canonical_json,
    check_storage_options,
    read_yaml_mapping,
    validate,
)

Stage = Literal["pretrain", "finetune"]
_STAGES: tuple[str, ...] = ("pretrain", "finetune")


def _absolute(value: str | None) -> str | None:
    """Local paths made absolute here, on the driver: Ray Train runs workers in another
    working directory. Bucket URIs stay as they are."""
    if value is None or "://" in value.removeprefix("file://"):
        return value
    return str(Path(value.removeprefix("file://")).resolve())


class LabelsSpec(StrictModel):
    """Training targets: pseudo-labels (pretrain) or MOS (finetune)."""

    uri: str = Field(..., description="pretrain: a clip_attributes run folder (or a Parquet/CSV "
                     "table of uri + attribute columns); finetune: a CSV/JSON/Parquet MOS table.")
    method: str = Field("clip_attributes", description="pretrain: the `method` label of the "
                        "pseudo-label rows in a run folder.")
    images_root: str | None = Field(None, description="finetune: prefix joined to relative keys.")
    key_column: str | None = Field(None, description="finetune: image-key column (auto).")
    mos_column: str | None = Field(None, description="finetune: MOS column (auto).")

    _local_paths = field_validator("uri", "images_root")(_absolute)


class ScalingSpec(StrictModel):
    """Ray Train workers (not result-affecting beyond the per-worker batch)."""

    num_workers: int = Field(1, ge=1, description="Data-parallel training workers.")
    use_gpu: bool = Field(False, description="One GPU per worker.")
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs reserved per worker.")


class TrainConfig(StrictModel):
    """One training stage, flat and validated."""

    stage: Stage
    labels: LabelsSpec
    output: str = Field(..., description="Folder or bucket prefix of the exported model.")
    checkpoint_uri: str = Field(..., description="Ray Train storage path (checkpoints).")
    run_name: str | None = Field(None, description="Ray Train run name; same name = resume. "
                                 "Default: stage + fingerprint.")
    storage_options: dict[str, Any] = Field(default_factory=dict, description="fsspec options "
                                            "for labels, images, init, output and checkpoints.")
    cache_dir: str | None = Field(None, description="Node-local cache of bucket models.")
    backbone: BackboneSpec = BackboneSpec()
    init: str | None = Field(None, description="Model folder to start from (finetune: the "
                             "pretrained model; default pretrain.output).")
    image_size: int = Field(224, ge=8, description="Square input side (resize + centre crop).")
    head_hidden: int = Field(0, ge=0, description="Hidden width of each head (0: linear).")
    batch_size: int = Field(32, ge=2, description="Images per step per worker.")
    max_steps: int = Field(1000, ge=1, description="Total optimiser steps (resume continues).")
    lr: float = Field(1e-4, gt=0, description="AdamW learning rate.")
    weight_decay: float = Field(1e-4, ge=0, description="AdamW weight decay.")
    margin: float = Field(0.1, ge=0, description="pretrain: margin of the ranking loss.")
    min_label_gap: float = Field(0.0, ge=0, description="pretrain: pairs whose pseudo-labels "
                                 "differ by at most this are ignored (ties).")
    regression_loss: Literal["l1", "l2"] = Field("l1", description="finetune: loss on MOS.")
    freeze_backbone: bool = Field(False, description="finetune: train the quality head only.")
    checkpoint_every: int = Field(100, ge=1, description="Steps between checkpoints.")
    keep_checkpoints: int = Field(2, ge=1, description="Checkpoints kept in storage.")
    shuffle_buffer: int = Field(256, ge=0, description="Rows in the local shuffle buffer.")
    seed: int = Field(0, description="Seed of initialisation and shuffling.")
    scaling: ScalingSpec = ScalingSpec()
    loader: StageResources = Field(
        StageResources(batch_size=32, min_actors=1, max_actors=2, num_cpus=1.0),
        description="Ray Data tasks that read and decode training images (max_actors caps "
        "the concurrent tasks).",
    )
    cache_images: bool = Field(False, description="Decode the training images once and keep "
                               "them in the object store (small sets); else stream each epoch.")

    _check_options = field_validator("storage_options")(check_storage_options)
    _local_paths = field_validator("output", "checkpoint_uri", "init", "cache_dir")(_absolute)

    @model_validator(mode="after")
    def _finetune_needs_init(self) -> TrainConfig:
        if self.stage == "finetune" and self.init is None and self.backbone.pretrained is None:
            raise ValueError("finetune needs `init` (a pretrained ATTIQA model) or "
                             "backbone.pretrained")
        return self

    def fingerprint(self) -> str:
        """sha256 of the fields that change the trained weights (not steps, names, resources)."""
        fields = self.model_dump(mode="json", exclude={
            "max_steps", "checkpoint_every", "keep_checkpoints", "run_name", "loader",
            "storage_options", "output", "checkpoint_uri", "cache_dir", "scaling", "cache_images"})
        return hashlib.sha256(canonical_json(fields).encode()).hexdigest()

    def resolved_run_name(self) -> str:
        """The Ray Train run name: explicit, or ``<stage>-`` plus 12 hex of the fingerprint."""
        return self.run_name or f"{self.stage}-{self.fingerprint()[:12]}"


def stage_dict(data: dict[str, Any], stage: str) -> dict[str, Any]:
    """Merge the shared top-level keys with one stage block (stage keys win)."""
    if stage not in _STAGES:
        raise ConfigError(f"stage must be one of {_STAGES}, got {stage!r}")
    shared = {k: v for k, v in data.items() if k not in _STAGES}
    block = data.get(stage) or {}
    merged = {**shared, **block, "stage": stage}
    pretrain_output = (data.get("pretrain") or {}).get("output")
    if stage == "finetune" and "init" not in merged and pretrain_output:
        merged["init"] = pretrain_output
    return merged


def load_train_config(
    path: str | Path, stage: str, overrides: list[str] | tuple[str, ...] = ()
) -> TrainConfig:
    """Read the YAML, apply ``a.b=value`` overrides, and validate the chosen stage."""
    data = apply_overrides(read_yaml_mapping(path), overrides)
    return train_config_from_dict(data, stage, source=str(path))


def train_config_from_dict(data: dict[str, Any], stage: str, source: str = "<dict>") -> TrainConfig:
    """Validate one stage of a (shared + blocks) dict, with readable errors."""
    return validate(TrainConfig, stage_dict(data, stage), f"{source} [{stage}]")

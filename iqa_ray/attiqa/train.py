"""ATTIQA training on Ray Train: the per-worker loop, checkpoints, resume, and model export.

Pretraining ranks the five attribute heads by the pseudo-labels (``losses.pairwise_ranking_
loss``); fine-tuning regresses the quality head on standardised MOS (``losses.regression_
loss``). Every checkpoint is a loadable model folder plus ``optimizer.pt`` and
``train_state.json`` (step, loss history, fingerprint). A rerun with the same run name and
storage path resumes from the latest checkpoint (Ray Train restores it) and keeps counting steps.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from iqa_ray import io
from iqa_ray.attiqa.data import (
    MOS,
    PIXELS,
    TARGETS,
    load_attribute_labels,
    load_mos_labels,
    training_dataset,
)
from iqa_ray.attiqa.train_config import TrainConfig
from iqa_ray.backends.sources import local_model_path
from iqa_ray.errors import ConfigError
from iqa_ray.methods.attiqa.prompts import ATTRIBUTES

logger = logging.getLogger(__name__)
STATE_FILE = "train_state.json"
OPTIMIZER_FILE = "optimizer.pt"
RUN_RECORD = "attiqa_run.json"  # the run's fingerprint, checked by the driver before training
EXPORTED = ("config.json", "model.safetensors", "attiqa.json")  # attiqa.json last: "complete"


@dataclass
class TrainState:
    """Progress carried across checkpoints: steps done and one loss per step."""

    step: int = 0
    losses: list[float] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)  # the step each (re)start began at


@dataclass(frozen=True)
class TrainResult:
    """What a finished stage reports: final step, loss history, where the model went."""

    stage: str
    step: int
    losses: list[float]
    starts: list[int]
    model_uri: str
    checkpoint_path: str


# ----------------------------------------------------------------------------- worker side
def _initial_network(cfg: TrainConfig) -> tuple[Any, dict[str, Any]]:
    from iqa_ray.methods.attiqa.network import AttiqaNetwork, build_backbone, load_network

    if cfg.init:
        net, meta = load_network(local_model_path(cfg.init, cfg.storage_options, cfg.cache_dir))
        return net, {**meta, "init": cfg.init}
    source = cfg.backbone.pretrained
    if source:
        source = local_model_path(source, cfg.storage_options, cfg.cache_dir)
    net = AttiqaNetwork(build_backbone(cfg.backbone, source), cfg.head_hidden)
    return net, {"head_hidden": cfg.head_hidden, "mean": net.mean.flatten().tolist(),
                 "std": net.std.flatten().tolist(), "quality_trained": False}


def _trainable(net: Any, cfg: TrainConfig) -> list[Any]:
    """Pretrain: backbone + attribute heads. Finetune: quality head (+ backbone unless frozen).
    Frozen parameters get ``requires_grad=False`` so DDP does not wait for their gradients."""
    train_backbone = cfg.stage == "pretrain" or not cfg.freeze_backbone
    for module, on in ((net.backbone, train_backbone),
                       (net.attribute_heads, cfg.stage == "pretrain"),
                       (net.quality_head, cfg.stage == "finetune")):
        for p in module.parameters():
            p.requires_grad_(on)
    return [p for p in net.parameters() if p.requires_grad]


def _restore(checkpoint: Any, net: Any, optimizer: Any, cfg: TrainConfig) -> TrainState:
    import torch
    from safetensors.torch import load_file

    from iqa_ray.methods.attiqa.network import WEIGHTS_FILE

    if checkpoint is None:
        return TrainState()
    with checkpoint.as_directory() as folder:
        state = json.loads((Path(folder) / STATE_FILE).read_text())
        if state["fingerprint"] != cfg.fingerprint():
            raise ConfigError(
                f"run {cfg.resolved_run_name()!r} holds a checkpoint of a different training "
                "configuration; pick a new run_name or restore the original settings")
        net.load_state_dict(load_file(str(Path(folder) / WEIGHTS_FILE)), strict=True)
        optimizer.load_state_dict(torch.load(Path(folder) / OPTIMIZER_FILE, map_location="cpu"))
    return TrainState(state["step"], state["losses"], state["starts"])


def _save(folder: Path, net: Any, optimizer: Any, state: TrainState, cfg: TrainConfig,
          meta: dict[str, Any]) -> None:
    import torch

    from iqa_ray.methods.attiqa.network import save_network

    record = {"stage": cfg.stage, "steps": state.step, "image_size": cfg.image_size,
              "labels": cfg.labels.uri, "fingerprint": cfg.fingerprint(),
              "backbone": net.backbone.config.model_type}
    save_network(net, folder, {**meta, **record,
                               "history": {**meta.get("history", {}), cfg.stage: record}})
    torch.save(optimizer.state_dict(), folder / OPTIMIZER_FILE)
    (folder / STATE_FILE).write_text(json.dumps(
        {"step": state.step, "losses": state.losses, "starts": state.starts,
         "fingerprint": cfg.fingerprint()}))


def _report(net: Any, optimizer: Any, state: TrainState, cfg: TrainConfig,
            meta: dict[str, Any], since: int) -> None:
    """Every worker reports (a collective); rank 0 attaches the checkpoint."""
    import ray.train

    metrics = {"step": state.step, "loss": float(np.mean(state.losses[since:])),
               "start_step": state.starts[-1]}
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if ray.train.get_context().get_world_rank() == 0:
            _save(Path(tmp), net, optimizer, state, cfg, meta)
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(metrics, checkpoint=checkpoint)


def _loss(model: Any, batch: dict[str, Any], cfg: TrainConfig) -> Any:
    from iqa_ray.attiqa.losses import pairwise_ranking_loss, regression_loss

    attributes, quality = model(batch[PIXELS])
    if cfg.stage == "pretrain":
        return pairwise_ranking_loss(attributes, batch[TARGETS], cfg.margin, cfg.min_label_gap)
    return regression_loss(quality, batch[TARGETS][:, 0], cfg.regression_loss)


def train_loop(config: dict[str, Any]) -> None:
    """Ray Train worker entry: build or restore, then step until ``max_steps``."""
    import ray.train
    import ray.train.torch
    import torch

    cfg = TrainConfig.model_validate(config["cfg"])
    torch.manual_seed(cfg.seed)
    net, meta = _initial_network(cfg)
    meta.update(config.get("meta", {}))
    optimizer = torch.optim.AdamW(_trainable(net, cfg), lr=cfg.lr, weight_decay=cfg.weight_decay)
    state = _restore(ray.train.get_checkpoint(), net, optimizer, cfg)
    state.starts.append(state.step)
    model = ray.train.torch.prepare_model(net)
    model.train()
    if cfg.stage == "finetune" and cfg.freeze_backbone:
        net.backbone.eval()  # frozen batch-norm statistics too
    shard, epoch, since = ray.train.get_dataset_shard("train"), 0, len(state.losses)
    while state.step < cfg.max_steps:
        batches = shard.iter_torch_batches(
            batch_size=cfg.batch_size, drop_last=True, local_shuffle_seed=cfg.seed + state.step,
            local_shuffle_buffer_size=cfg.shuffle_buffer or None)
        done_before = state.step
        for batch in batches:
            loss = _loss(model, batch, cfg)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            state.step += 1
            state.losses.append(float(loss.detach()))
            if state.step % cfg.checkpoint_every == 0 or state.step >= cfg.max_steps:
                _report(net, optimizer, state, cfg, meta, since)
                since = len(state.losses)
            if state.step >= cfg.max_steps:
                break
        if state.step == done_before:
            raise ConfigError(f"an epoch gave no batch: fewer usable rows than batch_size "
                              f"{cfg.batch_size} per worker")
        epoch += 1
        logger.info("epoch %d done at step %d, last loss %.4f", epoch, state.step, state.losses[-1])


# ----------------------------------------------------------------------------- driver side
def training_table(cfg: TrainConfig) -> tuple[pa.Table, list[str], dict[str, Any]]:
    """(label table, target columns, metadata) of the stage; MOS is standardised here."""
    opts = cfg.storage_options
    if cfg.stage == "pretrain":
        return load_attribute_labels(cfg.labels.uri, opts, cfg.labels.method), list(ATTRIBUTES), {}
    table = load_mos_labels(cfg.labels.uri, opts, cfg.labels.images_root, cfg.labels.key_column,
                            cfg.labels.mos_column)
    mos = table.column(MOS).to_numpy().astype(np.float64)
    mean, std = float(mos.mean()), float(mos.std()) or 1.0
    standard = pc.divide(pc.subtract(table.column(MOS).cast(pa.float64()), mean), std)
    table = table.set_column(table.schema.get_field_index(MOS), MOS, standard.cast(pa.float32()))
    return table, [MOS], {"mos_mean": mean, "mos_std": std, "quality_trained": True}


def _storage(cfg: TrainConfig) -> tuple[str, Any]:
    if io.is_remote(cfg.checkpoint_uri):
        fs, path = io.pyarrow_filesystem(cfg.checkpoint_uri, cfg.storage_options)
        return path, fs
    return str(Path(cfg.checkpoint_uri.removeprefix("file://")).resolve()), None


def export_model(checkpoint: Any, output: str, storage_options: dict[str, Any]) -> None:
    """Copy the model files of a checkpoint to ``output`` (``attiqa.json`` written last)."""
    with checkpoint.as_directory() as folder:
        for name in EXPORTED:
            data = (Path(folder) / name).read_bytes()
            io.write_bytes_atomic(io.join(output, name), data, storage_options)


def check_run_record(cfg: TrainConfig) -> None:
    """Refuse, before any worker starts, to resume a run name trained with another
    configuration; record the fingerprint of a new run (``<checkpoint_uri>/<run>/attiqa_run.json``).

    Raises:
        ConfigError: the stored fingerprint differs from this configuration's.
    """
    uri = io.join(cfg.checkpoint_uri, cfg.resolved_run_name(), RUN_RECORD)
    opts = cfg.storage_options
    if io.exists(uri, opts):
        stored = io.read_json(uri, opts)
        if stored.get("fingerprint") != cfg.fingerprint():
            raise ConfigError(
                f"run {cfg.resolved_run_name()!r} under {cfg.checkpoint_uri} was trained with a "
                "different training configuration; pick a new run_name or restore the original "
                f"settings (stored in {uri})")
        return
    record = {"stage": cfg.stage, "fingerprint": cfg.fingerprint(),
              "config": cfg.model_dump(mode="json")}
    io.write_json_atomic(uri, record, opts)


def run_training(cfg: TrainConfig) -> TrainResult:
    """Train one stage on the connected Ray cluster and export the model to ``cfg.output``."""
    import ray.train
    from ray.train.torch import TorchTrainer

    check_run_record(cfg)
    table, targets, meta = training_table(cfg)
    logger.info("%s: %d labelled images, targets %s", cfg.stage, table.num_rows, targets)
    dataset = training_dataset(table, targets, cfg.image_size, cfg.storage_options, cfg.loader,
                               cfg.cache_images)
    storage_path, storage_fs = _storage(cfg)
    trainer = TorchTrainer(
        train_loop, train_loop_config={"cfg": cfg.model_dump(mode="json"), "meta": meta},
        scaling_config=ray.train.ScalingConfig(
            num_workers=cfg.scaling.num_workers, use_gpu=cfg.scaling.use_gpu,
            resources_per_worker={"CPU": cfg.scaling.cpus_per_worker}),
        run_config=ray.train.RunConfig(
            name=cfg.resolved_run_name(), storage_path=storage_path, storage_filesystem=storage_fs,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.keep_checkpoints)),
        datasets={"train": dataset},
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"training run {cfg.resolved_run_name()!r} produced no checkpoint")
    export_model(result.checkpoint, cfg.output, cfg.storage_options)
    with result.checkpoint.as_directory() as folder:
        state = json.loads((Path(folder) / STATE_FILE).read_text())
    return TrainResult(cfg.stage, state["step"], state["losses"], state["starts"], cfg.output,
                       result.checkpoint.path)

"""ATTIQA network pieces without Ray: ranking loss, pixel preparation, save/load, score rule."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from iqa_ray.attiqa.losses import pairwise_ranking_loss, regression_loss
from iqa_ray.devtools.tiny_attiqa import TINY_RESNET
from iqa_ray.errors import ConfigError
from iqa_ray.methods.attiqa.backbone import BackboneSpec, prepare_pixels
from iqa_ray.methods.attiqa.network import (
    AttiqaNetwork,
    build_backbone,
    load_network,
    quality_from_outputs,
    save_network,
)
from iqa_ray.methods.attiqa.prompts import ATTRIBUTES

TINY_VIT = {"model_type": "vit", "config": {
    "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
    "intermediate_size": 32, "image_size": 16, "patch_size": 8}}


def test_ranking_loss_matches_torch_margin_ranking_over_all_pairs() -> None:
    gen = torch.Generator().manual_seed(0)
    pred, target = torch.randn(6, 5, generator=gen), torch.rand(6, 5, generator=gen)
    target[1, 2] = target[4, 2]  # a tie: skipped
    oracle = torch.nn.MarginRankingLoss(margin=0.3, reduction="sum")
    total, count = 0.0, 0
    for a, (i, j) in itertools.product(range(5), itertools.combinations(range(6), 2)):
        y = torch.sign(target[i, a] - target[j, a])
        if y != 0:
            total += float(oracle(pred[i, a:a + 1], pred[j, a:a + 1], y.view(1)))
            count += 1
    assert count == 74
    assert float(pairwise_ranking_loss(pred, target, margin=0.3)) == pytest.approx(total / count)


def test_ranking_loss_is_zero_for_a_correct_order_and_pushes_a_wrong_one() -> None:
    target = torch.tensor([[0.9], [0.5], [0.1]])
    good = torch.tensor([[3.0], [2.0], [1.0]])
    assert float(pairwise_ranking_loss(good, target, margin=0.5)) == 0.0
    bad = torch.tensor([[1.0], [2.0], [3.0]], requires_grad=True)
    loss = pairwise_ranking_loss(bad, target, margin=0.5)
    loss.backward()
    assert float(loss.detach()) > 0
    assert bad.grad[0, 0] < 0 < bad.grad[2, 0]  # descent raises the best and lowers the worst
    ties = pairwise_ranking_loss(bad, torch.ones(3, 1), margin=0.5)
    assert float(ties.detach()) == 0.0 and ties.requires_grad
    assert float(regression_loss(torch.tensor([1.0, 3.0]), torch.tensor([2.0, 2.0]), "l2")) == 1.0


def test_prepare_pixels_resizes_and_centre_crops() -> None:
    wide = np.zeros((10, 40, 3), np.uint8)
    wide[:, 18:22] = 255  # a bright centre stripe, kept by the centre crop; the edges are cut
    out = prepare_pixels([wide, np.full((33, 17, 3), 7, np.uint8)], 16)
    assert out.shape == (2, 16, 16, 3) and out.dtype == np.uint8
    assert out[0, :, 8].min() > 200 and out[0, :, 0].max() < 50
    assert np.all(out[1] == 7)


@pytest.mark.parametrize("backbone", [TINY_RESNET, TINY_VIT], ids=["resnet", "vit"])
def test_network_saves_and_loads_to_identical_outputs(backbone: dict, tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = AttiqaNetwork(build_backbone(BackboneSpec.model_validate(backbone)), head_hidden=4).eval()
    flat = [np.full((20, 20, 3), v, np.uint8) for v in (0, 90, 250)]
    pixels = torch.from_numpy(prepare_pixels(flat, 16))
    with torch.no_grad():
        attributes, quality = net(pixels)
    assert attributes.shape == (3, 5) and quality.shape == (3,)
    save_network(net, tmp_path / "m", {"head_hidden": 4, "mean": net.mean.flatten().tolist(),
                                       "std": net.std.flatten().tolist(), "image_size": 16})
    loaded, meta = load_network(tmp_path / "m")
    assert meta["attributes"][0] == "sharpness" and meta["image_size"] == 16
    with torch.no_grad():
        again = loaded(pixels)
    torch.testing.assert_close(again[0], attributes)
    torch.testing.assert_close(again[1], quality)
    with pytest.raises(ConfigError, match="not an ATTIQA model"):
        load_network(tmp_path)


def test_overall_score_rule() -> None:
    attributes, quality = np.array([[0.0, 1, 2, 3, 4]]), np.array([0.5])
    assert quality_from_outputs(attributes, quality, {"quality_trained": False})[0] == 2.0
    meta = {"quality_trained": True, "mos_mean": 3.0, "mos_std": 2.0}
    assert quality_from_outputs(attributes, quality, meta)[0] == 4.0


def _train_dict(tmp_path: Path, **pretrain: object) -> dict:
    return {"backbone": TINY_RESNET, "image_size": 16,
            "pretrain": {"labels": {"uri": "labels.parquet"}, "output": str(tmp_path / "m"),
                         "checkpoint_uri": str(tmp_path / "c"), **pretrain},
            "finetune": {"labels": {"uri": "mos.csv"}, "output": str(tmp_path / "f"),
                         "checkpoint_uri": str(tmp_path / "c")}}


def test_train_config_stages_and_fingerprint(tmp_path: Path) -> None:
    from iqa_ray.attiqa.train_config import train_config_from_dict

    pre = train_config_from_dict(_train_dict(tmp_path, max_steps=10), "pretrain")
    tuned = train_config_from_dict(_train_dict(tmp_path), "finetune")
    assert pre.image_size == tuned.image_size == 16 and tuned.init == str(tmp_path / "m")
    longer = train_config_from_dict(_train_dict(tmp_path, max_steps=99), "pretrain")
    assert longer.resolved_run_name() == pre.resolved_run_name()  # more steps = same run
    other = train_config_from_dict(_train_dict(tmp_path, lr=0.5), "pretrain")
    assert other.fingerprint() != pre.fingerprint()
    with pytest.raises(ConfigError, match="unknown key"):
        train_config_from_dict(_train_dict(tmp_path, learning_rate=0.1), "pretrain")


def test_checkpoint_restores_state_and_refuses_another_config(tmp_path: Path) -> None:
    from ray.train import Checkpoint

    from iqa_ray.attiqa.train import TrainState, _restore, _save
    from iqa_ray.attiqa.train_config import train_config_from_dict

    cfg = train_config_from_dict(_train_dict(tmp_path), "pretrain")
    torch.manual_seed(0)
    net = AttiqaNetwork(build_backbone(cfg.backbone))
    optimizer = torch.optim.AdamW(net.parameters(), lr=cfg.lr)
    _save(tmp_path / "ckpt", net, optimizer, TrainState(5, [0.3] * 5, [0]), cfg,
          {"head_hidden": 0, "mean": [0.5] * 3, "std": [0.5] * 3})
    torch.manual_seed(1)
    fresh = AttiqaNetwork(build_backbone(cfg.backbone))
    state = _restore(Checkpoint.from_directory(str(tmp_path / "ckpt")), fresh,
                     torch.optim.AdamW(fresh.parameters(), lr=cfg.lr), cfg)
    assert (state.step, state.starts) == (5, [0])
    torch.testing.assert_close(fresh.state_dict(), net.state_dict())
    changed = train_config_from_dict(_train_dict(tmp_path, margin=0.7), "pretrain")
    with pytest.raises(ConfigError, match="different training configuration"):
        _restore(Checkpoint.from_directory(str(tmp_path / "ckpt")), fresh,
                 torch.optim.AdamW(fresh.parameters()), changed)


def test_label_tables_are_checked_and_keys_joined(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from iqa_ray.attiqa.data import load_attribute_labels, load_mos_labels

    columns = {"uri": ["a.png", "b.png"], **{a: [0.1, 0.2] for a in ATTRIBUTES[:4]}}
    pq.write_table(pa.table(columns), tmp_path / "four.parquet")
    with pytest.raises(ConfigError, match="noisiness"):
        load_attribute_labels(str(tmp_path / "four.parquet"), {}, "clip_attributes")
    (tmp_path / "mos.csv").write_text("image,mos\nx/1.png,3.5\n/abs/2.png,2.0\nx/3.png,\n")
    table = load_mos_labels(str(tmp_path / "mos.csv"), {}, "s3://bucket/root").to_pydict()
    assert table == {"uri": ["s3://bucket/root/x/1.png", "/abs/2.png"], "mos": [3.5, 2.0]}

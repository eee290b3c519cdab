"""Evaluation tables against scipy, label formats joined to runs, the report files, and the
Q-Bench A3 SRCC reproduced through the whole evaluation path from a constructed run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import stats

from iqa_ray.analysis import plots
from iqa_ray.analysis.evaluate import (
    PLCC_LOGISTIC_LABEL,
    EvaluateJobConfig,
    LabelsConfig,
    attach_labels,
    metrics_table,
    read_labels_uri,
    run_evaluation,
)
from iqa_ray.analysis.labels import read_labels
from iqa_ray.analysis.scores import ALL_GROUP, add_folder, wide_scores
from iqa_ray.methods.rules import binary_probability
from tests.helpers import write_score_run

QBENCH = Path(__file__).resolve().parents[2] / ".." / "shared" / "eval" / "qbench_a3"
ROOT = "s3://b/set"


def constructed(n: int = 60, seed: int = 3) -> pd.DataFrame:
    """Wide frame with MOS: ``lin`` is noisy-linear in MOS, ``mono`` a monotone transform of it,
    two folders, and one errored image for ``lin`` whose row still carries a (wild) score."""
    rng = np.random.default_rng(seed)
    mos = rng.uniform(1, 5, n)
    lin = mos + rng.normal(0, 0.7, n)
    rows = []
    for i in range(n):
        uri = f"{ROOT}/{'xy'[i % 2]}/{i}.png"
        err = "decode_failed" if i == 7 else None
        rows += [{"image_id": i, "uri": uri, "method": "lin", "score": 100.0 if err else lin[i],
                  "error_code": err, "error_message": err},
                 {"image_id": i, "uri": uri, "method": "mono", "score": np.exp(mos[i]),
                  "error_code": None, "error_message": None}]  # fmt: skip
    frame = add_folder(wide_scores(pd.DataFrame(rows)), ROOT)
    return frame.assign(mos=frame["image_id"].map(dict(enumerate(mos))))


def test_metrics_table_matches_scipy_overall_and_per_group() -> None:
    frame = constructed()
    table = metrics_table(frame, ["lin", "mono"], "folder", n_boot=200, seed=1)
    assert table[["group", "method"]].values.tolist() == [
        [ALL_GROUP, "lin"],
        [ALL_GROUP, "mono"],
        ["x", "lin"],
        ["x", "mono"],
        ["y", "lin"],
        ["y", "mono"],
    ]
    for row in table.itertuples():
        sub = frame if row.group == ALL_GROUP else frame[frame["folder"] == row.group]
        sub = sub[sub[f"{row.method}__error_code"].isna()]
        p, t = sub[row.method].to_numpy(), sub["mos"].to_numpy()
        assert row.n == len(p) and row.n_dropped == row.n_errors
        assert row.srcc == pytest.approx(stats.spearmanr(p, t).statistic, abs=1e-12)
        assert row.plcc == pytest.approx(stats.pearsonr(p, t).statistic, abs=1e-12)
        assert row.krcc == pytest.approx(stats.kendalltau(p, t).statistic, abs=1e-12)
        assert row.rmse == pytest.approx(np.sqrt(np.mean((p - t) ** 2)), abs=1e-12)
        assert row.srcc_ci_low <= row.srcc <= row.srcc_ci_high
        assert row.plcc_ci_low <= row.plcc <= row.plcc_ci_high
    overall = table.set_index(["group", "method"]).loc[ALL_GROUP]
    assert overall.loc["lin", "n_errors"] == 1 and overall.loc["lin", "n"] == 59


def test_perfectly_monotone_score_gives_srcc_one() -> None:
    table = metrics_table(constructed(), ["mono"], None, n_boot=50, seed=0).iloc[0]
    assert table["srcc"] == pytest.approx(1.0) and table["krcc"] == pytest.approx(1.0)
    assert table["plcc"] < 0.99  # exp() is far from linear: raw PLCC says so
    assert table["plcc_logistic"] > table["plcc"]  # the labelled logistic extra recovers most


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("image,mos\nx/0.png,1.5\n1.png,2.5\n", "labels.csv"),  # CSV (image path, mos)
        (
            '[{"img_path": "x/0.png", "gt_score": 1.5}, {"img_path": "1.png", "gt_score": 2.5}]',
            "labels.json",
        ),  # JSON list with img_path/gt_score (Q-Bench style)
        ("image_id,mos\n0,1.5\n1,2.5\n", "ids.csv"),  # keyed on image_id
    ],
)
def test_label_formats_join_to_the_run(tmp_path: Path, text: str, name: str) -> None:
    (tmp_path / name).write_text(text)
    labels = read_labels_uri(LabelsConfig(uri=str(tmp_path / name)), None)
    table, info = attach_labels(constructed(4).drop(columns="mos"), labels)
    assert dict(zip(table["image_id"], table["mos"], strict=True)) == {0: 1.5, 1: 2.5}
    assert info["matched"] == 2 and info["unmatched_images"] == 2


def test_report_files_exist_and_pngs_decode(tmp_path: Path) -> None:
    frame = constructed(40)
    rows = [
        {"uri": u, "method": m, "score": s}
        for u, m_scores in zip(frame["uri"], frame[["lin", "mono"]].to_dict("records"), strict=True)
        for m, s in m_scores.items()
    ]
    rows = [r for r in rows if not pd.isna(r["score"])]
    write_score_run(str(tmp_path / "out"), "r", rows)
    pd.DataFrame({"path": frame["uri"].str.removeprefix(ROOT + "/"), "MOS": frame["mos"]}).to_csv(
        tmp_path / "mos.csv", index=False
    )
    job = EvaluateJobConfig.model_validate(
        {
            "scores": {"output": str(tmp_path / "out"), "runs": ["r"]},
            "name": "e1",
            "labels": {"uri": str(tmp_path / "mos.csv")},
            "group_by": "folder",
            "n_boot": 50,
        }
    )
    outcome = run_evaluation(job)
    folder = tmp_path / "out" / "evaluations" / "e1"
    report = (folder / "report.md").read_text()
    assert PLCC_LOGISTIC_LABEL in report and "## Per `folder`" in report
    assert "| mono | 40 |" in report and "| x | lin |" in report
    pngs = sorted(p.name for p in folder.glob("*.png"))
    assert pngs == ["histograms.png", "scatter_lin.png", "scatter_mono.png"]
    for name in pngs:
        assert f"]({name})" in report
        with Image.open(folder / name) as img:
            img.load()
            assert img.format == "PNG" and img.width > 100 and img.height > 100
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["match"]["matched"] == 40 and len(summary["metrics"]) == len(outcome.table) == 6
    assert pd.read_parquet(folder / "metrics.parquet")["srcc"].tolist() == pytest.approx(
        outcome.table["srcc"].tolist()
    )


def test_missing_matplotlib_gives_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'iqa_ray\[report\]'"):
        plots.require_matplotlib()


@pytest.fixture(scope="module")
def qbench() -> Path:
    if not QBENCH.is_dir():
        pytest.skip(f"Q-Bench A3 outputs not found at {QBENCH.resolve()} (shared eval data absent)")
    return QBENCH


def test_qbench_qwen_koniq_through_evaluation(qbench: Path, tmp_path: Path) -> None:
    raw = (qbench / "qwen-vl" / "koniq.json").read_bytes()
    labels = read_labels(raw, fmt="json")
    score = binary_probability(np.stack([labels["logit_good"], labels["logit_poor"]], axis=-1))
    rows = [
        {"uri": f"s3://corpus/koniq/1024x768/{k}", "method": "qbench_binary", "score": s}
        for k, s in zip(labels["key"], score, strict=True)
    ]
    write_score_run(str(tmp_path / "out"), "qwen", rows)
    job = EvaluateJobConfig.model_validate(
        {
            "scores": {"output": str(tmp_path / "out"), "runs": ["qwen"]},
            "labels": {"uri": str(qbench / "qwen-vl" / "koniq.json")},
            "n_boot": 100,
            "plots": False,
        }
    )
    outcome = run_evaluation(job)
    row = outcome.table.iloc[0]
    assert row["n"] == 10_073 and outcome.summary["match"]["suffix"] == 10_073
    assert (round(row["srcc"], 3), round(row["plcc"], 3)) == (0.470, 0.546)
    assert row["srcc_ci_low"] < 0.470 < row["srcc_ci_high"]
    assert (
        "| qbench_binary | 10073 | 0 | 0.470 ["
        in (tmp_path / "out" / "evaluations" / "default" / "report.md").read_text()
    )

"""The papers' protocol in the evaluation job: split files of image keys, per-split metrics
against scipy, their median (SRCC, PLCC, logistic PLCC) in report.md, splits.parquet and
summary.json, and the job script's --split flag."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from iqa_ray.analysis import metrics
from iqa_ray.analysis.evaluate import EvaluateJobConfig, run_evaluation
from iqa_ray.analysis.splits import parse_split_keys, split_medians, split_metrics
from iqa_ray.errors import ConfigError
from tests.conftest import REPO
from tests.helpers import write_score_run
from tests.unit.test_evaluation import ROOT, constructed


def test_split_files_in_text_and_reference_json_forms() -> None:
    assert parse_split_keys("a/1.jpg\n\n b/2.jpg \n") == ["a/1.jpg", "b/2.jpg"]
    assert parse_split_keys('["x/1.png", "x/2.png"]') == ["x/1.png", "x/2.png"]
    reference = [{"image": "koniq/10.jpg", "gt_score": 3.1, "std": 0.5}, {"img_path": "k/2.jpg"}]
    assert parse_split_keys(json.dumps(reference)) == ["koniq/10.jpg", "k/2.jpg"]
    with pytest.raises(ConfigError, match="no image key"):
        parse_split_keys('[{"score": 1}]')
    with pytest.raises(ConfigError, match="no image key"):
        parse_split_keys("\n \n")


def _splits(frame: pd.DataFrame, n: int, seed: int) -> dict[str, list[str]]:
    rng = np.random.default_rng(seed)
    keys = frame["uri"].str.removeprefix(ROOT + "/").to_numpy()
    return {f"s{k}": list(rng.choice(keys, size=len(keys) // 2, replace=False)) for k in range(n)}


def test_per_split_metrics_and_medians_match_scipy() -> None:
    frame = constructed(60)
    splits = _splits(frame, 5, seed=1)
    per_split = split_metrics(frame, ["lin", "mono"], splits)
    assert len(per_split) == 10
    for row in per_split.itertuples():
        names = {ROOT + "/" + k for k in splits[row.split]}
        sub = frame[frame["uri"].isin(names) & frame[f"{row.method}__error_code"].isna()]
        p, t = sub[row.method].to_numpy(), sub["mos"].to_numpy()
        assert row.n == len(p)
        assert row.srcc == pytest.approx(stats.spearmanr(p, t).statistic, abs=1e-12)
        assert row.plcc == pytest.approx(stats.pearsonr(p, t).statistic, abs=1e-12)
        assert row.plcc_logistic == pytest.approx(metrics.plcc_logistic(p, t), abs=1e-12)
    medians = split_medians(per_split).set_index("method")
    lin = per_split[per_split["method"] == "lin"]
    assert medians.loc["lin", "splits"] == 5
    for column in ("srcc", "plcc", "plcc_logistic"):
        assert medians.loc["lin", column] == pytest.approx(np.median(lin[column]), abs=1e-15)
    assert medians.loc["mono", "srcc"] == pytest.approx(1.0)  # monotone in MOS on every split


def _run_and_labels(tmp_path: Path) -> pd.DataFrame:
    frame = constructed(40)
    rows = [{"uri": u, "method": m, "score": s}
            for u, scores in zip(frame["uri"], frame[["lin", "mono"]].to_dict("records"),
                                 strict=True)
            for m, s in scores.items() if not pd.isna(s)]
    write_score_run(str(tmp_path / "out"), "r", rows)
    keys = frame["uri"].str.removeprefix(ROOT + "/")
    pd.DataFrame({"path": keys, "MOS": frame["mos"]}).to_csv(tmp_path / "mos.csv", index=False)
    return frame


def test_evaluation_reports_the_split_medians(tmp_path: Path) -> None:
    frame = _run_and_labels(tmp_path)
    splits = _splits(frame, 3, seed=2)
    files = []
    for k, (name, keys) in enumerate(splits.items()):  # the first as text, the others as JSON
        path = tmp_path / f"{name}.{'json' if k else 'txt'}"
        text = json.dumps([{"image": key, "gt_score": 0} for key in keys]) if k else "\n".join(keys)
        path.write_text(text)
        files.append(str(path))
    job = EvaluateJobConfig.model_validate({
        "scores": {"output": str(tmp_path / "out"), "runs": ["r"]}, "name": "e",
        "labels": {"uri": str(tmp_path / "mos.csv")}, "n_boot": 0, "plots": False,
        "splits": files,
    })  # fmt: skip
    outcome = run_evaluation(job)
    folder = tmp_path / "out" / "evaluations" / "e"
    report = (folder / "report.md").read_text()
    assert "## Test splits (the papers' protocol)" in report and "PLCC (4-param logistic)" in report
    per_split = pd.read_parquet(folder / "splits.parquet")
    assert sorted(per_split["split"].unique()) == ["s0.txt", "s1.json", "s2.json"]
    summary = json.loads((folder / "summary.json").read_text())
    assert summary == outcome.summary and "splits.parquet" in summary["files"]
    lin = next(r for r in summary["split_medians"] if r["method"] == "lin")
    expected = np.median(per_split[per_split["method"] == "lin"]["plcc_logistic"])
    assert lin["plcc_logistic"] == pytest.approx(expected) and lin["splits"] == 3
    assert f"| lin | 3 | {lin['n']:g} | {lin['srcc']:.3f} |" in report


def test_evaluate_job_split_flag(tmp_path: Path) -> None:
    frame = _run_and_labels(tmp_path)
    keys = frame["uri"].str.removeprefix(ROOT + "/")
    (tmp_path / "a.txt").write_text("\n".join(keys[:20]))
    (tmp_path / "b.txt").write_text("\n".join(keys[20:]))
    proc = subprocess.run(
        [sys.executable, str(REPO / "jobs" / "evaluate.py"), "--output", str(tmp_path / "out"),
         "--run", "r", "--labels", str(tmp_path / "mos.csv"), "--split", str(tmp_path / "a.txt"),
         "--split", str(tmp_path / "b.txt"), "--set", "plots=false", "--set", "n_boot=0"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Median over 2 test splits:" in proc.stdout and "| mono | 2 |" in proc.stdout

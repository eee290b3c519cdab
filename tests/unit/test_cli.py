"""The ``iqa-ray`` command in-process on score tables written straight into the run layout (no
Ray): filter, evaluate, report and models, the console script declared in pyproject."""

from __future__ import annotations

import importlib
import json
import tomllib
from pathlib import Path

import pytest

from iqa_ray.cli.main import main
from tests.conftest import REPO
from tests.helpers import write_score_run


@pytest.fixture
def scored(tmp_path: Path) -> Path:
    """A run of 6 images (one failed), two methods, with its run.json."""
    rows = []
    for i in range(6):
        uri = str(tmp_path / "images" / f"{'ab'[i % 2]}" / f"img{i}.png")
        failed = i == 5
        for method, score in (("qalign_levels", 1.0 + i / 2), ("qbench_binary", i / 10)):
            rows.append({"uri": uri, "method": method, "score": None if failed else score,
                         "error_code": "decode_failed" if failed else None,
                         "error_message": "not an image" if failed else None})
    run_uri = write_score_run(str(tmp_path / "out"), "r1", rows)
    record = {"run_id": "r1", "status": "complete",
              "config": {"methods": [{"method": "qalign_levels", "name": "qalign_levels"},
                                     {"method": "qbench_binary", "name": "qbench_binary"}],
                         "model": {"id": "m", "backend": "fake"}, "input": {}}}
    (Path(run_uri) / "run.json").write_text(json.dumps(record))
    return tmp_path


def test_console_script_is_declared_and_resolves() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    module, name = scripts["iqa-ray"].split(":")
    assert getattr(importlib.import_module(module), name) is main


def test_models_lists_the_catalogue(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "| `default` |" in out and "supported-checkpoints" not in out


def test_filter_evaluate_and_report_commands(scored: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    out = str(scored / "out")
    rule = "rule.conditions=[{method: qalign_levels, min: 2.0}]"
    assert main(["filter", "--output", out, "--run", "r1", "--name", "good", "--set", rule]) == 0
    printed = capsys.readouterr().out
    summary = json.loads(printed[printed.index("{"):])
    assert (summary["kept"], summary["rejected"]) == (3, 3)
    assert summary["report"].endswith("filters/good/report.html")
    assert "Rejected by reason" in Path(summary["report"]).read_text()
    labels = scored / "labels.csv"
    labels.write_text("image,mos\n" + "".join(f"img{i}.png,{i}\n" for i in range(6)))
    assert main(["evaluate", "--output", out, "--run", "r1", "--labels", str(labels),
                 "--set", "plots=false", "--set", "n_boot=10"]) == 0
    page = scored / "out" / "evaluations" / "default" / "report.html"
    assert "SRCC [95% CI]" in page.read_text() and "report.html" in capsys.readouterr().out
    assert main(["report", "--output", out, "--run", "r1"]) == 0
    html = (scored / "out" / "runs" / "r1" / "report.html").read_text()
    assert "decode_failed" in html and html.count("data:image") == 0  # no such image files
    assert main(["report", "--output", out, "--run", "nope"]) == 2


def test_score_without_a_path_is_a_configuration_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["score"]) == 2
    assert "give a PATH" in capsys.readouterr().err
    assert not (tmp_path / "iqa_ray_output").exists()

"""The HTML reports render in a real headless browser (Chromium from the OS packages, installed
by .ci/run): screenshots are checked for the charts' colours and the thumbnails' pixels, and
the rendered DOM for the tables."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from iqa_ray.analysis import svg
from iqa_ray.analysis.evaluate import EvaluateJobConfig, run_evaluation
from iqa_ray.analysis.report_run import write_run_report
from iqa_ray.scoring.pipeline import run
from tests.helpers import config, make_corpus

pytestmark = pytest.mark.usefixtures("ray_local")
BROWSERS = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome")
MAGENTA = (255, 0, 255)


def _browser() -> str:
    found = next((b for b in map(shutil.which, BROWSERS) if b), None)
    if found is None:
        message = ("no headless Chromium (apt-get install chromium-headless-shell; "
                   ".ci/run installs it)")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def _render(html: Path, out: Path, height: int = 3000) -> tuple[np.ndarray, str]:
    """(screenshot pixels, rendered DOM) of a page in headless Chromium."""
    base = [_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            f"--user-data-dir={out.parent / 'chrome-profile'}", f"--window-size=1300,{height}"]
    shot = subprocess.run([*base, f"--screenshot={out}", html.as_uri()], capture_output=True,
                          text=True, timeout=120)
    assert shot.returncode == 0 and out.exists(), shot.stderr[-2000:]
    dom = subprocess.run([*base, "--dump-dom", html.as_uri()], capture_output=True, text=True,
                         timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    return np.asarray(Image.open(out).convert("RGB")), dom.stdout


def _pixels_near(img: np.ndarray, rgb: tuple[int, int, int], tol: int = 40) -> int:
    return int((np.abs(img.astype(int) - np.array(rgb)).max(axis=2) <= tol).sum())


def _hex(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def test_run_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    _browser()
    make_corpus(tmp_path / "images" / "a", 4)
    make_corpus(tmp_path / "images" / "b", 2)
    Image.new("RGB", (96, 72), MAGENTA).save(tmp_path / "images" / "b" / "magenta.png")
    result = run(config(str(tmp_path / "images"), str(tmp_path / "out")))
    html = Path(write_run_report(result.uri))
    assert html.name == "report.html" and html.parent == Path(result.uri)
    img, dom = _render(html, tmp_path / "run.png")
    # The histograms' bars, one colour per method, and the magenta image's thumbnails.
    assert _pixels_near(img, _hex(svg.color(0)), 10) > 300
    assert _pixels_near(img, _hex(svg.color(1)), 10) > 300
    assert _pixels_near(img, MAGENTA) > 160 * 100, "the thumbnail of magenta.png is not shown"
    assert dom.count('src="data:image/jpeg;base64,') >= 2 * 8  # best and worst of both methods
    for text in ("qalign_levels", "qbench_binary", "Per folder", "decode_failed", "empty_file",
                 "truncated", "magenta.png", "complete"):
        assert text in dom, text
    assert "<script" not in html.read_text()  # nothing to run, nothing to fetch
    assert "http://" not in html.read_text() and "https://" not in html.read_text()


def test_evaluation_report_renders_scatter_plots_and_the_metrics_table(tmp_path: Path) -> None:
    _browser()
    make_corpus(tmp_path / "images", 12)
    run(config(str(tmp_path / "images"), str(tmp_path / "out"), run_id="r"))
    names = sorted(p.name for p in (tmp_path / "images").glob("img_*"))
    rows = [f"{n},{1 + i % 5}" for i, n in enumerate(names)]
    (tmp_path / "labels.csv").write_text("image,mos\n" + "\n".join(rows) + "\n")
    job = EvaluateJobConfig.model_validate({
        "scores": {"output": str(tmp_path / "out"), "runs": ["r"]},
        "labels": {"uri": str(tmp_path / "labels.csv")}, "n_boot": 50, "plots": False,
    })
    outcome = run_evaluation(job)
    html = Path(outcome.uri) / "report.html"
    assert "report.html" in outcome.summary["files"]
    img, dom = _render(html, tmp_path / "evaluation.png", height=1600)
    assert _pixels_near(img, _hex(svg.color(0)), 10) > 100  # scatter points and bars
    assert _pixels_near(img, (214, 39, 40), 10) > 50  # the fitted logistic curve
    for text in ("SRCC [95% CI]", "PLCC (4-param logistic)", "Score vs MOS", "qalign_levels"):
        assert text in dom, text

"""Compare2Score's official anchor set from stand-in images: named files, the reference's
hard-coded P_a as data, the Compare2Score calibration, published-checksum checks, and
``jobs/build_anchors.py --official`` (no model, no Ray)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from iqa_ray.backends.catalogue import get_preset
from iqa_ray.errors import ConfigError
from iqa_ray.methods.compare2score import official
from iqa_ray.methods.compare2score.anchor_set import read_anchor_images, read_anchor_set, sha256_hex
from iqa_ray.methods.compare2score.maths import OFFICIAL_ANCHOR_MATRIX, map_estimate
from iqa_ray.methods.compare2score.method import QUESTION
from tests.conftest import REPO


def _stand_ins(folder: Path, ext: str = "png") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for name in official.ANCHOR_NAMES:
        path = folder / f"{name}.{ext}"
        Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def test_official_set_is_valid_and_carries_the_reference_setting(tmp_path: Path) -> None:
    paths = _stand_ins(tmp_path / "mine")
    built = official.write_official_anchor_set(tmp_path / "mine", str(tmp_path / "set"))
    stored = read_anchor_set(str(tmp_path / "set"), None)
    np.testing.assert_array_equal(stored.matrix, OFFICIAL_ANCHOR_MATRIX)
    assert [a.sha256 for a in stored.anchors] == [sha256_hex(p.read_bytes()) for p in paths]
    assert read_anchor_images(str(tmp_path / "set"), stored, None)[3] == paths[3].read_bytes()
    preset = get_preset("compare2score")
    cal = stored.calibration
    assert (cal.model_id, cal.model_revision) == (preset.id, preset.revision)
    assert cal.question == QUESTION and cal.temperature == 100.0
    assert cal.layout == f"{{image}} {{image}} {QUESTION} \n"
    assert stored.selection["rule"] == "official" and stored.selection["rows"] == [0, 1, 2, 3, 4]
    assert stored.selection["revision"] == official.DATASET_REVISION
    assert [a.sha256 for a in built.anchors] == [a.sha256 for a in stored.anchors]
    # The spec's reference values with the official P_a (methods.md): b all 0.5 -> 54.06.
    assert map_estimate(stored.matrix, np.full(5, 0.5)).score[0] == pytest.approx(54.06, abs=5e-3)


def test_missing_ambiguous_and_wrong_images_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = _stand_ins(tmp_path / "a")
    paths[2].unlink()
    with pytest.raises(ConfigError, match=r"anchor_2 is missing.*row 2"):
        official.official_anchor_set(tmp_path / "a")
    _stand_ins(tmp_path / "b")
    Image.new("RGB", (4, 4)).save(tmp_path / "b" / "anchor_1.jpg")
    with pytest.raises(ConfigError, match="anchor_1 is ambiguous"):
        official.official_anchor_set(tmp_path / "b")
    _stand_ins(tmp_path / "c")
    monkeypatch.setitem(official.CHECKSUMS, "anchor_0", "0" * 64)
    with pytest.raises(ConfigError, match="not the official anchor_0"):
        official.official_anchor_set(tmp_path / "c")


def _job(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(REPO / "jobs" / "build_anchors.py"), *args],
                          capture_output=True, text=True, timeout=120, cwd=cwd)


def test_build_anchors_official_flag(tmp_path: Path) -> None:
    _stand_ins(tmp_path / "mine", ext="jpg")
    proc = _job("--official", str(tmp_path / "mine"), "--output", str(tmp_path / "set"),
                cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    printed = json.loads(proc.stdout)
    stored = read_anchor_set(str(tmp_path / "set"), None)
    assert printed["sha256"] == [a.sha256 for a in stored.anchors]
    assert [a.file for a in stored.anchors] == [f"images/{k}.jpg" for k in range(5)]
    (tmp_path / "run.yaml").write_text(
        "input: {uri: in/}\noutput: {uri: out/}\nmethods:\n"
        f"  - method: compare2score\n    params: {{anchors: {tmp_path / 'from_config'}}}\n"
    )
    proc = _job("--official", str(tmp_path / "mine"), "--config", str(tmp_path / "run.yaml"),
                cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert read_anchor_set(str(tmp_path / "from_config"), None).selection["rule"] == "official"
    missing = _job("--official", str(tmp_path / "nothing"), "--output", str(tmp_path / "x"),
                   cwd=tmp_path)
    assert missing.returncode == 2 and "anchor_0 is missing" in missing.stderr

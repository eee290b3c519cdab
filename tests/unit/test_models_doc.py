"""docs/models.md stays true: its checkpoint table is the generated one, the configs and job
flags its commands use exist and validate, and the README links it."""

from __future__ import annotations

import re
import subprocess
import sys

from iqa_ray.backends.catalogue import DOC_BEGIN, DOC_END, list_presets, supported_checkpoints
from iqa_ray.scoring.config import RunConfig
from tests.conftest import REPO

DOC = (REPO / "docs" / "models.md").read_text()


def test_supported_checkpoints_table_is_current() -> None:
    start, end = DOC.index(DOC_BEGIN), DOC.index(DOC_END) + len(DOC_END)
    hint = "run: python -m iqa_ray.backends.catalogue, paste into docs/models.md"
    assert DOC[start:end] == supported_checkpoints(), hint
    table = supported_checkpoints()
    for preset in list_presets():
        assert f"| `{preset.name}` | `{preset.id}`" in table


def test_every_config_the_doc_runs_exists_and_validates() -> None:
    configs = sorted(set(re.findall(r"jobs/configs/[\w.-]+\.yaml", DOC)))
    assert {"jobs/configs/qalign_koniq.yaml", "jobs/configs/compare2score_koniq.yaml"} <= set(
        configs
    )
    for path in configs:
        cfg = RunConfig.from_yaml(str(REPO / path), [])
        assert cfg.model.preset in {p.name for p in list_presets()}
        assert cfg.run_id and f"--run {cfg.run_id}" in DOC


def test_job_flags_used_by_the_doc_exist() -> None:
    flags = {"build_anchors.py": ["--official"], "evaluate.py": ["--split", "--labels", "--run"],
             "score.py": ["--list-models"]}
    for script, names in flags.items():
        usage = subprocess.run([sys.executable, str(REPO / "jobs" / script), "--help"],
                               capture_output=True, text=True, check=True, cwd=REPO).stdout
        for name in names:  # the job's own parser accepts it, and the doc uses it
            assert name in usage and name in DOC, (script, name)


def test_readme_links_the_models_doc() -> None:
    readme = (REPO / "README.md").read_text()
    assert "## Supported checkpoints" in readme and "(docs/models.md)" in readme

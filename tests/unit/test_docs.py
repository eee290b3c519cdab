"""The README stays true: its config reference is the generated one, its commands exist."""

from __future__ import annotations

import re

from iqa_ray.scoring.config import RunConfig
from iqa_ray.scoring.reference import BEGIN, END, config_reference
from tests.conftest import REPO

README = (REPO / "README.md").read_text()


def test_config_reference_is_current() -> None:
    start, end = README.index(BEGIN), README.index(END) + len(END)
    hint = "run: python -m iqa_ray.scoring.reference, paste into README"
    assert README[start:end] == config_reference(), hint


def test_every_config_field_is_documented() -> None:
    for name in RunConfig.model_fields:
        assert f"`{name}" in README


def test_ci_runs_the_readme_test_command() -> None:
    ci = (REPO / ".ci" / "run").read_text()
    assert "make test" in ci and "make test" in README
    assert re.search(r"^test:", (REPO / "Makefile").read_text(), re.M)


def test_relative_links_in_the_readme_and_docs_point_to_files() -> None:
    pages = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    for page in pages:
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" not in target:
                assert (page.parent / target).exists(), f"{page.name}: broken link {target}"

"""cluster.yaml is a valid Ray autoscaler config that matches the project's Ray pin and layout."""

from __future__ import annotations

import copy
import re

import pytest
import yaml

from tests.conftest import REPO


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


def test_schema_valid(cluster: dict) -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    # What `ray up` does before launching anything: fill defaults, then the JSON schema check.
    validate_config(prepare_config(copy.deepcopy(cluster)))
    broken = copy.deepcopy(cluster)
    broken["available_node_types"]["gpu_worker"]["min_workers"] = "zero"
    with pytest.raises(Exception, match="zero"):
        validate_config(prepare_config(broken))


def test_same_ray_version_as_the_project(cluster: dict) -> None:
    pin = re.search(r"ray\[[^\]]*\]==([0-9.]+)", (REPO / "pyproject.toml").read_text())
    assert pin is not None
    assert f":{pin.group(1)}-" in cluster["docker"]["image"]


def test_node_types(cluster: dict) -> None:
    types = cluster["available_node_types"]
    assert cluster["head_node_type"] == "head"
    assert types["head"]["resources"] == {"CPU": 0}, "the head runs the driver only"
    assert types["cpu_worker"]["min_workers"] == 0 and types["gpu_worker"]["min_workers"] == 0
    assert "--num-cpus=0" in " ".join(cluster["head_start_ray_commands"])
    assert any("pip install" in c and "iqa_ray" in c for c in cluster["setup_commands"])
    text = (REPO / "cluster.yaml").read_text().lower()
    assert "secret" not in text and "aws_access_key" not in text

"""config/planner.yaml and the README parameter table stay in sync with the node's parameter table."""

from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.ros
params = pytest.importorskip("alpamayo_ros.ros.params")

REPO = Path(__file__).resolve().parents[3]


def test_planner_yaml_is_the_generated_file():
    assert (REPO / "config" / "planner.yaml").read_text() == params.yaml_text(), \
        "regenerate: python -m alpamayo_ros.ros.params --yaml > config/planner.yaml"


def test_planner_yaml_lists_every_parameter_with_its_default():
    values = yaml.safe_load((REPO / "config" / "planner.yaml").read_text())["/**"]["ros__parameters"]
    assert values == params.defaults()
    assert params.planner_config(values).num_samples == values["planning.num_samples"]


def test_every_parameter_is_described_and_bounded_where_numeric():
    for spec in params.PARAMS:
        assert len(spec.description) > 15, spec.name
        numeric = isinstance(spec.default, (int, float)) and not isinstance(spec.default, bool)
        if numeric and not spec.name.startswith("validator."):  # validator thresholds accept .inf
            assert spec.range is not None, f"{spec.name} has no range"


def test_readme_parameter_table_is_current():
    assert params.markdown_table() in (REPO / "README.md").read_text(), \
        "regenerate the README table: python -m alpamayo_ros.ros.params --markdown"

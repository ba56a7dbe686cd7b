"""Planner types agree with the message definitions, and the planning core stays free of ROS and torch."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from alpamayo_ros.planner.types import CandidateFlag

REPO = Path(__file__).resolve().parents[3]


def test_candidate_flags_mirror_the_message() -> None:
    text = (REPO / "msg" / "TrajectorySet.msg").read_text()
    flags = {name: int(value) for name, value in re.findall(r"^uint32 FLAG_(\w+)=(\d+)", text, re.MULTILINE)}
    assert flags == {flag.name: flag.value for flag in CandidateFlag}


def test_planner_imports_without_ros_or_torch() -> None:
    code = (
        "import sys\n"
        "for name in ('rclpy', 'torch', 'sensor_msgs', 'nav_msgs', 'cv_bridge'):\n"
        "    sys.modules[name] = None  # any import of these fails\n"
        "import alpamayo_ros.planner.cycle, alpamayo_ros.planner.images\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr

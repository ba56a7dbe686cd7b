"""Test-wide setup: DDS stays on this machine and every pytest worker gets its own ROS domain."""

from __future__ import annotations

import os
import random
import sys

import pytest

# Never let DDS discovery leave the machine (multicast on eth0 otherwise).
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"


def _domain_id() -> int:
    base = int(os.environ.get("ROS_DOMAIN_ID") or random.randrange(1, 80))
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return (base + int(worker.removeprefix("gw"))) % 100 + 1  # 1..100, inside the documented safe range


os.environ["ROS_DOMAIN_ID"] = str(_domain_id())
# The pip build installs the ament index into the environment prefix (the Makefile sets the same).
os.environ.setdefault("AMENT_PREFIX_PATH", sys.prefix)


@pytest.fixture
def ros_context():
    """A private, initialised rclpy Context (shut down after the test)."""
    rclpy = pytest.importorskip("rclpy")
    ctx = rclpy.context.Context()
    rclpy.init(context=ctx)
    try:
        yield ctx
    finally:
        if ctx.ok():
            rclpy.shutdown(context=ctx)

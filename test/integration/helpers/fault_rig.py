"""A running planner (in-process, real DDS) with a scripted vehicle, a probe and a fault-injecting engine."""

from __future__ import annotations

import math
from dataclasses import fields
from pathlib import Path
from typing import Any

from rclpy.parameter import Parameter

from alpamayo_ros.planner.types import SkipReason
from alpamayo_ros.planner.validator import ValidatorConfig
from alpamayo_ros.ros.planner_node import PlannerNode, load_engine_from_parameters
from faulty_engine import FaultyEngine
from probe import Probe, spin_in_background
from scripted_vehicle import ScriptedVehicle


def planner_parameters(checkpoint: Path, **overrides: Any) -> dict[str, Any]:
    """Test settings: the tiny checkpoint, few tokens, 4 Hz, and every validator threshold off.

    A randomly initialised model samples implausible plans and a loaded 2-core machine is slow; these tests
    are about the node surviving faults, so only the always-on NON_FINITE check stays.
    """
    values: dict[str, Any] = {
        "model.path": str(checkpoint), "model.warmup": False, "model.max_new_tokens": 4,
        "input.image_transport": "raw", "planning.rate_hz": 4.0, "planning.seed": 7,
        "planning.max_input_age_s": 1.0, "diagnostics.rate_hz": 5.0,
    }
    thresholds = [f.name for f in fields(ValidatorConfig) if f.name.startswith("max_")]
    values.update({f"validator.{name}": math.inf for name in thresholds})
    values["validator.stopping_decel_mps2"] = math.inf
    values.update(overrides)
    return values


class Rig:
    """Planner + probe on one single-threaded executor as in the node's `main`, the vehicle on its own (like a
    separate driver process)."""

    def __init__(self, context, checkpoint: Path, name: str, *, vehicle_muted: set[str] | None = None,
                 use_sim_time: bool = False, **overrides: Any) -> None:
        self.context = context
        self.name = f"/{name}"
        self.engines: list[FaultyEngine] = []
        values = planner_parameters(checkpoint, use_sim_time=use_sim_time, **overrides)
        self.planner = PlannerNode(name, context=context, engine_factory=self._engine_factory,
                                   parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])
        self.vehicle = ScriptedVehicle(context, f"{self.name}/input/camera", f"{self.name}/input/odometry",
                                       use_sim_time=use_sim_time, muted=vehicle_muted)
        self.probe = Probe(context, self.name)
        self._stop_spinning = spin_in_background(context, (self.planner, self.probe.node), (self.vehicle,))

    def _engine_factory(self, values: dict[str, Any], config) -> FaultyEngine:
        engine = FaultyEngine(load_engine_from_parameters(values, config))
        self.engines.append(engine)
        return engine

    @property
    def engine(self) -> FaultyEngine:
        return self.engines[-1]

    def wait_planning(self, timeout_s: float = 60.0) -> None:
        """Return once the node has planned from recent inputs (at once when it is planning steadily)."""
        recent_ns, last = self.vehicle.now_ns() - 2 * 1_000_000_000, max(len(self.probe.sets) - 1, 0)
        assert self.probe.wait_plan_after(recent_ns, timeout_s, since=last), f"no plans: {self.stats()}"

    def stats(self) -> dict[str, Any]:
        return self.planner.statistics()

    def skips(self, reason: SkipReason) -> int:
        return self.stats()["skips"].get(reason, 0)

    def rejected(self, source: str) -> int:
        return self.stats()["input_errors"].get(source, 0)

    def close(self) -> None:
        """Stop the executors and destroy the nodes."""
        self._stop_spinning()


def unaccounted(stats: dict[str, Any]) -> int:
    """Ticks not (yet) counted as planned or skipped: 0, or 1 while a cycle runs on the worker."""
    return stats["ticks"] - stats["planned"] - sum(stats["skips"].values())

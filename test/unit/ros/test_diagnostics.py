"""PlannerStats and the diagnostics built from it, without a node: accounting, BUSY, recency, clock pause."""

from __future__ import annotations

import pytest

pytest.importorskip("diagnostic_msgs")

from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402

from alpamayo_ros.msg import PlannerStatus  # noqa: E402
from alpamayo_ros.planner.types import Skip, SkipReason  # noqa: E402
from alpamayo_ros.ros import diagnostics, params  # noqa: E402

pytestmark = pytest.mark.ros


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _statuses(stats: diagnostics.PlannerStats,
              state: int = PlannerStatus.STATE_ACTIVE) -> dict[str, DiagnosticStatus]:
    """The three statuses by kind ('inputs', 'planning', 'model'), every input fresh, no engine."""
    result = diagnostics.statuses("/planner", stats, {"cam": 10**9, "odometry": 10**9}, 10**9,
                                  params.defaults(), None, state)
    return {s.name.split(": ")[1]: s for s in result}


def _values(status: DiagnosticStatus) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values}


def _unaccounted(stats: diagnostics.PlannerStats) -> int:
    snap = stats.snapshot()
    return snap["ticks"] - snap["planned"] - sum(snap["skips"].values())


def test_ticks_are_accounted_for() -> None:
    stats = diagnostics.PlannerStats()
    stats.tick()
    assert _unaccounted(stats) == 1  # a cycle on the worker
    stats.planned({"decode": 1.0}, 2.0)
    stats.tick()
    stats.skipped(Skip(SkipReason.NO_IMAGES, "no frames"))
    assert _unaccounted(stats) == 0
    planning = _values(_statuses(stats)["planning"])
    assert (planning["ticks"], planning["cycles_planned"], planning["cycles_skipped"],
            planning["cycles_in_flight"]) == ("2", "1", "1", "0")
    msg = stats.status_msg(PlannerStatus.STATE_ACTIVE, "m")
    assert (msg.cycles_planned, msg.cycles_skipped, list(msg.skip_reasons), list(msg.skip_counts)) == (
        1, 1, ["no_images"], [1])


def test_busy_ticks_do_not_hide_the_last_outcome() -> None:
    stats = diagnostics.PlannerStats()
    stats.skipped(Skip(SkipReason.MODEL_ERROR, "RuntimeError: boom"))
    stats.skipped(Skip(SkipReason.BUSY, "previous cycle still running (0.3 s)"))
    stats.skipped(Skip(SkipReason.BUSY, "previous cycle still running (0.6 s)"))
    planning = _statuses(stats)["planning"]
    assert planning.level == DiagnosticStatus.ERROR
    assert planning.message == ("skipping: model_error RuntimeError: boom; "
                                "2 tick(s) busy: previous cycle still running (0.6 s)")
    status = stats.status_msg(PlannerStatus.STATE_ACTIVE, "m")
    assert status.message == "model_error: RuntimeError: boom"
    stats.planned({}, 1.0)
    planning = _statuses(stats)["planning"]
    assert (planning.level, planning.message) == (DiagnosticStatus.OK, "planning")


def test_an_error_outcome_is_reported_once_even_if_the_next_tick_ends_otherwise() -> None:
    stats = diagnostics.PlannerStats()
    stats.skipped(Skip(SkipReason.OUT_OF_MEMORY, "OutOfMemoryError: CUDA out of memory"))
    stats.skipped(Skip(SkipReason.FRAMES_MISSING, "cam has no distinct frame"))
    stats.planned({}, 1.0)
    first, second = _statuses(stats)["planning"], _statuses(stats)["planning"]
    assert (first.level, first.message) == (
        DiagnosticStatus.ERROR, "skipping: out_of_memory OutOfMemoryError: CUDA out of memory")
    assert (second.level, second.message) == (DiagnosticStatus.OK, "planning")


def test_rejections_and_resets_warn_while_recent() -> None:
    clock = FakeClock()
    stats = diagnostics.PlannerStats(monotonic=clock)
    stats.input_error("cam", "unsupported image encoding 'yuv'")
    stats.buffers_reset("clock_jump", "ROS time jumped back 6.000 s")
    stats.buffers_reset("time_jump", "odometry stamp 5 ns went back in time")
    inputs = _statuses(stats)["inputs"]
    assert inputs.level == DiagnosticStatus.WARN
    assert inputs.message == ("input buffers reset: ROS time jumped back 6.000 s; "
                              "input buffers reset: odometry stamp 5 ns went back in time; "
                              "rejected cam: unsupported image encoding 'yuv'")
    clock.now += diagnostics.RECENT_S + 0.1
    inputs = _statuses(stats)["inputs"]
    assert (inputs.level, inputs.message) == (DiagnosticStatus.OK, "ok")
    values = _values(inputs)
    counts = (values["rejected/cam"], values["resets/clock_jump"], values["resets/time_jump"])
    assert counts == ("1", "1", "1")


def test_clock_pause_and_errors() -> None:
    stats = diagnostics.PlannerStats()
    stats.planned({}, 1.0)
    stats.set_clock_paused(diagnostics.CLOCK_PAUSE_S + 1.0)
    planning = _statuses(stats)["planning"]
    assert planning.level == DiagnosticStatus.WARN
    assert planning.message.startswith("ROS time has not advanced for 2.0 s")
    stats.set_error("invalid parameters: planning.rate_hz=100.0 is outside [0.1, 30.0]")
    found = _statuses(stats, PlannerStatus.STATE_UNCONFIGURED)
    assert found["model"].level == found["planning"].level == DiagnosticStatus.ERROR
    assert stats.status_msg(PlannerStatus.STATE_UNCONFIGURED, "").state == PlannerStatus.STATE_ERROR

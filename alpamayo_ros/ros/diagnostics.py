"""Planner statistics and their reports: PlannerStatus (machine-readable) and diagnostic_msgs (humans).

`PlannerStats` is ROS-free bookkeeping shared by the subscriber, timer and worker threads; `statuses` turns a
snapshot into DiagnosticStatus entries (input freshness and rejections, buffer resets, sync/planning, ticks
and skipped cycles by reason, latency per stage, model and GPU memory).

Accounting: every timer tick is counted (`tick`) before it ends as exactly one planned or one skipped cycle,
both under one lock, so in any snapshot `planned + skipped <= ticks <= planned + skipped + 1` (at most one
cycle runs on the worker); with the timer stopped and the worker idle, `planned + skipped == ticks`.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

from alpamayo_ros.msg import PlannerStatus
from alpamayo_ros.planner.types import NS_PER_S, Skip, SkipReason

OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR
# An input rejection or buffer reset keeps the inputs status at WARN for this long (steady time), s; the
# counts stay in the status values for good.
RECENT_S = 5.0
# ROS time standing still this long while active is reported (a paused or missing /clock), s.
CLOCK_PAUSE_S = 1.0
# Outcomes reported as ERROR; the newest one is latched until a report has shown it (the next tick may end
# otherwise within one planning period, long before a 1 Hz report).
ERROR_REASONS = (SkipReason.MODEL_ERROR, SkipReason.OUT_OF_MEMORY, SkipReason.NO_VALID_CANDIDATE)


class PlannerStats:
    """Counts and latencies of the planning cycles; every skipped tick is counted under its reason."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._monotonic = monotonic  # steady clock for how recent an input problem is, s
        self.ticks = 0
        self.cycles_planned = 0
        self.skips: Counter[SkipReason] = Counter()
        # The last outcome other than BUSY: a BUSY tick only means a cycle is still running, so it must not
        # hide how the last cycle ended (an ERROR would otherwise last one planning period).
        self.last_skip: Skip | None = None
        self.last_fallback = ""  # source of the plan published for the last skipped cycle, if any
        self.last_outcome_planned = False
        self.busy_ticks = 0  # consecutive BUSY ticks since the last other outcome
        self.last_busy = ""
        self.latched_error: tuple[Skip, str] | None = None  # (skip, fallback): ERROR outcome not yet reported
        self.stage_ms: dict[str, float] = {}
        self.checks: dict[str, str] = {}  # per validator check: the selected candidate's value vs its limit
        self.input_errors: Counter[str] = Counter()  # rejected messages per source (camera name, odometry)
        self.last_input_error = ""
        self.last_input_error_at = -float("inf")  # monotonic s
        self.resets: Counter[str] = Counter()  # input buffer resets per cause (time_jump, clock_jump)
        self.last_resets: dict[str, tuple[str, float]] = {}  # cause -> (message, monotonic s) of the last
        self.clock_paused_s = 0.0  # how long ROS time has stood still (diagnostics timer, steady clock)
        self.error = ""

    def tick(self) -> None:
        """Count a planning timer tick (before it is counted as planned or skipped)."""
        with self._lock:
            self.ticks += 1

    def planned(self, stage_ms: dict[str, float], total_ms: float, validation: Any = None,
                selected: int = 0) -> None:
        checks = {} if validation is None else {
            f"{c.name} [{c.unit}]": f"{float(c.values[selected]):.3g} (limit {c.limit:g})" for c in validation.checks}
        with self._lock:
            self.checks = checks
            self.cycles_planned += 1
            self.last_outcome_planned = True
            self.busy_ticks = 0
            self.stage_ms = {**stage_ms, "cycle_total": total_ms}

    def skipped(self, skip: Skip, fallback: str = "") -> None:
        with self._lock:
            self.skips[skip.reason] += 1
            if skip.reason is SkipReason.BUSY:
                self.busy_ticks += 1
                self.last_busy = skip.detail
                return
            self.last_skip = skip
            self.last_fallback = fallback
            self.last_outcome_planned = False
            self.busy_ticks = 0
            if skip.reason in ERROR_REASONS:
                self.latched_error = (skip, fallback)

    def input_error(self, source: str, message: str) -> None:
        with self._lock:
            self.input_errors[source] += 1
            self.last_input_error = f"rejected {source}: {message}"
            self.last_input_error_at = self._monotonic()

    def buffers_reset(self, cause: str, message: str) -> None:
        """Count a reset of every input buffer (time went backwards)."""
        with self._lock:
            self.resets[cause] += 1
            self.last_resets[cause] = (f"input buffers reset: {message}", self._monotonic())

    def set_clock_paused(self, paused_s: float) -> None:
        with self._lock:
            self.clock_paused_s = paused_s

    def set_error(self, message: str) -> None:
        with self._lock:
            self.error = message

    def snapshot(self, report: bool = False) -> dict[str, Any]:
        """The counters and last outcomes; `report=True` (a diagnostics report) clears the latched error."""
        with self._lock:
            now = self._monotonic()
            latched = self.latched_error
            if report:
                self.latched_error = None
            return {
                "ticks": self.ticks,
                "planned": self.cycles_planned,
                "skips": dict(self.skips),
                "last_skip": self.last_skip,
                "last_fallback": self.last_fallback,
                "last_planned": self.last_outcome_planned,
                "latched_error": latched,
                "busy_ticks": self.busy_ticks,
                "last_busy": self.last_busy,
                "stage_ms": dict(self.stage_ms),
                "checks": dict(self.checks),
                "input_errors": dict(self.input_errors),
                "last_input_error": self.last_input_error,
                "input_error_recent": now - self.last_input_error_at <= RECENT_S,
                "resets": dict(self.resets),
                "recent_resets": [text for text, at in self.last_resets.values() if now - at <= RECENT_S],
                "clock_paused_s": self.clock_paused_s,
                "error": self.error,
            }

    def status_msg(self, state: int, model_id: str) -> PlannerStatus:
        snap = self.snapshot()
        msg = PlannerStatus(state=PlannerStatus.STATE_ERROR if snap["error"] else state, model_id=model_id)
        msg.cycles_planned = snap["planned"]
        msg.cycles_skipped = sum(snap["skips"].values())
        reasons = [r for r in SkipReason if snap["skips"].get(r)]
        msg.skip_reasons = [r.value for r in reasons]
        msg.skip_counts = [snap["skips"][r] for r in reasons]
        msg.stage_names = list(snap["stage_ms"])
        msg.stage_latency_ms = [float(x) for x in snap["stage_ms"].values()]
        last = snap["last_skip"]
        msg.message = snap["error"] or ("" if snap["last_planned"] or last is None
                                        else f"{last.reason.value}: {last.detail}")
        return msg


def _status(name: str, level: int, message: str, values: dict[str, Any]) -> DiagnosticStatus:
    return DiagnosticStatus(
        level=level, name=name, message=message, hardware_id="alpamayo_planner",
        values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])


def statuses(node_name: str, stats: PlannerStats, newest_stamps_ns: dict[str, int | None], now_ns: int,
             values: dict[str, Any], engine: Any, state: int) -> list[DiagnosticStatus]:
    """Input freshness, planning (skips by reason, latency per stage) and model status.

    The planning level follows the last outcome, except that an ERROR outcome since the previous report is
    shown once even if later ticks ended otherwise (it clears the latch: call once per report).
    """
    snap = stats.snapshot(report=True)
    max_age_s = values["planning.max_input_age_s"]

    ages = {src: (None if ns is None else (now_ns - ns) / NS_PER_S) for src, ns in newest_stamps_ns.items()}
    missing = [src for src, age in ages.items() if age is None]
    stale = [src for src, age in ages.items() if age is not None and age > max_age_s]
    recent_error = snap["last_input_error"] if snap["input_error_recent"] else ""
    inputs_level = OK if not (missing or stale or recent_error or snap["recent_resets"]) else WARN
    inputs_msg = "ok" if inputs_level == OK else "; ".join(filter(None, [
        f"no data: {', '.join(missing)}" if missing else "",
        f"stale: {', '.join(stale)}" if stale else "",
        *snap["recent_resets"], recent_error]))
    inputs_values = {f"age_s/{src}": ("none" if a is None else f"{a:.3f}") for src, a in ages.items()}
    inputs_values.update({f"rejected/{src}": n for src, n in snap["input_errors"].items()})
    inputs_values.update({f"resets/{cause}": n for cause, n in snap["resets"].items()})

    skips = snap["skips"]
    last, fallback = snap["latched_error"] or (snap["last_skip"], snap["last_fallback"])
    if snap["error"]:
        plan_level, plan_msg = ERROR, snap["error"]
    elif state != PlannerStatus.STATE_ACTIVE:
        plan_level, plan_msg = WARN, "not active"
    elif snap["clock_paused_s"] >= CLOCK_PAUSE_S:
        plan_level = WARN
        paused_s = snap["clock_paused_s"]
        plan_msg = f"ROS time has not advanced for {paused_s:.1f} s (use_sim_time without /clock?)"
    elif snap["last_planned"] and snap["latched_error"] is None:
        plan_level, plan_msg = OK, "planning"
    elif last is not None:
        plan_level = ERROR if last.reason in ERROR_REASONS else WARN
        plan_msg = f"skipping: {last.reason.value} {last.detail}".strip()
        if fallback:
            plan_msg += f" (published fallback: {fallback})"
        if last.validation is not None:
            plan_msg += f"; {last.validation.summary()}"
    else:
        plan_level, plan_msg = WARN, "waiting for the first cycle"
    if snap["busy_ticks"] and state == PlannerStatus.STATE_ACTIVE and not snap["error"]:
        plan_msg += f"; {snap['busy_ticks']} tick(s) busy: {snap['last_busy']}"
    plan_values: dict[str, Any] = {
        "ticks": snap["ticks"], "cycles_planned": snap["planned"], "cycles_skipped": sum(skips.values()),
        "cycles_in_flight": snap["ticks"] - snap["planned"] - sum(skips.values())}
    plan_values.update({f"skipped/{r.value}": skips.get(r, 0) for r in SkipReason})
    plan_values.update({f"latency_ms/{k}": f"{v:.1f}" for k, v in snap["stage_ms"].items()})
    plan_values.update({f"check/{k}": v for k, v in snap["checks"].items()})

    model_values: dict[str, Any] = {"backend": values["model.backend"], "path": values["model.path"]}
    if engine is not None and hasattr(engine, "describe"):
        model_values.update(engine.describe())
    model_level = ERROR if snap["error"] else (OK if engine is not None else WARN)
    model_msg = snap["error"] or (engine.model_id if engine is not None else "not loaded")
    return [
        _status(f"{node_name}: inputs", inputs_level, inputs_msg, inputs_values),
        _status(f"{node_name}: planning", plan_level, plan_msg, plan_values),
        _status(f"{node_name}: model", model_level, model_msg, model_values),
    ]

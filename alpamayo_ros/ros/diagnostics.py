"""Planner statistics and their reports: PlannerStatus (machine-readable) and diagnostic_msgs (humans).

`PlannerStats` is ROS-free bookkeeping shared by the subscriber, timer and worker threads; `statuses` turns a
snapshot into DiagnosticStatus entries (input freshness, sync/planning, skipped cycles by reason, latency per
stage, model and GPU memory).
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

from alpamayo_ros.msg import PlannerStatus
from alpamayo_ros.planner.types import NS_PER_S, Skip, SkipReason

OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR


class PlannerStats:
    """Counts and latencies of the planning cycles; every skipped tick is counted under its reason."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.cycles_planned = 0
        self.skips: Counter[SkipReason] = Counter()
        self.last_skip: Skip | None = None
        self.last_fallback = ""  # source of the plan published for the last skipped cycle, if any
        self.last_outcome_planned = False
        self.stage_ms: dict[str, float] = {}
        self.checks: dict[str, str] = {}  # per validator check: the selected candidate's value vs its limit
        self.input_errors: Counter[str] = Counter()
        self.last_input_error = ""
        self.error = ""
        self.odom_frame_id = ""

    def planned(self, stage_ms: dict[str, float], total_ms: float, validation: Any = None,
                selected: int = 0) -> None:
        checks = {} if validation is None else {
            f"{c.name} [{c.unit}]": f"{float(c.values[selected]):.3g} (limit {c.limit:g})" for c in validation.checks}
        with self._lock:
            self.checks = checks
            self.cycles_planned += 1
            self.last_outcome_planned = True
            self.stage_ms = {**stage_ms, "cycle_total": total_ms}

    def skipped(self, skip: Skip, fallback: str = "") -> None:
        with self._lock:
            self.skips[skip.reason] += 1
            self.last_skip = skip
            self.last_fallback = fallback
            self.last_outcome_planned = False

    def input_error(self, source: str, message: str) -> None:
        with self._lock:
            self.input_errors[source] += 1
            self.last_input_error = f"{source}: {message}"

    def set_error(self, message: str) -> None:
        with self._lock:
            self.error = message

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "planned": self.cycles_planned,
                "skips": dict(self.skips),
                "last_skip": self.last_skip,
                "last_fallback": self.last_fallback,
                "last_planned": self.last_outcome_planned,
                "stage_ms": dict(self.stage_ms),
                "checks": dict(self.checks),
                "input_errors": dict(self.input_errors),
                "last_input_error": self.last_input_error,
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
    """Input freshness, planning (skips by reason, latency per stage) and model status."""
    snap = stats.snapshot()
    max_age_s = values["planning.max_input_age_s"]

    ages = {src: (None if ns is None else (now_ns - ns) / NS_PER_S) for src, ns in newest_stamps_ns.items()}
    missing = [src for src, age in ages.items() if age is None]
    stale = [src for src, age in ages.items() if age is not None and age > max_age_s]
    inputs_level = OK if not (missing or stale or snap["input_errors"]) else WARN
    inputs_msg = "ok" if inputs_level == OK else "; ".join(filter(None, [
        f"no data: {', '.join(missing)}" if missing else "",
        f"stale: {', '.join(stale)}" if stale else "",
        snap["last_input_error"]]))
    inputs_values = {f"age_s/{src}": ("none" if a is None else f"{a:.3f}") for src, a in ages.items()}
    inputs_values.update({f"rejected/{src}": n for src, n in snap["input_errors"].items()})

    skips = snap["skips"]
    last = snap["last_skip"]
    if snap["error"]:
        plan_level, plan_msg = ERROR, snap["error"]
    elif state != PlannerStatus.STATE_ACTIVE:
        plan_level, plan_msg = WARN, "not active"
    elif snap["last_planned"]:
        plan_level, plan_msg = OK, "planning"
    elif last is not None:
        plan_level = ERROR if last.reason in (SkipReason.MODEL_ERROR, SkipReason.OUT_OF_MEMORY,
                                             SkipReason.NO_VALID_CANDIDATE) else WARN
        plan_msg = f"skipping: {last.reason.value} {last.detail}".strip()
        if snap["last_fallback"]:
            plan_msg += f" (published fallback: {snap['last_fallback']})"
        if last.validation is not None:
            plan_msg += f"; {last.validation.summary()}"
    else:
        plan_level, plan_msg = WARN, "waiting for the first cycle"
    plan_values: dict[str, Any] = {"cycles_planned": snap["planned"], "cycles_skipped": sum(skips.values())}
    plan_values.update({f"skipped/{r.value}": skips.get(r, 0) for r in SkipReason})
    plan_values.update({f"latency_ms/{k}": f"{v:.1f}" for k, v in snap["stage_ms"].items()})
    plan_values.update({f"check/{k}": v for k, v in snap["checks"].items()})

    model_values: dict[str, Any] = {"backend": values["model.backend"], "path": values["model.path"]}
    if engine is not None:
        model_values.update(engine.describe())
    model_level = ERROR if snap["error"] else (OK if engine is not None else WARN)
    model_msg = snap["error"] or (engine.model_id if engine is not None else "not loaded")
    return [
        _status(f"{node_name}: inputs", inputs_level, inputs_msg, inputs_values),
        _status(f"{node_name}: planning", plan_level, plan_msg, plan_values),
        _status(f"{node_name}: model", model_level, model_msg, model_values),
    ]

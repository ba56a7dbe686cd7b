"""Open-loop planning metrics: displacement errors against the driven future, causes named by the reasoning.

ADE(h) is the mean xy distance between the planned and the driven waypoints over every waypoint at or before
the horizon h; FDE(h) is the distance at the waypoint at h. Waypoints are at t0 + 0.1 … t0 + 6.4 s, so the
horizons 1, 3 and 6.4 s are waypoints 10, 30 and 64. z is left out: the model copies it from the history.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from alpamayo_ros.sim.scene import EXPLANATIONS, Cause

HORIZONS_S: tuple[float, ...] = (1.0, 3.0, 6.4)  # reported horizons, s
WAYPOINT_DT_S = 0.1  # spacing of the model's waypoints, s

# Words that name each cause in free text (a real checkpoint's reasoning), tried in this order: the first
# cause with a matching pattern wins. Lead-vehicle braking is tried before following, red before green.
_CAUSE_PATTERNS: tuple[tuple[Cause, str], ...] = (
    (Cause.STOP_FOR_RED_LIGHT, r"\bred (traffic )?(light|signal)\b|\b(light|signal) (is|turns|turned) red\b"),
    (Cause.PROCEED_ON_GREEN, r"\bgreen\b"),
    (Cause.YIELD_TO_PEDESTRIAN, r"\bpedestrians?\b"),
    (Cause.SLOW_FOR_CURVE, r"\bcurves?\b|\bbend\b"),
    (Cause.SLOW_FOR_LEAD, r"\b(brak\w*|slow\w*|decelerat\w*|stopp\w*)\b.*\b(lead\w*|vehicle|car)\b"
                          r"|\b(lead\w*|vehicle|car)\b.*\b(brak\w*|slow\w*|decelerat\w*|stopp\w*)\b"),
    (Cause.FOLLOW_LEAD, r"\b(lead|leading) (vehicle|car)\b|\bfollow\w* the (vehicle|car)\b"),
    (Cause.KEEP_LANE, r"\bkeep (in )?(the |its )?lane\b|\bfollow the road\b|\bcruise\b"),
)


def horizon_index(horizon_s: float, dt_s: float = WAYPOINT_DT_S) -> int:
    """Number of waypoints up to and including the horizon (10 for 1 s at 0.1 s)."""
    return int(round(horizon_s / dt_s))


def displacement_errors(
    pred_xy: np.ndarray, true_xy: np.ndarray, horizons_s: tuple[float, ...] = HORIZONS_S
) -> dict[str, float]:
    """ADE and FDE at each horizon for one trajectory.

    Args:
        pred_xy: [T, 2+] planned positions in the ego frame at t0, m (extra columns ignored).
        true_xy: [T, 2+] driven positions at the same times, m.
        horizons_s: horizons, each at most T·0.1 s.

    Returns:
        {"ade_1.0s": m, "fde_1.0s": m, …} for every horizon.

    Raises:
        ValueError: shapes differ or a horizon exceeds the trajectory.
    """
    pred, true = np.asarray(pred_xy, np.float64)[:, :2], np.asarray(true_xy, np.float64)[:, :2]
    if pred.shape != true.shape:
        raise ValueError(f"predicted {pred.shape} and true {true.shape} trajectories differ in shape")
    errors = np.linalg.norm(pred - true, axis=-1)  # [T]
    out: dict[str, float] = {}
    for horizon in horizons_s:
        n = horizon_index(horizon)
        if not 1 <= n <= len(errors):
            raise ValueError(f"horizon {horizon} s needs {n} waypoints, the trajectory has {len(errors)}")
        out[f"ade_{horizon:.1f}s"] = float(errors[:n].mean())
        out[f"fde_{horizon:.1f}s"] = float(errors[n - 1])
    return out


def cause_from_text(text: str) -> Cause | None:
    """The cause a reasoning text names: an exact explanation string, else the first matching pattern."""
    normalised = " ".join(text.lower().split()).rstrip(".")
    for cause, explanation in EXPLANATIONS.items():
        if normalised == explanation.lower():
            return cause
    for cause, pattern in _CAUSE_PATTERNS:
        if re.search(pattern, normalised):
            return cause
    return None


def cause_from_label(label: str) -> Cause | None:
    """A /ground_truth/cause string (the Cause name, e.g. "STOP_FOR_RED_LIGHT") -> Cause, else None."""
    return Cause.__members__.get(label.strip().upper())


@dataclass
class CycleScore:
    """The score of one planned cycle."""

    t0_s: float  # observation time (bag or scenario seconds)
    errors: dict[str, float] | None  # displacement_errors; None without a driven future
    reasoning: str  # the selected candidate's reasoning
    true_cause: Cause | None  # None when the bag has no cause ground truth
    named_cause: Cause | None = field(init=False)

    def __post_init__(self) -> None:
        self.named_cause = cause_from_text(self.reasoning)

    @property
    def cause_correct(self) -> bool | None:
        return None if self.true_cause is None else self.named_cause == self.true_cause


def summarize(cycles: list[CycleScore]) -> dict[str, object]:
    """Means over the cycles: displacement errors over those with a driven future, cause accuracy over those
    with a true cause (absent without any), and per true cause the count and accuracy.
    """
    scored = [c.errors for c in cycles if c.errors is not None]
    summary: dict[str, object] = {"cycles_scored": len(scored)}
    if scored:
        summary.update({key: float(np.mean([e[key] for e in scored])) for key in scored[0]})
    judged = [c for c in cycles if c.true_cause is not None]
    if judged:
        summary["cause_accuracy"] = float(np.mean([c.cause_correct for c in judged]))
        totals = Counter(c.true_cause.name for c in judged)
        right = Counter(c.true_cause.name for c in judged if c.cause_correct)
        summary["cause_accuracy_by_cause"] = {
            name: {"cycles": totals[name], "accuracy": right[name] / totals[name]} for name in sorted(totals)
        }
    return summary

"""Images for the demo and the evaluation tool, drawn with OpenCV (RGB uint8 arrays; no plotting library).

`bird_eye_view` draws trajectories in the ego frame at t0 (x forward = up, y left = left), `compose_cycle`
puts the camera views, that view and the reasoning of one planning cycle on one canvas, and `line_chart` /
`bar_timeline` are the evaluation plots.
"""

from __future__ import annotations

import textwrap

import cv2
import numpy as np

from alpamayo_ros.sim.metrics import CycleScore

WHITE, BLACK, GREY = (255, 255, 255), (0, 0, 0), (150, 150, 150)
CANDIDATE, SELECTED, DRIVEN = (90, 140, 255), (40, 200, 60), (235, 60, 50)  # RGB
GOOD, BAD = (40, 170, 60), (210, 60, 50)
FONT = cv2.FONT_HERSHEY_SIMPLEX


def _text(image: np.ndarray, text: str, xy: tuple[int, int], scale: float = 0.5, color=BLACK,
          thickness: int = 1) -> None:
    cv2.putText(image, text, xy, FONT, scale, color, thickness, cv2.LINE_AA)


def bird_eye_view(candidates: np.ndarray, selected: int, driven: np.ndarray | None, size: int = 420,
                  ahead_m: float = 90.0, behind_m: float = 10.0) -> np.ndarray:
    """Top view of one cycle's trajectories in the ego frame at t0.

    Args:
        candidates: [S, T, 3] every candidate, m (x forward, y left).
        selected: index of the published candidate (-1: none).
        driven: [T, 3] the driven future, or None.
        size: square image side, px.
        ahead_m, behind_m: x range shown, m; y spans the same width, centred.

    Returns:
        [size, size, 3] uint8 RGB.
    """
    image = np.full((size, size, 3), 245, np.uint8)
    scale = size / (ahead_m + behind_m)  # px per m

    def px(xy: np.ndarray) -> np.ndarray:  # [N, 2] m -> [N, 2] int32 px (x up, y left)
        u = size / 2 - xy[:, 1] * scale
        v = size - (xy[:, 0] + behind_m) * scale
        return np.round(np.stack([u, v], axis=-1) * 16).astype(np.int32)  # 4 fractional bits

    for x in range(0, int(ahead_m) + 1, 10):  # 10 m grid, labelled every 20 m
        v = int(size - (x + behind_m) * scale)
        cv2.line(image, (0, v), (size, v), (225, 225, 225), 1)
        if x % 20 == 0:
            _text(image, f"{x} m", (4, v - 3), 0.4, GREY)
    for index, path in enumerate(candidates):
        if index != selected:
            cv2.polylines(image, [px(path[:, :2])], False, CANDIDATE, 1, cv2.LINE_AA, 4)
    if driven is not None:  # wide and under the selected plan, so both stay visible where they agree
        cv2.polylines(image, [px(driven[:, :2])], False, DRIVEN, 6, cv2.LINE_AA, 4)
    if 0 <= selected < len(candidates):
        cv2.polylines(image, [px(candidates[selected][:, :2])], False, SELECTED, 2, cv2.LINE_AA, 4)
    ego = np.array([[3.8, 0.95], [3.8, -0.95], [-1.0, -0.95], [-1.0, 0.95]])  # footprint, m
    cv2.fillConvexPoly(image, px(ego), (60, 60, 60), cv2.LINE_AA, 4)
    legend = (("candidates", CANDIDATE), ("selected", SELECTED), ("driven future", DRIVEN))
    for row, (label, color) in enumerate(legend):
        y = 18 + 18 * row
        cv2.line(image, (size - 150, y - 4), (size - 125, y - 4), color, 2, cv2.LINE_AA)
        _text(image, label, (size - 118, y), 0.45)
    return image


def compose_cycle(views: list[np.ndarray], bev: np.ndarray, score: CycleScore, inference_ms: float,
                  view_hw: tuple[int, int] = (180, 320)) -> np.ndarray:
    """One cycle's panel: the camera views in a row, under them the bird's-eye view and the text.

    Args:
        views: [H, W, 3] RGB camera images at t0 (model camera order); missing ones are drawn grey.
        bev: from `bird_eye_view`.
        score: the cycle's score (t0, reasoning, causes, errors).
        inference_ms: the node's cycle time.

    Returns:
        [view_h + bev_h, 4·view_w, 3] uint8 RGB.
    """
    height, width = view_hw
    row = [cv2.resize(v, (width, height), interpolation=cv2.INTER_AREA) for v in views]
    row += [np.full((height, width, 3), 128, np.uint8)] * (4 - len(row))
    canvas = np.full((height + bev.shape[0], 4 * width, 3), 255, np.uint8)
    canvas[:height] = np.concatenate(row[:4], axis=1)
    canvas[height:, : bev.shape[1]] = bev
    x, y = bev.shape[1] + 20, height + 35
    _text(canvas, f"t0 = {score.t0_s:.1f} s   cycle time {inference_ms:.0f} ms", (x, y), 0.6)
    y += 40
    _text(canvas, "Chain-of-Causation:", (x, y), 0.6, GREY)
    for line in textwrap.wrap(score.reasoning or "(no reasoning published)", 38):
        y += 32
        _text(canvas, line, (x, y), 0.85, BLACK, 2)
    y += 45
    if score.true_cause is not None:
        ok = score.cause_correct
        _text(canvas, f"true cause: {score.true_cause.name.lower()}", (x, y), 0.6)
        _text(canvas, "names it" if ok else "misses it", (x + 420, y), 0.6, GOOD if ok else BAD, 2)
        y += 32
    if score.errors is not None:
        e = score.errors
        ade = " / ".join(f"{e[f'ade_{h}s']:.2f}" for h in ("1.0", "3.0", "6.4"))
        _text(canvas, f"ADE 1/3/6.4 s: {ade} m", (x, y), 0.6)
        _text(canvas, f"FDE 6.4 s: {e['fde_6.4s']:.2f} m", (x, y + 30), 0.6)
    return canvas


def line_chart(series: dict[str, tuple[np.ndarray, np.ndarray]], title: str, x_label: str, y_label: str,
               size: tuple[int, int] = (480, 720)) -> np.ndarray:
    """Lines y(x) on shared axes starting at 0, one colour per series, with a legend -> [H, W, 3] RGB."""
    height, width = size
    image = np.full((height, width, 3), 255, np.uint8)
    left, right, top, bottom = 70, 20, 40, 50
    x_max = max(float(np.max(x)) for x, _ in series.values())
    y_max = max(float(np.nanmax(y)) for _, y in series.values()) * 1.1 or 1.0

    def px(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        u = left + x / x_max * (width - left - right)
        v = height - bottom - y / y_max * (height - top - bottom)
        return np.round(np.stack([u, v], axis=-1)).astype(np.int32)

    for k in range(6):  # horizontal grid with labels
        value = y_max * k / 5
        v = int(px(np.zeros(1), np.array([value]))[0, 1])
        cv2.line(image, (left, v), (width - right, v), (230, 230, 230), 1)
        _text(image, f"{value:.1f}", (8, v + 5), 0.45, GREY)
    for value in range(int(x_max) + 1):  # vertical grid at whole x units
        u = int(px(np.array([float(value)]), np.zeros(1))[0, 0])
        cv2.line(image, (u, top), (u, height - bottom), (230, 230, 230), 1)
        _text(image, f"{value}", (u - 4, height - bottom + 18), 0.45, GREY)
    cv2.rectangle(image, (left, top), (width - right, height - bottom), GREY, 1)
    colors = (SELECTED, DRIVEN, CANDIDATE, (200, 140, 0), (140, 60, 200))
    for i, (label, (x, y)) in enumerate(series.items()):
        color = colors[i % len(colors)]
        cv2.polylines(image, [px(np.asarray(x), np.asarray(y))], False, color, 2, cv2.LINE_AA)
        _text(image, label, (left + 10, top + 20 + 20 * i), 0.5, color, 1)
    _text(image, title, (left, 25), 0.6)
    _text(image, x_label, (width // 2 - 60, height - 8), 0.5, GREY)
    _text(image, y_label, (8, top - 10), 0.45, GREY)
    return image


def bar_timeline(t_s: np.ndarray, values: np.ndarray, good: np.ndarray | None, title: str,
                 size: tuple[int, int] = (360, 900)) -> np.ndarray:
    """One bar per cycle at its time, green where `good` (grey where None) -> [H, W, 3] RGB."""
    height, width = size
    image = np.full((height, width, 3), 255, np.uint8)
    left, right, top, bottom = 60, 20, 40, 40
    t = np.asarray(t_s, float)
    span = max(float(t.max() - t.min()), 1.0) if len(t) else 1.0
    top_value = max(float(np.nanmax(values)) * 1.1, 1e-6) if len(values) else 1.0
    bar = max(2, int((width - left - right) / max(len(t), 1) * 0.7))
    for k in range(5):
        value = top_value * k / 4
        v = int(height - bottom - value / top_value * (height - top - bottom))
        cv2.line(image, (left, v), (width - right, v), (230, 230, 230), 1)
        _text(image, f"{value:.1f}", (8, v + 5), 0.45, GREY)
    for i, (time_s, value) in enumerate(zip(t, values)):
        if not np.isfinite(value):
            continue
        u = int(left + (time_s - t.min()) / span * (width - left - right - bar))
        v = int(height - bottom - value / top_value * (height - top - bottom))
        color = GREY if good is None or good[i] is None else (GOOD if good[i] else BAD)
        cv2.rectangle(image, (u, v), (u + bar, height - bottom), color, -1)
    _text(image, title, (left, 25), 0.6)
    if len(t):
        _text(image, f"t0 {t.min():.1f} .. {t.max():.1f} s", (left, height - 12), 0.5, GREY)
    return image

"""Other road users: the lead vehicle, oncoming and crossing cars, and the pedestrian.

Their motion is prescribed (they do not react to the ego); the ego reacts to the lead and the pedestrian
(driver.py). All tracks are sampled on the scenario's time grid `t_s` [N].
"""

from __future__ import annotations

import numpy as np

from alpamayo_ros.sim.driver import LeadTrack
from alpamayo_ros.sim.scene import ActorKind, ActorTrack, RoadLayout

CAR_SIZE_M = (4.5, 1.85, 1.45)  # length, width, height
PEDESTRIAN_SIZE_M = (0.35, 0.55, 1.75)
# Common car paints (sRGB): white, silver, grey, black, dark blue, red, dark green, beige.
CAR_COLORS = ((225, 225, 222), (170, 172, 175), (95, 98, 102), (30, 30, 34), (30, 50, 110), (150, 25, 25),
              (30, 70, 45), (190, 175, 140))
PEDESTRIAN_COLORS = ((200, 60, 40), (40, 90, 170), (230, 190, 60), (60, 140, 80))


def _car_color(rng: np.random.Generator) -> tuple[int, int, int]:
    return CAR_COLORS[int(rng.integers(len(CAR_COLORS)))]


def speed_profile(
    t_s: np.ndarray, targets: list[tuple[float, float, float]], initial_mps: float, max_jerk_mps3: float = 6.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integrate a jerk-limited speed profile that chases piecewise speed targets.

    Args:
        t_s: [N] uniform time grid, s.
        targets: (start_time_s, target_speed_mps, accel_magnitude_mps2) phases; from each start time the speed
            moves toward the target at the given acceleration magnitude.
        initial_mps: speed at t = 0.

    Returns:
        distance travelled [N] m, speed [N] m/s, acceleration [N] m/s^2.
    """
    dt = float(t_s[1] - t_s[0])
    n = len(t_s)
    dist, v, a = np.zeros(n), np.zeros(n), np.zeros(n)
    v[0] = initial_mps
    target, magnitude = initial_mps, 0.0
    phases = sorted(targets)
    for i in range(n - 1):
        while phases and phases[0][0] <= t_s[i]:
            _, target, magnitude = phases.pop(0)
        # Ease into the target (closing the error in about 0.5 s); aim slightly below a zero target so the
        # vehicle really comes to a standstill instead of creeping toward it.
        error = target - v[i] - (0.2 if target <= 0.0 else 0.0)
        a_cmd = float(np.clip(2.0 * error, -magnitude, magnitude))
        a_next = a[i] + float(np.clip(a_cmd - a[i], -max_jerk_mps3 * dt, max_jerk_mps3 * dt))
        v_next = max(0.0, v[i] + a_next * dt)
        if v_next == 0.0:
            a_next = 0.0
        a[i + 1], v[i + 1] = a_next, v_next
        dist[i + 1] = dist[i] + 0.5 * (v[i] + v_next) * dt
    return dist, v, a


def lead_vehicle(
    rng: np.random.Generator, t_s: np.ndarray, layout: RoadLayout, ego_cruise_mps: float, start_gap_m: float
) -> tuple[LeadTrack, ActorTrack]:
    """A car ahead in the ego lane that cruises, brakes hard (to a stop or a crawl), waits, and drives on.

    Returns:
        The lead for the driver and the same car as a rendered actor.
    """
    cruise = ego_cruise_mps * rng.uniform(0.8, 0.9)
    brake_at = rng.uniform(4.0, 7.0)
    decel = rng.uniform(3.0, 5.0)
    low = 0.0 if rng.random() < 0.5 else rng.uniform(2.0, 4.0)
    resume_at = brake_at + cruise / decel + rng.uniform(1.5, 3.0)
    dist, v, a = speed_profile(t_s, [(brake_at, low, decel), (resume_at, cruise, 1.5)], cruise)
    s = dist + start_gap_m
    lead = LeadTrack(s_m=s, speed_mps=v, accel_mps2=a, length_m=CAR_SIZE_M[0])
    xy, heading, _ = layout.lane.sample(s)
    return lead, ActorTrack(ActorKind.CAR, CAR_SIZE_M, _car_color(rng), t_s, xy, heading, a)


def oncoming_cars(rng: np.random.Generator, t_s: np.ndarray, layout: RoadLayout,
                  count: int) -> list[ActorTrack]:
    """Cars in the oncoming lane at constant speed, spread along the road ahead."""
    tracks = []
    for _ in range(count):
        speed = rng.uniform(8.0, 13.0)
        s = rng.uniform(30.0, 0.7 * layout.lane.end_s_m) - speed * t_s
        xy = layout.lane.offset(s, layout.lane_width_m)
        _, heading, _ = layout.lane.sample(s)
        tracks.append(ActorTrack(ActorKind.CAR, CAR_SIZE_M, _car_color(rng), t_s, xy, heading + np.pi,
                                 np.zeros_like(t_s)))
    return tracks


def _cross_road_car(
    layout: RoadLayout, t_s: np.ndarray, direction: int, offset_m: np.ndarray, accel: np.ndarray,
    color: tuple[int, int, int],
) -> ActorTrack:
    """A car on the cross road; `direction` +1 drives to the ego's left, -1 to its right; `offset_m` [N] is
    its signed position along its own direction relative to the intersection centre (negative before it)."""
    center, along, cross = layout.intersection_frame()
    lane_side = direction * 0.5 * layout.lane_width_m  # right-hand traffic: +1 uses the far half
    xy = center + lane_side * along + (direction * offset_m)[:, None] * cross
    heading = np.arctan2(direction * cross[1], direction * cross[0])
    return ActorTrack(ActorKind.CAR, CAR_SIZE_M, color, t_s, xy, np.full_like(t_s, heading), accel)


def crossing_cars(
    rng: np.random.Generator, t_s: np.ndarray, layout: RoadLayout, center_times_s: list[float]
) -> list[ActorTrack]:
    """Cars crossing the intersection at constant speed, each passing its centre at the given time."""
    tracks = []
    for t_center in center_times_s:
        speed = rng.uniform(8.0, 12.0)
        direction = 1 if rng.random() < 0.5 else -1
        tracks.append(_cross_road_car(layout, t_s, direction, speed * (t_s - t_center), np.zeros_like(t_s),
                                      _car_color(rng)))
    return tracks


def waiting_cars(rng: np.random.Generator, t_s: np.ndarray, layout: RoadLayout,
                 count: int) -> list[ActorTrack]:
    """Cars standing at the cross road's stop lines (their light is red while the ego's is green)."""
    stop_offset = layout.cross_half_width_m + layout.sidewalk_width_m + 2.0 + 0.5 * CAR_SIZE_M[0]
    tracks = []
    for direction in (1, -1)[:count]:
        tracks.append(_cross_road_car(layout, t_s, direction, np.full_like(t_s, -stop_offset),
                                      np.zeros_like(t_s), _car_color(rng)))
    return tracks


def pedestrian(
    rng: np.random.Generator, t_s: np.ndarray, layout: RoadLayout, enter_road_at_s: float
) -> tuple[ActorTrack, np.ndarray]:
    """A pedestrian who crosses the road on the zebra crossing, stepping off the curb at `enter_road_at_s`.

    Returns:
        The rendered actor and a [N] bool mask: True while the pedestrian is entering or inside the ego
        lane (from 1 m before the curb until 0.8 m past the far edge of the ego lane): the ego must yield.
    """
    if layout.crosswalk_s_m is None:
        raise ValueError("pedestrian() needs a layout with a crosswalk")
    walk_mps = rng.uniform(1.1, 1.5)
    direction = 1 if rng.random() < 0.5 else -1  # +1 walks from the right curb to the left one
    near_curb = layout.right_edge_m if direction > 0 else layout.left_edge_m
    far_curb = layout.left_edge_m if direction > 0 else layout.right_edge_m
    start_lat = near_curb - direction * 1.5
    end_lat = far_curb + direction * 1.5
    walk_start = enter_road_at_s - 1.5 / walk_mps
    walk_s = np.clip(t_s - walk_start, 0.0, abs(end_lat - start_lat) / walk_mps)  # [N] time spent walking
    lateral = start_lat + direction * walk_mps * walk_s
    s_walk = float(np.mean(layout.crosswalk_s_m)) + rng.uniform(-0.8, 0.8)
    xy = layout.lane.offset(np.full_like(t_s, s_walk), lateral)
    _, heading, _ = layout.lane.sample(s_walk)
    yaw = np.full_like(t_s, heading + direction * 0.5 * np.pi)
    ego_far_edge = direction * 0.5 * layout.lane_width_m
    blocking = (direction * (lateral - near_curb) > -1.0) & (direction * (lateral - ego_far_edge) < 0.8)
    color = PEDESTRIAN_COLORS[int(rng.integers(len(PEDESTRIAN_COLORS)))]
    person = ActorTrack(ActorKind.PEDESTRIAN, PEDESTRIAN_SIZE_M, color, t_s, xy, yaw, np.zeros_like(t_s))
    return person, blocking

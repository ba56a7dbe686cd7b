"""One node, a config switch: a tiny R1-style and a tiny Alpamayo-1.5-style checkpoint end to end, the 1.5 route
input (~/input/route, with its age limit) and scene questions (~/ask) through real rclpy."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.ros

rclpy = pytest.importorskip("rclpy")
from rclpy.parameter import Parameter  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from alpamayo_ros.model.alpamayo import AlpamayoR1  # noqa: E402
from alpamayo_ros.model.config import PRESETS  # noqa: E402
from alpamayo_ros.model.loading import save_pretrained  # noqa: E402
from alpamayo_ros.model.tokenizer import build_tiny_tokenizer  # noqa: E402
from alpamayo_ros.msg import TrajectorySet  # noqa: E402
from alpamayo_ros.ros.convert import stamp_to_ns  # noqa: E402
from alpamayo_ros.ros.planner_node import PlannerNode, load_engine_from_parameters  # noqa: E402
from alpamayo_ros.srv import Ask  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from probe import spin_in_background  # noqa: E402
from sensors import FakeVehicle  # noqa: E402

NS = "/alpamayo_planner"
ROUTE = "Turn left in 40m"


def _checkpoint(path: Path, preset: str) -> Path:
    config = PRESETS[preset]
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = AlpamayoR1(config, build_tiny_tokenizer(config.tokens, family=config.family)).eval()
    save_pretrained(model, path)
    return path


class SpyEngine:
    """The real engine, recording the route each plan call received (it changes nothing)."""

    def __init__(self, engine) -> None:
        self.engine, self.routes, self.observations = engine, [], []

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def plan(self, obs, *, num_samples, seed, route=None, guidance_weight=None):
        self.routes.append(route)
        self.observations.append(obs)
        return self.engine.plan(obs, num_samples=num_samples, seed=seed, route=route,
                                guidance_weight=guidance_weight)


@pytest.fixture
def make_running(ros_context, tmp_path):
    started = []

    def start(preset: str, **overrides):
        spies: list[SpyEngine] = []

        def factory(values, config):
            spies.append(SpyEngine(load_engine_from_parameters(values, config)))
            return spies[-1]

        params = [Parameter("model.path", value=str(_checkpoint(tmp_path / preset, preset))),
                  Parameter("input.image_transport", value="raw"), Parameter("model.warmup", value=False),
                  Parameter("model.max_new_tokens", value=8), Parameter("planning.rate_hz", value=2.0),
                  Parameter("planning.max_input_age_s", value=5.0),
                  Parameter("output.no_valid_policy", value="publish_as_is"),
                  Parameter("validator.max_plan_age_s", value=math.inf),
                  *(Parameter(k, value=v) for k, v in overrides.items())]
        planner = PlannerNode(context=ros_context, parameter_overrides=params, engine_factory=factory)
        vehicle = FakeVehicle(ros_context, f"{NS}/input/camera", odom_topic=f"{NS}/input/odometry")
        helper = rclpy.create_node("family_test", context=ros_context)
        sets: list[TrajectorySet] = []
        helper.create_subscription(TrajectorySet, f"{NS}/output/trajectory_set", sets.append, 10)
        route_pub = helper.create_publisher(String, f"{NS}/input/route", 10)
        started.append(spin_in_background(ros_context, (planner,), (vehicle, helper)))
        return planner, spies[0], helper, route_pub, sets

    yield start
    for stop in started:
        stop()


def _wait(predicate, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not predicate():
        time.sleep(0.05)
    return bool(predicate())


def _ask(helper, question: str) -> Ask.Response:
    client = helper.create_client(Ask, f"{NS}/ask")
    assert client.wait_for_service(timeout_sec=10.0)
    future = client.call_async(Ask.Request(question=question))
    assert _wait(future.done, 60.0), "~/ask did not answer"
    return future.result()


def test_r1_checkpoint_plans_and_declines_questions_and_routes(make_running):
    planner, spy, helper, route_pub, sets = make_running("tiny")
    assert spy.family == "r1"
    assert _wait(lambda: len(sets) >= 2, 90.0)
    route_pub.publish(String(data=ROUTE))
    answer = _ask(helper, "What is ahead?")
    assert not answer.success and "Alpamayo-R1" in answer.message
    count = len(spy.routes)
    assert _wait(lambda: len(spy.routes) >= count + 2, 60.0)
    assert set(spy.routes) == {None}, "an R1 checkpoint must never get a route"
    assert planner.statistics()["input_errors"].get("route", 0) >= 1


def test_a15_checkpoint_uses_fresh_routes_and_answers_questions(make_running):
    planner, spy, helper, route_pub, sets = make_running("tiny-a15", **{"route.max_age_s": 2.0})
    assert spy.family == "a15"
    assert _wait(lambda: len(sets) >= 2, 90.0)
    assert set(spy.routes) == {None}
    route_pub.publish(String(data=ROUTE))
    assert _wait(lambda: ROUTE in spy.routes, 60.0), "the route never reached the model"
    # The route text is in the 1.5 prompt the model saw (and absent without it).
    obs = spy.observations[spy.routes.index(ROUTE)]
    model = spy.engine.model
    images = spy.engine._images(obs)
    hist = torch.from_numpy(obs.history_xyz)[None]
    with_route = model.prepare_inputs(images, hist, route=[ROUTE])[0][0].tolist()
    without = model.prepare_inputs(images, hist)[0][0].tolist()
    route_ids = model.tokenizer(ROUTE, add_special_tokens=False)["input_ids"]
    assert len(with_route) == len(without) + len(route_ids) + 2  # <|route_start|> text <|route_end|>
    # Older than route.max_age_s (2 s): planning goes on without it.
    time.sleep(2.5)
    count = len(spy.routes)
    assert _wait(lambda: len(spy.routes) >= count + 2, 60.0)
    assert spy.routes[-1] is None

    answer = _ask(helper, "What is ahead?")
    assert answer.success, answer.message
    assert isinstance(answer.answer, str)
    assert stamp_to_ns(answer.observation_time) > 0
    bad = _ask(helper, "<|route_start|>")  # special tokens are refused, the node keeps running
    assert not bad.success and bad.message
    count = len(sets)
    assert _wait(lambda: len(sets) >= count + 1, 60.0)

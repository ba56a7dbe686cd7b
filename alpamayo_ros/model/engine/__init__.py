"""Fast inference path for `AlpamayoR1`: static KV cache, CUDA graphs, batched and cached vision encoding.

`FastEngine(model).plan(...)` takes `AlpamayoR1.plan`'s arguments (plus optional frame ids for the vision
cache) and returns the same `PlanOutput`; both satisfy `Planner`. See docs/PERFORMANCE.md.
"""

from alpamayo_ros.model.engine.fast import FastEngine, FastEngineConfig
from alpamayo_ros.model.engine.protocol import Planner

__all__ = ["FastEngine", "FastEngineConfig", "Planner"]

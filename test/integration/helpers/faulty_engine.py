"""An engine wrapper that fails on request, for faults a CPU test machine cannot produce (CUDA out of memory).

The node takes it through its `engine_factory` argument; production code never sees it.
"""

from __future__ import annotations

import dataclasses
import enum
import threading
import time
from typing import Any

import numpy as np
import torch

from alpamayo_ros.planner.types import EngineResult, Observation


class Fault(enum.Enum):
    EXCEPTION = "exception"  # the model raises RuntimeError
    OUT_OF_MEMORY = "out_of_memory"  # the model raises torch.cuda.OutOfMemoryError (what CUDA raises)
    NAN = "nan"  # one waypoint of every sample becomes NaN
    BAD_SHAPE = "bad_shape"  # xyz loses its z column: breaks the engine contract
    SLOW = "slow"  # the call takes `slow_s` longer


class FaultyEngine:
    """Forwards to `inner`; each injected fault applies to exactly one later `plan` call (FIFO)."""

    def __init__(self, inner: Any, slow_s: float = 2.5) -> None:
        self.inner = inner
        self.slow_s = slow_s
        self._lock = threading.Lock()
        self._pending: list[Fault] = []
        self.faulted: list[tuple[Fault, int]] = []  # (fault, t0 ns) of every call a fault was applied to
        self.calls = 0

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    @property
    def max_new_tokens(self) -> int:
        return self.inner.max_new_tokens

    @max_new_tokens.setter
    def max_new_tokens(self, value: int) -> None:
        self.inner.max_new_tokens = value

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()

    def inject(self, fault: Fault) -> None:
        with self._lock:
            self._pending.append(fault)

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def plan(self, obs: Observation, *, num_samples: int, seed: int | None) -> EngineResult:
        with self._lock:
            self.calls += 1
            fault = self._pending.pop(0) if self._pending else None
            if fault is not None:
                self.faulted.append((fault, obs.t0_ns))
        if fault is Fault.EXCEPTION:
            raise RuntimeError("injected engine fault")
        if fault is Fault.OUT_OF_MEMORY:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (injected)")
        if fault is Fault.SLOW:
            time.sleep(self.slow_s)
        result = self.inner.plan(obs, num_samples=num_samples, seed=seed)
        if fault is Fault.NAN:
            xyz = np.array(result.xyz, copy=True)  # [S, T, 3]
            xyz[:, 10, :] = np.nan
            return dataclasses.replace(result, xyz=xyz)
        if fault is Fault.BAD_SHAPE:
            return dataclasses.replace(result, xyz=np.asarray(result.xyz)[:, :, :2])
        return result

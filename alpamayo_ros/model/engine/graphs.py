"""Run fixed-shape steps eagerly, or capture them once as CUDA graphs and replay them.

A step is a zero-argument callable that reads and writes only preallocated buffers (gpt-fast's static-input
pattern, done with `torch.cuda.CUDAGraph` directly so that capture is explicit and happens in `prepare`, never
in the middle of a plan: capturing runs the step a few times, which would overwrite live state). On CPU, or
with graphs disabled, `run` simply calls the step.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

import torch

_WARMUP_RUNS = 2  # eager runs on a side stream before capture (lazy inits, allocator warm-up)

Step = Callable[[], None]


class GraphRunner:
    """Steps by key: captured CUDA graphs sharing one memory pool, or plain eager calls."""

    def __init__(self, device: torch.device, enabled: bool, generator: torch.Generator | None = None) -> None:
        """Args:
        device: where the steps run; graphs need CUDA.
        enabled: capture graphs (ignored unless `device` is CUDA).
        generator: a non-default CUDA generator the steps draw from; registered with every graph so each
            replay advances it like an eager run would.
        """
        self.enabled = enabled and device.type == "cuda"
        self.generator = generator
        self._graphs: dict[Hashable, torch.cuda.CUDAGraph] = {}
        self._pool = torch.cuda.graph_pool_handle() if self.enabled else None

    def prepare(self, key: Hashable, step: Step) -> None:
        """Capture `step` under `key` unless already captured (no-op when eager); runs `step` a few times."""
        if not self.enabled or key in self._graphs:
            return
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(_WARMUP_RUNS):
                step()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        if self.generator is not None:
            graph.register_generator_state(self.generator)
        # thread_local: other threads of the node may use CUDA while this one captures.
        with torch.cuda.graph(graph, pool=self._pool, capture_error_mode="thread_local"):
            step()
        self._graphs[key] = graph

    def run(self, key: Hashable, step: Step) -> None:
        """Replay the graph of `key` (must be prepared), or call `step` when eager."""
        if not self.enabled:
            step()
            return
        graph = self._graphs.get(key)
        if graph is None:
            raise RuntimeError(f"CUDA graph {key!r} was not prepared before the run")
        graph.replay()

    def reset(self) -> None:
        """Drop every graph and their memory pool (their buffers are about to be reallocated)."""
        self._graphs.clear()
        self._pool = torch.cuda.graph_pool_handle() if self.enabled else None

"""Fixtures of every unit test."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def _single_torch_thread():
    """The tiny models are latency-bound: with pytest-xdist workers on 2 cores, torch's intra-op threads
    oversubscribe the CPU (model suite 26 s vs 11 s single-threaded under load). Restored afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)

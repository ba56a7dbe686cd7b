"""Smoke test of the benchmark CLI (`python -m alpamayo_ros.bench`) on the tiny preset, CPU."""

from __future__ import annotations

import json

import torch

from alpamayo_ros import bench


def test_bench_writes_json_and_markdown(tmp_path, capsys):
    args = ["--config", "tiny", "--device", "cpu", "--reps", "1", "--warmup", "1", "--coc-tokens", "3",
            "--samples", "2", "--output-dir", str(tmp_path)]
    assert bench.main(args) == 0
    report = json.loads((tmp_path / "bench_tiny_cpu_float32_s2.json").read_text())
    assert report["device"] == "cpu" and report["dtype"] == "float32" and report["peak_gpu_mem_mb"] is None
    assert report["samples"] == 2 and report["coc_tokens"] == 3 and report["decode"] == "forced"
    assert set(report["stages_ms"]) == set(bench.VARIANTS)
    for variant in bench.VARIANTS:
        assert set(report["stages_ms"][variant]) == set(bench.ROWS)
        assert all(s["median"] > 0 and s["p90"] >= s["median"] for s in report["stages_ms"][variant].values())
    assert set(report["speedup"]) == {"fast", "fast_cached"}
    assert all(check["tokens_identical"] for check in report["parity"].values())
    table = (tmp_path / "bench_tiny_cpu_float32_s2.md").read_text()
    assert "| decode_per_token |" in table and table in capsys.readouterr().out


def test_rolling_scene_shifts_one_frame_per_camera():
    config = bench.PRESETS["tiny"]
    scenes = bench.RollingScene(config, (64, 64), seed=0)
    first, second = scenes.next(), scenes.next()
    frames = config.io.frames_per_camera
    assert first.images.shape == (1, len(config.io.camera_names), frames, 3, 64, 64)
    assert second.frame_ids[: frames - 1] == first.frame_ids[1:frames]  # camera 0: the 3 older frames kept
    assert torch.equal(second.images[0, 0, : frames - 1], first.images[0, 0, 1:])
    new_ids = set(second.frame_ids) - set(first.frame_ids)
    assert len(new_ids) == len(config.io.camera_names)

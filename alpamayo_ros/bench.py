"""Benchmark the reference inference path against `FastEngine` in one process: `python -m alpamayo_ros.bench`.

Both paths run on the same model (random weights: latency does not depend on their values), the same inputs
and the same seeds. Each repetition is one planning cycle of a rolling scene: every camera gets one new frame
and keeps its 3 previous ones, as on the vehicle. Three variants run per cycle: `reference`
(`AlpamayoR1.plan`), `fast` (`FastEngine.plan` without frame ids: everything encoded) and `fast_cached`
(`FastEngine.plan` with (camera, stamp) frame ids: only the new frames are encoded). Warm-up cycles (CUDA
graph capture, allocator, caches) are excluded. The CoC length is fixed with `--coc-tokens` (teacher-forced
tokens without EOS; `--sample` samples instead, with that cap) so both paths decode the same number of tokens.

Per stage (the `timings_ms` stages, plus decode per token) it reports median and p90 ms, the speed-up over
the reference, and on CUDA the peak allocated GPU memory per variant; JSON and a markdown table go to stdout
and to `--output-dir`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from alpamayo_ros.model.alpamayo import STAGES, AlpamayoR1, PlanOutput
from alpamayo_ros.model.config import PRESETS, AlpamayoConfig
from alpamayo_ros.model.engine import FastEngine
from alpamayo_ros.model.loading import rebuild_non_learned_buffers
from alpamayo_ros.model.tokenizer import build_tiny_tokenizer, extend_tokenizer, load_tokenizer
from alpamayo_ros.model.tokens import TokenLayout, verify_tokenizer

CONFIGS = {"tiny": "tiny", "full": "alpamayo-r1-10b"}  # --config -> preset
VARIANTS = ("reference", "fast", "fast_cached")
ROWS = ("preprocess", "vision", "prefill", "decode", "decode_per_token", "expert", "total")
DEFAULT_IMAGE_SIZE = {"tiny": (64, 64), "full": (1080, 1920)}  # px; full = the real cameras' frames
INIT_STD = 0.02  # random weights: N(0, 0.02) like transformers' init; norm weights 1, biases 0
# Qwen3-VL's 26 base specials at ids 151643…151668 (MODEL.md §3.1), for the synthetic full-size tokenizer.
QWEN_SPECIALS = (
    "<|endoftext|> <|im_start|> <|im_end|> <|object_ref_start|> <|object_ref_end|> <|box_start|> <|box_end|> "
    "<|quad_start|> <|quad_end|> <|vision_start|> <|vision_end|> <|vision_pad|> <|image_pad|> <|video_pad|> "
    "<tool_call> </tool_call> <|fim_prefix|> <|fim_middle|> <|fim_suffix|> <|fim_pad|> <|repo_name|> "
    "<|file_sep|> <tool_response> </tool_response> <think> </think>"
).split()


@dataclass(frozen=True)
class Scene:
    """One planning cycle's inputs (batch 1)."""

    images: Tensor  # [1, V, F, 3, H, W] uint8
    frame_ids: list[tuple[str, int]]  # V·F (camera, stamp_ns) in image order
    hist_xyz: Tensor  # [1, H, 3] float32
    hist_rot: Tensor  # [1, H, 3, 3] float32


class RollingScene:
    """Random frames per camera; each cycle every camera gets a new frame (10 Hz stamps), drops its oldest."""

    def __init__(self, config: AlpamayoConfig, size_hw: tuple[int, int], seed: int) -> None:
        self.config, self.size_hw = config, size_hw
        self.generator = torch.Generator().manual_seed(seed)
        self.stamp_ns = 0
        io = config.io
        self.frames = {name: [self._frame() for _ in range(io.frames_per_camera)] for name in io.camera_names}

    def _frame(self) -> tuple[int, Tensor]:
        self.stamp_ns += 100_000_000
        image = torch.randint(0, 256, (3, *self.size_hw), dtype=torch.uint8, generator=self.generator)
        return self.stamp_ns, image

    def next(self) -> Scene:
        """Advance one cycle (one new frame per camera) and return its inputs."""
        for frames in self.frames.values():
            frames.pop(0)
            frames.append(self._frame())
        io = self.config.io
        images = torch.stack([torch.stack([image for _, image in frames]) for frames in self.frames.values()])
        ids = [(name, stamp) for name, frames in self.frames.items() for stamp, _ in frames]
        t = torch.arange(io.history_poses, dtype=torch.float32) * 0.1 - 0.1 * (io.history_poses - 1)  # s
        hist_xyz = torch.stack([8.0 * t, torch.zeros_like(t), torch.zeros_like(t)], dim=-1)  # 8 m/s straight
        hist_rot = torch.eye(3).expand(io.history_poses, 3, 3)
        return Scene(images[None], ids, hist_xyz[None], hist_rot[None].clone())


def synthetic_qwen_tokenizer(layout: TokenLayout) -> PreTrainedTokenizerBase:
    """A stand-in for the Qwen3-VL tokenizer with the real ids (word-level vocabulary + the 26 base specials),
    extended like the real one; only ids and decoding matter to the model."""
    words = layout.base_vocab_size - len(QWEN_SPECIALS)
    vocab = {f"w{i}": i for i in range(words - 1)} | {"[UNK]": words - 1}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.add_special_tokens([AddedToken(text, special=True) for text in QWEN_SPECIALS])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token=QWEN_SPECIALS[0],
                                   eos_token=QWEN_SPECIALS[2])
    extend_tokenizer(fast, layout.traj_vocab_size)
    verify_tokenizer(fast, layout, "bench.synthetic_qwen_tokenizer()")
    return fast


def random_model(
    config: AlpamayoConfig, tokenizer: PreTrainedTokenizerBase, device: torch.device, dtype: torch.dtype,
    seed: int,
) -> AlpamayoR1:
    """The model with random weights allocated directly on `device` in `dtype` (built on the meta device)."""
    with torch.device("meta"):
        model = AlpamayoR1(config, tokenizer)
    generator = torch.Generator(device=device).manual_seed(seed)
    for module in model.modules():
        for name, param in list(module.named_parameters(recurse=False)):
            data = torch.empty(param.shape, dtype=dtype, device=device)
            if name == "bias":
                data.zero_()
            elif param.dim() == 1:  # the weight of a LayerNorm/RMSNorm
                data.fill_(1.0)
            else:
                data.normal_(0.0, INIT_STD, generator=generator)
            module._parameters[name] = nn.Parameter(data, requires_grad=False)
    rebuild_non_learned_buffers(model)  # RoPE/Fourier frequencies and action-space statistics, on CPU
    return model.to(device).eval()


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.machine()}, {os.cpu_count()} cores"


def _stats(values: Sequence[float]) -> dict[str, float]:
    return {"median": float(np.median(values)), "p90": float(np.percentile(values, 90))}


def _timings(out: PlanOutput) -> dict[str, float]:
    row = {stage: out.timings_ms[stage] for stage in STAGES}
    row["decode_per_token"] = out.timings_ms["decode"] / out.num_coc_tokens
    return row


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Build the model, run the variants and return the JSON-ready report."""
    auto = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(auto if args.device == "auto" else args.device)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}.get(
        args.dtype, torch.bfloat16 if device.type == "cuda" else torch.float32
    )
    config = PRESETS[CONFIGS[args.config]]
    if args.tokenizer:
        tokenizer = load_tokenizer(args.tokenizer, config.tokens)
    elif args.config == "tiny":
        tokenizer = build_tiny_tokenizer(config.tokens)
    else:
        tokenizer = synthetic_qwen_tokenizer(config.tokens)
    model = random_model(config, tokenizer, device, dtype, args.seed)
    engine = FastEngine(model)
    size_hw = tuple(args.image_size) if args.image_size else DEFAULT_IMAGE_SIZE[args.config]
    scenes = RollingScene(config, size_hw, args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    forced = None if args.sample else torch.randint(  # ordinary text ids: below the first base special
        0, config.tokens.pad_id, (1, args.samples, args.coc_tokens), generator=generator
    )
    planners = {
        "reference": lambda scene, **kw: model.plan(scene.images, scene.hist_xyz, scene.hist_rot, **kw),
        "fast": lambda scene, **kw: engine.plan(scene.images, scene.hist_xyz, scene.hist_rot, **kw),
        "fast_cached": lambda scene, **kw: engine.plan(scene.images, scene.hist_xyz, scene.hist_rot,
                                                       frame_ids=scene.frame_ids, **kw),
    }
    timings: dict[str, list[dict[str, float]]] = {variant: [] for variant in VARIANTS}
    peaks: dict[str, float] = {variant: 0.0 for variant in VARIANTS}
    parity: dict[str, Any] = {}
    for cycle in range(args.warmup + args.reps):
        scene = scenes.next()
        outputs: dict[str, PlanOutput] = {}
        for variant, planner in planners.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            outputs[variant] = planner(scene, num_samples=args.samples, seed=cycle, forced_coc_ids=forced,
                                       max_new_tokens=args.coc_tokens)
            if device.type == "cuda":
                peaks[variant] = max(peaks[variant], torch.cuda.max_memory_allocated(device) / 2**20)
            if cycle >= args.warmup:
                timings[variant].append(_timings(outputs[variant]))
        ref = outputs["reference"]
        for variant in VARIANTS[1:]:
            same = bool(torch.equal(ref.token_ids, outputs[variant].token_ids))
            diff = float((ref.xyz - outputs[variant].xyz).abs().max())
            entry = parity.setdefault(variant, {"tokens_identical": True, "max_abs_xyz_diff_m": 0.0})
            entry["tokens_identical"] &= same
            entry["max_abs_xyz_diff_m"] = max(entry["max_abs_xyz_diff_m"], diff)
    stages = {v: {row: _stats([t[row] for t in timings[v]]) for row in ROWS} for v in VARIANTS}
    speedup = {
        v: {row: stages["reference"][row]["median"] / max(stages[v][row]["median"], 1e-9) for row in ROWS}
        for v in VARIANTS[1:]
    }
    return {
        "config": args.config, "preset": CONFIGS[args.config], "device": str(device),
        "device_name": _device_name(device), "dtype": str(dtype).removeprefix("torch."),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "samples": args.samples,
        "coc_tokens": args.coc_tokens, "decode": "sample" if args.sample else "forced",
        "reps": args.reps, "warmup": args.warmup, "image_size_hw": list(size_hw),
        "cuda_graphs": engine.uses_cuda_graphs, "stop_lookahead": engine.stop_lookahead,
        "stages_ms": stages, "speedup": speedup,
        "peak_gpu_mem_mb": peaks if device.type == "cuda" else None,
        "parity": parity,
    }


def markdown(report: dict[str, Any]) -> str:
    """The report as a markdown table (ms; speed-up = reference median / variant median)."""
    stages = report["stages_ms"]
    decode = "teacher-forced" if report["decode"] == "forced" else "sampled, capped"
    lines = [
        f"### Inference benchmark: `{report['config']}` ({report['preset']}) on {report['device']} "
        f"({report['device_name']}), {report['dtype']}",
        "",
        f"S = {report['samples']} samples, CoC {report['coc_tokens']} tokens ({decode}), images "
        f"{report['image_size_hw'][0]}×{report['image_size_hw'][1]}, {report['reps']} cycles after "
        f"{report['warmup']} warm-up, torch {report['torch']}, {report['threads']} CPU threads, CUDA graphs "
        f"{'on' if report['cuda_graphs'] else 'off'}.",
        "",
        "| stage | reference median / p90 ms | fast median / p90 ms | speed-up | "
        "fast + frame cache median / p90 ms | speed-up |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in ROWS:
        cells = [f"{stages[v][row]['median']:.2f} / {stages[v][row]['p90']:.2f}" for v in VARIANTS]
        ratios = [f"{report['speedup'][v][row]:.2f}×" for v in VARIANTS[1:]]
        lines.append(f"| {row} | {cells[0]} | {cells[1]} | {ratios[0]} | {cells[2]} | {ratios[1]} |")
    lines.append("")
    for variant, check in report["parity"].items():
        lines.append(f"Parity `{variant}` vs reference: tokens identical {check['tokens_identical']}, "
                     f"max |Δxyz| {check['max_abs_xyz_diff_m']:.3g} m.")
    if report["peak_gpu_mem_mb"]:
        peaks = ", ".join(f"{v} {mb:.0f} MiB" for v, mb in report["peak_gpu_mem_mb"].items())
        lines.append(f"Peak GPU memory allocated: {peaks}.")
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m alpamayo_ros.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="tiny",
                        help="tiny preset, or full = alpamayo-r1-10b with random weights")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, …")
    parser.add_argument("--dtype", choices=("auto", "float32", "bfloat16"), default="auto",
                        help="auto: bfloat16 on CUDA (the reference regime), float32 on CPU")
    parser.add_argument("--samples", type=int, default=1, help="S, trajectories per plan")
    parser.add_argument("--coc-tokens", type=int, default=32, help="CoC tokens per plan")
    parser.add_argument("--sample", action="store_true",
                        help="sample the CoC (capped at --coc-tokens) instead of teacher-forcing it")
    parser.add_argument("--reps", type=int, default=10, help="timed planning cycles")
    parser.add_argument("--warmup", type=int, default=2, help="untimed cycles first (graph capture, caches)")
    parser.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"), help="input frame size, px")
    parser.add_argument("--tokenizer", help="tokenizer directory (default: tiny, or a synthetic Qwen-size)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--output-dir", type=Path, default=Path("out/bench"))
    args = parser.parse_args(argv)
    for name in ("samples", "coc_tokens", "reps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup < 0:
        parser.error("--warmup must be >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    report = run(args)
    table = markdown(report)
    device_type = torch.device(report["device"]).type
    stem = f"bench_{report['config']}_{device_type}_{report['dtype']}_s{report['samples']}"
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.output_dir / f"{stem}.md").write_text(table)
    print(json.dumps(report, indent=2))
    print(table)
    print(f"wrote {args.output_dir / stem}.json and .md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

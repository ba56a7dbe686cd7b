"""Train the embedded small Alpamayo model on synthetic scenes (CoC next-token loss + flow matching).

    python -m alpamayo_ros.sim.train [--out alpamayo_ros/assets/tiny] [--cache out/dataset] [--seed 0]
        [--steps 1500] [--train-scenes 432] [--eval-scenes 72] [--eval-stride 1.0] [--threads 2] [--workers 2]

The same seed, scene seeds and thread count give the same weights: the model is initialised under
`torch.random.fork_rng` from the seed, batches and flow noise come from seeded `torch.Generator`s, and nothing
touches the global random state. Training scenes use seeds 0 … N−1 and held-out scenes start at
`EVAL_SEED_OFFSET`, so they never overlap. After training the model is saved with `save_pretrained`, loaded
back from that file as the node loads it, scored open loop on the held-out scenes through the planner's
`ModelEngine` (the node's code path), and the numbers go into `<out>/MODEL_CARD.md` and `<out>/training.json`.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Before torch loads OpenMP: on a shared 2-core machine, spinning OpenMP workers collapse when other processes
# hold the cores (training steps measured several times slower with the default active wait). On an idle
# machine passive wait costs ~12 % per training step and ~2x per `plan` of the small model; the weights are the
# same either way.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from alpamayo_ros.model.alpamayo import AlpamayoR1  # noqa: E402
from alpamayo_ros.model.config import PRESETS  # noqa: E402
from alpamayo_ros.model.engine.vision import BatchedVisionEncoder  # noqa: E402
from alpamayo_ros.model.loading import from_pretrained, save_pretrained  # noqa: E402
from alpamayo_ros.model.tokenizer import build_tiny_tokenizer  # noqa: E402
from alpamayo_ros.model.training import action_targets, training_loss  # noqa: E402
from alpamayo_ros.planner.engine import EMBEDDED_TINY, ModelEngine  # noqa: E402
from alpamayo_ros.sim.dataset import SceneConfig, SceneDataset, build_cache  # noqa: E402
from alpamayo_ros.sim.evaluate import evaluate_scenes  # noqa: E402

logger = logging.getLogger(__name__)

EVAL_SEED_OFFSET = 100_000  # held-out scene seeds start here; training seeds are 0 … train_scenes − 1

_MODEL_CARD = """\
# Embedded small Alpamayo model (`alpamayo_ros/assets/tiny`)

The planner node's default model (`model.backend: tiny`): the Alpamayo-R1 architecture and code path (a
Qwen3-VL vision tower and language model writing the Chain-of-Causation, the flow-matching action expert over
its KV cache, the unicycle action space) at the size of the `{preset}` preset, trained from scratch on the
synthetic scenes of `alpamayo_ros.sim`. It lets the node, the demo and the tests run on a CPU with a model
that behaves sensibly on those scenes. It is not a driving model and has never seen a real road.

## Model

- Preset `{preset}` (alpamayo_ros/model/config.py): 4 cameras x 4 frames, 16 history poses, 64 waypoints at
  0.1 s, 10 Euler steps; every frame is resized to 96 x 160 (6 x 10 patches, 15 LLM tokens).
- {parameters:,} parameters, float32: `model.safetensors` is {size_mb:.1f} MB. Tokenizer: the tiny byte-level
  BPE of `build_tiny_tokenizer` in `tokenizer/`.
- CPU time of one `plan` of {num_samples} samples (median over the held-out cycles, {threads} torch threads,
  OMP_WAIT_POLICY={omp_wait_policy} as this script sets it): {latency}.

## Data

- {train_scenes} training scenes, seeds 0 … {last_train_seed}; the scenario kind cycles with the seed (keep
  lane, curve, red light, green light, braking lead vehicle, pedestrian).
- Each scene lasts {duration_s:g} s and is rendered like the sample bag (180 x 320 JPEG, quality
  {jpeg_quality}); every 0.1 s from t0 = {first_t0_s:g} s is an example: {examples:,} examples. Targets: the
  scene's explanation string at t0 as the CoC text, the driven 6.4 s future as the trajectory.
- Held-out: scenes {first_eval_seed} … {last_eval_seed}, never trained on, scored every {eval_stride_s:g} s
  of t0.

## Training

`{command}`

- Seed {seed}; {steps} AdamW steps of {batch_size} examples drawn with weight ∝ count(cause)^-{cause_balance};
  {flow_samples} flow-matching draws per example over one VLM pass; lr {lr:g} (warm-up {warmup_steps} steps,
  cosine to {min_lr_ratio:g} x), weight decay {weight_decay:g}, gradient clip {grad_clip:g}.
- Loss: next-token cross-entropy on `<explanation><|cot_end|><|traj_future_start|>` after the prompt's
  `<|cot_start|>`, plus the flow-matching MSE (x_t = t·x + (1 − t)·noise, target x − noise, targets
  `action_space.traj_to_action` of the future); the expert reads the teacher-forced KV cache as at
  inference.
- Wall time on the 2-core machine ({threads} torch threads): rendering {render_min:.1f} min, training
  {train_min:.1f} min, held-out evaluation {eval_min:.1f} min.

| step | loss | CoC | flow | CoC token accuracy |
|---|---|---|---|---|
{loss_rows}

## Held-out results

{cycles_scored} cycles, open loop against the driven future: {num_samples} samples per cycle, the one the
node's `{selection}` selection publishes with its defaults is scored, with its reasoning:

| horizon | ADE (m) | FDE (m) |
|---|---|---|
{error_rows}

The reasoning names the true cause in **{cause_accuracy_pct:.1f} %** of the cycles:

| true cause | cycles | named |
|---|---|---|
{cause_rows}

## Reproduce

The seed, the scene seeds and the torch thread count determine the weights: the command above gives the same
file again on this machine type. `training.json` holds the configuration, the loss curve and these numbers.
"""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines the trained weights (with the thread count, see the module doc)."""

    preset: str = "small"  # model configuration (PRESETS key)
    seed: int = 0  # model init, batch order and flow noise
    # Scene seeds 0 … N−1 (kinds cycle with the seed: N/6 per kind). Many scenes, each seen briefly: with 72
    # the model learns the scenes by heart (held-out ADE(6.4 s) 2.9 m, 1.9 m on its training scenes); with
    # 432 and 1500 steps it generalises (1.9 m on 72 held-out scenes).
    train_scenes: int = 432
    steps: int = 1500  # optimiser steps (1250: 2.09 m on the same 72 held-out scenes)
    batch_size: int = 8  # examples per step
    flow_samples: int = 8  # noise/time draws per example over one VLM pass (the expert is cheap next to it)
    lr: float = 1.5e-3  # peak AdamW learning rate
    min_lr_ratio: float = 0.05  # cosine decay ends at lr · this
    warmup_steps: int = 60  # linear warm-up, steps
    weight_decay: float = 0.01  # AdamW, weight matrices only
    grad_clip: float = 1.0  # max global gradient norm
    coc_weight: float = 1.0  # weight of the CoC cross-entropy
    flow_weight: float = 1.0  # weight of the flow-matching loss
    cause_balance: float = 0.25  # example weight ∝ count(cause)^−this (0 = uniform)
    scene: SceneConfig = field(default_factory=SceneConfig)  # rendering of the scenes

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"TrainConfig.preset must be one of {sorted(PRESETS)}, got {self.preset!r}")
        for name in ("train_scenes", "steps", "batch_size", "flow_samples", "warmup_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)!r}")
        if not 0.0 < self.min_lr_ratio <= 1.0:
            raise ValueError(f"TrainConfig.min_lr_ratio must be in (0, 1], got {self.min_lr_ratio!r}")


def build_model(config: TrainConfig) -> AlpamayoR1:
    """A freshly initialised model of the preset, from the config's seed (global RNG state untouched)."""
    model_config = PRESETS[config.preset]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return AlpamayoR1(model_config, build_tiny_tokenizer(model_config.tokens))


def _lr_factor(step: int, config: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to min_lr_ratio."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def _optimizer(model: AlpamayoR1, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on weight matrices only (not on norms and biases)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.95))


def example_weights(dataset: SceneDataset, balance: float) -> torch.Tensor:
    """[N] float64 sampling weights ∝ count(cause of the example)^−balance."""
    causes = torch.from_numpy(dataset.causes)
    counts = torch.bincount(causes).double()
    return counts[causes].pow(-balance)


def train(model: AlpamayoR1, dataset: SceneDataset, config: TrainConfig) -> list[dict[str, float]]:
    """Optimise `model` in place for `config.steps` steps (then eval mode); returns one log row per step."""
    model.train()
    optimizer = _optimizer(model, config)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(step, config))
    batches = torch.Generator().manual_seed(config.seed)
    noise = torch.Generator(device=model.device).manual_seed(config.seed + 1)
    weights = example_weights(dataset, config.cause_balance)
    vision = BatchedVisionEncoder(model.vlm.model.visual)  # one SDPA call per block instead of one per frame
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    for step in range(config.steps):
        indices = torch.multinomial(weights, config.batch_size, replacement=True, generator=batches)
        batch = dataset.batch(indices.tolist())
        out = training_loss(model, batch, noise, flow_samples=config.flow_samples,
                            coc_weight=config.coc_weight, flow_weight=config.flow_weight,
                            x_data=action_targets(model, batch), vision=vision)
        optimizer.zero_grad(set_to_none=True)
        out.total.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip).item()
        optimizer.step()
        schedule.step()
        history.append({"step": step + 1, "loss": out.total.item(), "coc": out.coc.item(),
                        "flow": out.flow.item(), "coc_token_accuracy": out.coc_token_accuracy,
                        "grad_norm": grad_norm, "lr": schedule.get_last_lr()[0],
                        "wall_s": time.perf_counter() - start})
        if (step + 1) % 25 == 0 or step == 0:
            recent = history[-25:]
            keys = ("loss", "coc", "flow", "coc_token_accuracy")
            means = [sum(r[k] for r in recent) / len(recent) for k in keys]
            logger.info("step %d/%d loss %.3f (coc %.3f, flow %.3f, token acc %.2f) lr %.2e %.2f s/step",
                        step + 1, config.steps, *means, history[-1]["lr"], history[-1]["wall_s"] / (step + 1))
    model.eval()
    return history


def write_model_card(out: Path, summary: dict[str, Any]) -> None:
    """`<out>/MODEL_CARD.md` from `_MODEL_CARD` and the summary written to training.json."""
    config, metrics, wall = summary["config"], summary["heldout"], summary["wall"]
    curve = summary["loss_curve"]
    by_cause = metrics.get("cause_accuracy_by_cause", {})
    values = {
        **{k: v for k, v in summary.items() if not isinstance(v, (dict, list))},
        **{k: v for k, v in config.items() if k != "scene"}, **config["scene"],
        "size_mb": (out / "model.safetensors").stat().st_size / 1e6,
        "first_eval_seed": summary["eval_scene_seeds"][0], "last_eval_seed": summary["eval_scene_seeds"][-1],
        "last_train_seed": config["train_scenes"] - 1, "render_min": wall["render_s"] / 60,
        "train_min": wall["train_s"] / 60, "eval_min": wall.get("eval_s", 0.0) / 60,
        "latency": ", ".join(f"{k} {v:.0f} ms" for k, v in metrics.get("latency_ms", {}).items()),
        "cycles_scored": metrics.get("cycles_scored", 0), "num_samples": metrics.get("num_samples", 1),
        "selection": metrics.get("selection", "first"),
        "cause_accuracy_pct": 100 * metrics.get("cause_accuracy", float("nan")),
        "loss_rows": "\n".join(f"| {r['step']} | {r['loss']:.3f} | {r['coc']:.3f} | {r['flow']:.3f} | "
                               f"{r['coc_token_accuracy']:.2f} |" for r in curve[:: max(1, len(curve) // 8)]
                               + curve[-1:]),
        "error_rows": "\n".join(f"| {h} s | {metrics[f'ade_{h}s']:.2f} | {metrics[f'fde_{h}s']:.2f} |"
                                for h in ("1.0", "3.0", "6.4") if f"ade_{h}s" in metrics),
        "cause_rows": "\n".join(f"| {name.lower()} | {v['cycles']} | {100 * v['accuracy']:.0f} % |"
                                for name, v in by_cause.items()),
    }
    (out / "MODEL_CARD.md").write_text(_MODEL_CARD.format(**values))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m alpamayo_ros.sim.train",
                                     description=__doc__.split("\n")[0])
    defaults = TrainConfig()
    parser.add_argument("--out", type=Path, default=EMBEDDED_TINY, help="checkpoint directory to write")
    parser.add_argument("--cache", type=Path, default=Path("out/dataset"), help="rendered-scene cache")
    parser.add_argument("--preset", default=defaults.preset, choices=sorted(PRESETS))
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--train-scenes", type=int, default=defaults.train_scenes)
    parser.add_argument("--eval-scenes", type=int, default=72, help="held-out scenes (0: skip evaluation)")
    parser.add_argument("--eval-stride", type=float, default=1.0, help="s between scored t0 in a scene")
    parser.add_argument("--threads", type=int, default=2,
                        help="torch CPU threads (with the seed, they fix the result)")
    parser.add_argument("--workers", type=int, default=2, help="processes rendering scenes")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = TrainConfig(preset=args.preset, seed=args.seed, steps=args.steps, batch_size=args.batch_size,
                             lr=args.lr, train_scenes=args.train_scenes)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    wall: dict[str, float] = {}
    start = time.perf_counter()
    train_paths = build_cache(list(range(config.train_scenes)), config.scene, args.cache, args.workers)
    eval_seeds = list(range(EVAL_SEED_OFFSET, EVAL_SEED_OFFSET + args.eval_scenes))
    eval_paths = build_cache(eval_seeds, config.scene, args.cache, args.workers)
    wall["render_s"] = time.perf_counter() - start
    dataset = SceneDataset(train_paths)
    logger.info("%d training examples from %d scenes", len(dataset), len(train_paths))
    model = build_model(config)
    start = time.perf_counter()
    history = train(model, dataset, config)
    wall["train_s"] = time.perf_counter() - start
    save_pretrained(model, args.out, max_shard_size="1GB")
    parameters = sum(p.numel() for p in model.parameters())
    del model  # score the saved file as the node loads it
    gc.collect()
    metrics: dict[str, object] = {}
    if eval_paths:
        start = time.perf_counter()
        max_tokens = PRESETS[config.preset].sampling.max_new_tokens
        saved = from_pretrained(args.out, progress=False).eval()
        engine = ModelEngine(saved, f"{args.out.name}@{args.out}", max_tokens)
        metrics = evaluate_scenes(engine, SceneDataset(eval_paths), stride_s=args.eval_stride,
                                  seed=config.seed)
        wall["eval_s"] = time.perf_counter() - start
    summary = {
        "command": " ".join(["python -m alpamayo_ros.sim.train", *(sys.argv[1:] if argv is None else argv)]),
        "config": asdict(config), "threads": args.threads, "omp_wait_policy": os.environ["OMP_WAIT_POLICY"],
        "parameters": parameters, "examples": len(dataset),
        "eval_scene_seeds": eval_seeds[:1] + eval_seeds[-1:], "eval_stride_s": args.eval_stride,
        "wall": wall, "heldout": metrics, "loss_curve": history[::25] + history[-1:],
    }
    (args.out / "training.json").write_text(json.dumps(summary, indent=2) + "\n")
    if metrics:
        write_model_card(args.out, summary)
    print(json.dumps({"wall": wall, "heldout": metrics}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

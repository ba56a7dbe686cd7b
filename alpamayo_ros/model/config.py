"""Model configuration: frozen dataclasses mirroring the checkpoint config.json, presets, HF config builders.

`AlpamayoConfig()` with no arguments is the released Alpamayo-R1-10B (MODEL.md §2, checkpoint values, not code
defaults). `PRESETS["tiny"]` keeps the real I/O geometry (4 cameras × 4 frames, 16 history poses → 48 history
tokens, 64 waypoints, 10 flow steps) with tiny widths (MODEL.md §11.1) for CPU tests. Reading and writing
config.json lives in `config_json.py`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from pathlib import Path

from transformers import Qwen3VLConfig, Qwen3VLTextConfig

from alpamayo_ros.model.action_proj import ActionInProjConfig
from alpamayo_ros.model.action_space import ActionSpaceConfig
from alpamayo_ros.model.flow_matching import FlowMatchingConfig
from alpamayo_ros.model.history import HistoryTokenizerConfig
from alpamayo_ros.model.tokens import FAMILIES, TokenLayout

# Camera order of the prompt (sorted by camera index, MODEL.md §4.1).
CAMERA_NAMES: tuple[str, ...] = (
    "camera_cross_left_120fov",
    "camera_front_wide_120fov",
    "camera_cross_right_120fov",
    "camera_front_tele_30fov",
)
# Upstream camera index of each camera name (MODEL.md §4.1); the 1.5 prompt labels cameras by it (1.5 §4).
CAMERA_INDICES: dict[str, int] = {
    "camera_cross_left_120fov": 0,
    "camera_front_wide_120fov": 1,
    "camera_cross_right_120fov": 2,
    "camera_rear_left_70fov": 3,
    "camera_rear_tele_30fov": 4,
    "camera_rear_right_70fov": 5,
    "camera_front_tele_30fov": 6,
}
ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2")


def _invalid(owner: str, name: str, requirement: str, value: object) -> ValueError:
    """`ValueError("<owner>.<name> must <requirement>, got <value>")`."""
    return ValueError(f"{owner}.{name} must {requirement}, got {value!r}")


def _check_positive(obj: object, names: tuple[str, ...]) -> None:
    """Raise ValueError naming the first of `names` whose value is not > 0."""
    for name in names:
        if getattr(obj, name) <= 0:
            raise _invalid(type(obj).__name__, name, "be > 0", getattr(obj, name))


def check_camera_order(camera_names: tuple[str, ...]) -> tuple[int, ...]:
    """Upstream camera indices of `camera_names`, which must be known and in ascending index order.

    Upstream 1.5 sorts cameras by index (MODEL-1.5.md §4.2) and maps unknown names to 0; here an unknown name
    or another order is an error, so images and labels cannot disagree.

    Raises:
        ValueError: naming the unknown camera or the order.
    """
    unknown = [name for name in camera_names if name not in CAMERA_INDICES]
    if unknown:
        raise ValueError(
            f"camera names {unknown} have no upstream camera index; known: {sorted(CAMERA_INDICES)}"
        )
    indices = tuple(CAMERA_INDICES[name] for name in camera_names)
    if list(indices) != sorted(set(indices)):
        raise ValueError(f"cameras must be unique and in ascending camera index order, got {camera_names} "
                         f"(indices {indices})")
    return indices


@dataclass(frozen=True)
class VisionConfig:
    """Qwen3-VL vision tower; defaults are the Qwen3-VL-8B values (MODEL.md §2.2)."""

    depth: int = 27  # ViT blocks
    hidden_size: int = 1152  # ViT width
    intermediate_size: int = 4304  # ViT MLP width
    num_heads: int = 16  # ViT heads; hidden_size / num_heads must be divisible by 4 (2-D rotary)
    patch_size: int = 16  # pixels per patch side
    temporal_patch_size: int = 2  # frames per patch (a still image is duplicated, §4.2)
    spatial_merge_size: int = 2  # patches merged per LLM token along each side
    out_hidden_size: int = 4096  # merger output = LLM hidden size
    num_position_embeddings: int = 2304  # learned position grid (48 × 48), bilinearly interpolated
    deepstack_visual_indexes: tuple[int, ...] = (8, 16, 24)  # blocks feeding the deepstack mergers
    hidden_act: str = "gelu_pytorch_tanh"  # ViT MLP activation
    in_channels: int = 3  # RGB

    def __post_init__(self) -> None:
        _check_positive(self, ("depth", "hidden_size", "intermediate_size", "num_heads", "patch_size",
                               "temporal_patch_size", "spatial_merge_size", "out_hidden_size",
                               "num_position_embeddings", "in_channels"))
        if self.hidden_size % self.num_heads or (self.hidden_size // self.num_heads) % 4:
            raise _invalid("VisionConfig", "hidden_size / num_heads", "be an integer divisible by 4",
                           (self.hidden_size, self.num_heads))
        if round(self.num_position_embeddings**0.5) ** 2 != self.num_position_embeddings:
            raise _invalid("VisionConfig", "num_position_embeddings", "be a square",
                           self.num_position_embeddings)
        if any(not 0 <= i < self.depth for i in self.deepstack_visual_indexes):
            raise _invalid("VisionConfig", "deepstack_visual_indexes", f"be in [0, depth={self.depth})",
                           self.deepstack_visual_indexes)


@dataclass(frozen=True)
class TextConfig:
    """Qwen3-VL language model; Qwen3-VL-8B values (MODEL.md §2.2). vocab_size comes from `TokenLayout`."""

    hidden_size: int = 4096  # D
    intermediate_size: int = 12288  # SwiGLU width
    num_hidden_layers: int = 36  # decoder layers (the expert inherits this)
    num_attention_heads: int = 32  # query heads
    num_key_value_heads: int = 8  # KV heads (the expert inherits this)
    head_dim: int = 128  # per-head width (the expert's must match: it appends to this cache)
    rms_norm_eps: float = 1e-6  # RMSNorm epsilon
    rope_theta: float = 5_000_000.0  # M-RoPE base; set explicitly (transformers 5.x defaults differ)
    mrope_section: tuple[int, int, int] = (24, 20, 20)  # T/H/W frequency slots, sum = head_dim / 2
    mrope_interleaved: bool = True  # interleaved slot assignment (§5.1)
    max_position_embeddings: int = 262144  # Qwen3-VL-8B
    hidden_act: str = "silu"  # MLP activation
    attention_bias: bool = False  # no q/k/v/o biases

    def __post_init__(self) -> None:
        _check_positive(self, ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                               "num_key_value_heads", "head_dim", "max_position_embeddings"))
        if self.num_attention_heads % self.num_key_value_heads:
            raise _invalid("TextConfig", "num_attention_heads",
                           f"be a multiple of num_key_value_heads={self.num_key_value_heads}",
                           self.num_attention_heads)
        half = self.head_dim // 2
        if len(self.mrope_section) != 3 or sum(self.mrope_section) != half:
            raise _invalid("TextConfig", "mrope_section", f"be 3 values summing to head_dim/2={half}",
                           self.mrope_section)
        if self.mrope_interleaved and 3 * max(self.mrope_section[1:]) > half:
            raise _invalid("TextConfig", "mrope_section",
                           f"have 3·(H or W count) <= head_dim/2={half} when interleaved", self.mrope_section)


@dataclass(frozen=True)
class ExpertConfig:
    """The five `expert_cfg` keys overriding a copy of the text config (MODEL.md §2.3); checkpoint values."""

    hidden_size: int = 2048  # expert width; checkpoint
    intermediate_size: int = 8256  # expert MLP width; checkpoint
    num_attention_heads: int = 16  # expert query heads (KV heads inherited: GQA group 2); checkpoint
    head_dim: int = 128  # must equal the text head_dim; checkpoint
    dtype: str = "bfloat16"  # checkpoint storage dtype (informational; the loader picks the runtime dtype)

    def __post_init__(self) -> None:
        _check_positive(self, ("hidden_size", "intermediate_size", "num_attention_heads", "head_dim"))


@dataclass(frozen=True)
class ProcessorConfig:
    """Image processor pixel budget (MODEL.md §4.2); the inference helper's constants."""

    min_pixels: int = 163840  # smallest resized area (px); helper constant, config.json `min_pixels`
    max_pixels: int = 196608  # largest resized area (px); helper constant, config.json `max_pixels`

    def __post_init__(self) -> None:
        if not 0 < self.min_pixels <= self.max_pixels:
            raise _invalid("ProcessorConfig", "min_pixels", f"be in (0, max_pixels={self.max_pixels}]",
                           self.min_pixels)


@dataclass(frozen=True)
class IOConfig:
    """Input geometry the prompt is built for (MODEL.md §4.1, §4.4)."""

    camera_names: tuple[str, ...] = CAMERA_NAMES  # prompt camera order; upstream camera index order
    frames_per_camera: int = 4  # F, frames per camera at t0-0.3 … t0 s, oldest first
    history_poses: int = 16  # H, egomotion poses at t0-1.5 … t0 s (10 Hz); 3 tokens each

    def __post_init__(self) -> None:
        if not self.camera_names or len(set(self.camera_names)) != len(self.camera_names):
            raise _invalid("IOConfig", "camera_names", "be non-empty and unique", self.camera_names)
        if self.frames_per_camera < 1:
            raise _invalid("IOConfig", "frames_per_camera", "be >= 1", self.frames_per_camera)
        if self.history_poses < 4:  # the v0 estimate needs third differences (§7.2)
            raise _invalid("IOConfig", "history_poses", "be >= 4", self.history_poses)

    @property
    def num_images(self) -> int:
        """Images per prompt, V·F."""
        return len(self.camera_names) * self.frames_per_camera

    @property
    def tokens_per_history_traj(self) -> int:
        """History placeholder tokens: x, y, z per pose (predict_yaw false)."""
        return 3 * self.history_poses


@dataclass(frozen=True)
class SamplingConfig:
    """CoC generation settings (MODEL.md §5)."""

    temperature: float = 0.6  # upstream sample_trajectories_from_data_with_vlm_rollout default
    top_p: float = 0.98  # upstream default; no top-k
    max_new_tokens: int = 256  # reference script's max_generation_length (method default: 128)

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise _invalid("SamplingConfig", "temperature", "be > 0", self.temperature)
        if not 0 < self.top_p <= 1:
            raise _invalid("SamplingConfig", "top_p", "be in (0, 1]", self.top_p)
        if self.max_new_tokens < 1:
            raise _invalid("SamplingConfig", "max_new_tokens", "be >= 1", self.max_new_tokens)


@dataclass(frozen=True)
class AlpamayoConfig:
    """Everything needed to build `AlpamayoR1`; defaults = the released Alpamayo-R1-10B checkpoint."""

    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    expert: ExpertConfig = field(default_factory=ExpertConfig)
    tokens: TokenLayout = field(default_factory=TokenLayout)
    history: HistoryTokenizerConfig = field(default_factory=HistoryTokenizerConfig)  # hist_traj_tokenizer_cfg
    action_in_proj: ActionInProjConfig = field(default_factory=ActionInProjConfig)  # action_in_proj_cfg
    action_space: ActionSpaceConfig = field(default_factory=ActionSpaceConfig)  # action_space_cfg
    flow: FlowMatchingConfig = field(default_factory=FlowMatchingConfig)  # diffusion_cfg
    processor: ProcessorConfig = field(default_factory=ProcessorConfig)
    io: IOConfig = field(default_factory=IOConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    expert_non_causal_attention: bool = True  # expert tokens attend to each other both ways; checkpoint
    tokens_per_future_traj: int = 128  # config.json field (discrete future tokens); kept for round trips
    vlm_name_or_path: str = "Qwen/Qwen3-VL-8B-Instruct"  # backbone giving the VLM shape (unverified, §2.1)
    # "r1" (Alpamayo-R1) or "a15" (Alpamayo 1.5): prompt style, token names, route/CFG and question answering;
    # config.json `model_type`/`architectures` (MODEL-1.5.md §1). Same network and weights either way.
    family: str = "r1"

    def __post_init__(self) -> None:
        text, name = self.text, "AlpamayoConfig"
        if self.family not in FAMILIES:
            raise _invalid(name, "family", f"be one of {FAMILIES}", self.family)
        if self.family == "a15":  # the 1.5 prompt labels each camera by its upstream index
            check_camera_order(self.io.camera_names)
        if self.vision.out_hidden_size != text.hidden_size:
            raise _invalid(name, "vision.out_hidden_size", f"equal text.hidden_size={text.hidden_size}",
                           self.vision.out_hidden_size)
        if len(self.vision.deepstack_visual_indexes) > text.num_hidden_layers:
            raise _invalid(name, "vision.deepstack_visual_indexes",
                           f"have <= text.num_hidden_layers={text.num_hidden_layers} entries",
                           self.vision.deepstack_visual_indexes)
        if self.expert.head_dim != text.head_dim:  # the expert appends its k/v to the VLM cache
            raise _invalid(name, "expert.head_dim", f"equal text.head_dim={text.head_dim}",
                           self.expert.head_dim)
        if self.expert.num_attention_heads % text.num_key_value_heads:
            raise _invalid(name, "expert.num_attention_heads",
                           f"be a multiple of text.num_key_value_heads={text.num_key_value_heads}",
                           self.expert.num_attention_heads)
        if self.tokens.future_bins + self.history.num_bins > self.tokens.traj_vocab_size:
            raise _invalid(name, "history.num_bins",
                           f"fit after tokens.future_bins={self.tokens.future_bins} in "
                           f"tokens.traj_vocab_size={self.tokens.traj_vocab_size}", self.history.num_bins)
        if self.tokens_per_future_traj < 1:
            raise _invalid(name, "tokens_per_future_traj", "be >= 1", self.tokens_per_future_traj)

    @classmethod
    def from_json(cls, path: str | Path, family: str | None = None) -> AlpamayoConfig:
        """Read a checkpoint config.json (tolerates extra and hydra `_target_` keys).

        Args:
            path: the config.json.
            family: "r1" or "a15" to override the family the file declares (None: detect it).

        Raises:
            config_json.ConfigError: missing file, invalid JSON, missing required key, or inconsistent values.
        """
        from alpamayo_ros.model.config_json import read_config_json  # config_json imports this module

        return read_config_json(path, family)

    @property
    def n_waypoints(self) -> int:
        """T, future waypoints = expert tokens per sample."""
        return self.action_space.n_waypoints

    @property
    def resize_factor(self) -> int:
        """Image sides are resized to multiples of patch_size · spatial_merge_size (32 for the real model)."""
        return self.vision.patch_size * self.vision.spatial_merge_size

    def vlm_config(self, attn_implementation: str = "sdpa") -> Qwen3VLConfig:
        """The transformers `Qwen3VLConfig` of the VLM (vocab = extended vocabulary, lm_head not tied).

        Raises:
            ValueError: unknown attn_implementation.
        """
        if attn_implementation not in ATTN_IMPLEMENTATIONS:
            raise ValueError(
                f"attn_implementation must be one of {ATTN_IMPLEMENTATIONS}, got {attn_implementation!r}"
            )
        t, v = self.text, self.vision
        text_config = {
            "vocab_size": self.tokens.vocab_size,
            "hidden_size": t.hidden_size,
            "intermediate_size": t.intermediate_size,
            "num_hidden_layers": t.num_hidden_layers,
            "num_attention_heads": t.num_attention_heads,
            "num_key_value_heads": t.num_key_value_heads,
            "head_dim": t.head_dim,
            "hidden_act": t.hidden_act,
            "max_position_embeddings": t.max_position_embeddings,
            "rms_norm_eps": t.rms_norm_eps,
            "rope_theta": t.rope_theta,
            "rope_scaling": {
                "rope_type": "default",
                "mrope_section": list(t.mrope_section),
                "mrope_interleaved": t.mrope_interleaved,
            },
            "attention_bias": t.attention_bias,
            "tie_word_embeddings": False,
            "bos_token_id": self.tokens.pad_id,
            "eos_token_id": self.tokens.im_end_id,
        }
        vision_config = {
            "depth": v.depth,
            "hidden_size": v.hidden_size,
            "hidden_act": v.hidden_act,
            "intermediate_size": v.intermediate_size,
            "num_heads": v.num_heads,
            "in_channels": v.in_channels,
            "patch_size": v.patch_size,
            "spatial_merge_size": v.spatial_merge_size,
            "temporal_patch_size": v.temporal_patch_size,
            "out_hidden_size": v.out_hidden_size,
            "num_position_embeddings": v.num_position_embeddings,
            "deepstack_visual_indexes": list(v.deepstack_visual_indexes),
        }
        config = Qwen3VLConfig(
            text_config=text_config,
            vision_config=vision_config,
            image_token_id=self.tokens.image_pad_id,
            video_token_id=self.tokens.video_pad_id,
            vision_start_token_id=self.tokens.vision_start_id,
            vision_end_token_id=self.tokens.vision_end_id,
            tie_word_embeddings=False,
        )
        config._attn_implementation = attn_implementation  # recursive over the sub-configs
        return config

    def expert_config(self, text_config: Qwen3VLTextConfig | None = None) -> Qwen3VLTextConfig:
        """Deep copy of the VLM text config with the five expert keys overwritten (MODEL.md §2.3).

        The expert always uses SDPA: FlashAttention-2 cannot take its 4-D float mask (§9.1, upstream PR #75).

        Args:
            text_config: the VLM's text config to copy; default `self.vlm_config().text_config`.
        """
        expert = copy.deepcopy(text_config if text_config is not None else self.vlm_config().text_config)
        expert.hidden_size = self.expert.hidden_size
        expert.intermediate_size = self.expert.intermediate_size
        expert.num_attention_heads = self.expert.num_attention_heads
        expert.head_dim = self.expert.head_dim
        expert._attn_implementation = "sdpa"
        return expert


# Layout of `tokenizer.build_tiny_base_tokenizer`: 773 BPE symbols, then the 7 Qwen specials.
# test_config checks these numbers against the tokenizer itself.
_TINY_TOKENS = TokenLayout(
    base_vocab_size=780,
    traj_vocab_size=1020,  # 20 future bins + 1000 history bins (the real history quantiser)
    future_bins=20,
    pad_id=773,
    im_start_id=774,
    im_end_id=775,
    vision_start_id=776,
    vision_end_id=777,
    image_pad_id=778,
    video_pad_id=779,
)
_TINY = AlpamayoConfig(
    vision=VisionConfig(
        depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
        num_position_embeddings=36, deepstack_visual_indexes=(0, 1),
    ),
    text=TextConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, rope_theta=5_000_000.0, mrope_section=(4, 2, 2),
        max_position_embeddings=4096,
    ),
    expert=ExpertConfig(hidden_size=48, intermediate_size=96, num_attention_heads=4, head_dim=16),
    tokens=_TINY_TOKENS,
    action_in_proj=ActionInProjConfig(hidden_size=32, num_enc_layers=2, num_fourier_feats=4),
    # Any 64…127 px square frame becomes 64×64: a 4×4 patch grid, 4 LLM tokens per image.
    processor=ProcessorConfig(min_pixels=4096, max_pixels=4096),
    sampling=SamplingConfig(max_new_tokens=16),
    vlm_name_or_path="alpamayo_ros/tiny",
)

# The embedded default model (alpamayo_ros/assets/tiny, trained by `python -m alpamayo_ros.sim.train`): the
# tiny tokenizer and I/O geometry, a wider network, and a pixel budget that turns any 16:9 frame (180x320,
# 270x480, 1080x1920) into 96x160, i.e. 6x10 patches and 15 LLM tokens per image: traffic lights and
# pedestrians in the tele camera stay a few pixels large, and training fits a 2-core CPU.
_SMALL = replace(
    _TINY,
    vision=VisionConfig(
        depth=2, hidden_size=96, intermediate_size=192, num_heads=4, out_hidden_size=128,
        num_position_embeddings=256, deepstack_visual_indexes=(0, 1),
    ),
    text=TextConfig(
        hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, head_dim=32, rope_theta=5_000_000.0, mrope_section=(8, 4, 4),
        max_position_embeddings=4096,
    ),
    expert=ExpertConfig(hidden_size=96, intermediate_size=192, num_attention_heads=4, head_dim=32),
    action_in_proj=ActionInProjConfig(hidden_size=64, num_enc_layers=2, num_fourier_feats=20),
    # Curvature normalised by the synthetic roads' spread (|κ| <= 0.04 1/m) rather than the release's
    # 0.026 1/m, so the flow loss resolves gentle curves (κ ≈ 0.003 1/m) that bend the path metres in 6.4 s.
    action_space=ActionSpaceConfig(curvature_mean=0.0, curvature_std=0.01),
    processor=ProcessorConfig(min_pixels=96 * 160, max_pixels=128 * 136),
    vlm_name_or_path="alpamayo_ros/small",
)

PRESETS: dict[str, AlpamayoConfig] = {
    "alpamayo-r1-10b": AlpamayoConfig(),
    "tiny": _TINY,
    # MODEL.md §11.1 geometry (2 cameras × 2 frames, 4 history poses, 8 waypoints, 3 flow steps).
    "micro": replace(
        _TINY,
        io=IOConfig(camera_names=CAMERA_NAMES[:2], frames_per_camera=2, history_poses=4),
        action_space=ActionSpaceConfig(n_waypoints=8),
        flow=FlowMatchingConfig(num_steps=3),
    ),
    "small": _SMALL,
    # Alpamayo 1.5-10B (MODEL-1.5.md §1.2): the R1 network with the 1.5 prompt; backbone name unverified.
    "alpamayo-1.5-10b": replace(AlpamayoConfig(), family="a15", vlm_name_or_path="nvidia/Cosmos-Reason2-8B"),
    # The tiny sizes with the 1.5 prompt style and token names.
    "tiny-a15": replace(_TINY, family="a15"),
}

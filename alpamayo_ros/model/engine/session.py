"""Static buffers of one decode shape (b* rows, cache capacity), and the two capturable steps that use them.

`decode_step` is one CoC iteration: choose token s from the current logits (forced, greedy or sampled), apply
the padding and stop rules of `generation.generate_tokens` on the device, then feed the token through the
VLM into cache slot `position`. `expert_loop` is the whole flow-matching integration (K expert passes
over [prefix ‖ expert slots], MODEL.md §6). Both read and write only `DecodeSession` tensors, so they run
eagerly on CPU and are captured once as CUDA graphs on GPU.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
from torch import Tensor
from transformers.cache_utils import DynamicCache

from alpamayo_ros.model.alpamayo import AlpamayoR1
from alpamayo_ros.model.engine.layers import run_layers
from alpamayo_ros.model.engine.sampling import sample_tokens
from alpamayo_ros.model.engine.static_cache import StaticKVCache
from alpamayo_ros.model.expert import expert_offsets, expert_position_ids
from alpamayo_ros.model.flow_matching import euler_sample
from alpamayo_ros.model.generation import mask_trajectory_logits

MODES = ("sample", "greedy", "forced")  # how a decode step chooses its token


def autocast(model: AlpamayoR1) -> AbstractContextManager:
    """The reference's autocast regime (`AlpamayoR1._autocast`), with the weight-cast cache off as CUDA graph
    capture requires (the weights are already in the low dtype, so nothing is cached anyway)."""
    low = model.dtype in (torch.bfloat16, torch.float16)
    return torch.autocast(model.device.type, dtype=model.dtype if low else torch.bfloat16, enabled=low,
                          cache_enabled=False)


@dataclass
class DecodeSession:
    """Every tensor a decode step or the expert loop touches, preallocated for b* rows and C cache slots."""

    cache: StaticKVCache  # K/V of all layers, C prefix slots + T expert slots
    logits: Tensor  # [b*, vocab] logits for the next token choice (activation dtype)
    tokens: Tensor  # [b*, C] int64, token chosen at step s in column s
    stop: Tensor  # [C] bool, the stop rule fired at step s
    host_stop: Tensor  # [C] bool, `stop` as the host reads it (pinned copy on CUDA, `stop` itself on CPU)
    found: Tensor  # [b*] bool, emitted <|traj_future_start|> at an earlier step
    finished: Tensor  # [b*] bool, emitted <|im_end|> (padded from then on)
    position: Tensor  # [1] int64, cache slot of the token fed next
    step: Tensor  # [1] int64, index of the token chosen next
    rope_deltas: Tensor  # [b*, 1] int64
    forced: Tensor  # [b*, C] int64 teacher-forced tokens (mode "forced")
    noise: Tensor  # [b*, T, 2] float32 flow noise x₀
    expert_positions: Tensor  # [3, b*, T] int64 M-RoPE positions of the expert tokens
    expert_mask: Tensor  # [b*, 1, g·T, C + T] bool, see `StaticKVCache.expert_mask`
    actions: Tensor  # [b*, T, 2] float32 normalised actions (output of `expert_loop`)

    @classmethod
    def allocate(cls, model: AlpamayoR1, rows: int, capacity: int) -> DecodeSession:
        """Zeroed buffers for `rows` rows and `capacity` prefix slots on the model's device."""
        text, device = model.config.text, model.device
        tail = model.config.n_waypoints
        groups = model.config.expert.num_attention_heads // text.num_key_value_heads
        cache = StaticKVCache(text.num_hidden_layers, rows, text.num_key_value_heads, capacity, tail,
                              text.head_dim, model.dtype, device)
        stop = torch.zeros(capacity, dtype=torch.bool, device=device)
        host_stop = torch.zeros(capacity, dtype=torch.bool).pin_memory() if device.type == "cuda" else stop
        vocab = model.vlm.lm_head.out_features

        def zeros(*shape: int, dtype: torch.dtype = torch.int64) -> Tensor:
            return torch.zeros(shape, dtype=dtype, device=device)

        return cls(
            cache=cache, logits=zeros(rows, vocab, dtype=model.dtype), tokens=zeros(rows, capacity),
            stop=stop, host_stop=host_stop, found=zeros(rows, dtype=torch.bool),
            finished=zeros(rows, dtype=torch.bool), position=zeros(1), step=zeros(1),
            rope_deltas=zeros(rows, 1), forced=zeros(rows, capacity),
            noise=zeros(rows, tail, 2, dtype=torch.float32), expert_positions=zeros(3, rows, tail),
            expert_mask=torch.ones(rows, 1, groups * tail, capacity + tail, dtype=torch.bool, device=device),
            actions=zeros(rows, tail, 2, dtype=torch.float32),
        )

    @property
    def rows(self) -> int:
        return self.cache.rows

    @property
    def capacity(self) -> int:
        return self.cache.capacity

    def start(
        self, prefill: DynamicCache, logits: Tensor, rope_deltas: Tensor, samples: int, forced: Tensor | None
    ) -> int:
        """Load a prefilled prompt (B rows, repeated S times) and reset the decode state.

        Args:
            prefill: the prompt's dynamic cache, B rows.
            logits: [B, vocab] last-position logits of the prompt.
            rope_deltas: [B, 1].
            samples: S.
            forced: [b*, N] teacher-forced tokens, or None.

        Returns:
            L, the prompt length.
        """
        length = self.cache.load_prefix(prefill, samples)
        self.logits.unflatten(0, (logits.shape[0], samples)).copy_(logits[:, None])
        self.rope_deltas.copy_(rope_deltas.repeat_interleave(samples, dim=0))
        for flags in (self.found, self.finished, self.stop):
            flags.zero_()
        self.position.fill_(length)
        self.step.zero_()
        if forced is not None:
            self.forced[:, : forced.shape[1]].copy_(forced)
        return length

    def prepare_expert(
        self, generated: Tensor, prompt_len: int, noise: Tensor, eos_id: int, groups: int, non_causal: bool
    ) -> None:
        """Positions, mask and noise of the expert for the N kept CoC tokens (upstream's offsets, §6.2).

        Args:
            generated: [b*, N] CoC tokens, padded after the first EOS.
            prompt_len: L.
            noise: [b*, T, 2] x₀.
            eos_id: `<|traj_future_start|>`.
            groups: expert query heads per KV head.
            non_causal: expert tokens attend to each other both ways.
        """
        offsets = expert_offsets(generated, eos_id)[0] + prompt_len  # [b*], the prompt holds no EOS
        self.expert_positions.copy_(expert_position_ids(self.rope_deltas, offsets, self.cache.tail))
        fed_len = prompt_len + generated.shape[1] - 1  # the last token is never fed (generate_tokens)
        self.expert_mask.copy_(self.cache.expert_mask(offsets, fed_len, groups, non_causal))
        self.noise.copy_(noise)


def decode_step(
    model: AlpamayoR1, session: DecodeSession, mode: str, generator: torch.Generator | None
) -> None:
    """One CoC iteration on the session buffers, with `generate_tokens`' rules (fixed shapes, no host sync).

    Chooses token s = `step` from `logits`, pads it if the row had emitted `<|im_end|>`, records it and the
    stop rule (every row emitted EOS at an earlier step, or every row is finished), then feeds it at cache
    slot `position` and stores the next logits. The host reads `stop` later and keeps tokens [0, N).
    """
    cfg, special = model.config, model.special
    lm = model.vlm.model.language_model
    with autocast(model):
        scores = mask_trajectory_logits(session.logits.to(torch.float32, copy=True),
                                        cfg.tokens.traj_token_start_idx, cfg.tokens.traj_token_end_idx)
        if mode == "forced":
            token = session.forced.index_select(1, session.step).squeeze(1)  # [b*]
        elif mode == "greedy":
            token = scores.argmax(dim=-1)
        else:
            token = sample_tokens(scores, cfg.sampling.temperature, cfg.sampling.top_p, generator)
        token = torch.where(session.finished, special.pad, token)  # [b*]
        session.tokens.index_copy_(1, session.step, token[:, None])
        session.finished |= token == special.im_end
        stop = session.found.all() | session.finished.all()  # StopAfterEOS, then "all rows finished"
        session.stop.index_copy_(0, session.step, stop[None])
        session.found |= token == special.traj_future_start
        positions = (session.position + session.rope_deltas).view(1, -1, 1).expand(3, -1, -1)  # [3, b*, 1]
        mask = session.cache.decode_mask(session.position)
        embeds = lm.embed_tokens(token[:, None])  # [b*, 1, D]
        hidden = run_layers(lm, embeds, positions, session.cache, session.position, mask)  # [b*, 1, D]
        session.logits.copy_(model.vlm.lm_head(hidden[:, -1]))
        session.position += 1
        session.step += 1


def expert_loop(model: AlpamayoR1, session: DecodeSession) -> None:
    """K Euler steps of the expert's velocity field from `noise` into `actions` (`AlpamayoR1.sample_actions`).

    Each pass writes the expert's k/v into the cache's expert slots and attends over prefix + expert slots;
    the prefix slots are only read.
    """
    cache = session.cache

    def velocity(x: Tensor, t: Tensor) -> Tensor:
        embeds = model.action_in_proj(x, t)  # [b*, T, D_e]
        hidden = run_layers(model.expert, embeds, session.expert_positions, cache, cache.tail_index,
                            session.expert_mask)  # [b*, T, D_e]
        return model.action_out_proj(hidden)  # [b*, T, 2]

    with autocast(model):
        session.actions.copy_(euler_sample(velocity, session.noise, model.config.flow.num_steps))

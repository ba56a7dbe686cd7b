"""Route conditioning with classifier-free guidance over the action expert (MODEL-1.5.md §7).

The guided context is the ordinary rollout on the route prompt. The unguided one is the same rollout with the
route block cut out of the prompt: prompt ids without `<|route_start|>…<|route_end|>` (re-padded on the left),
prefilled over the same images, then the guided CoC tokens teacher-forced in one forward. Per Euler step the
expert runs on both contexts with the same x and t, and the velocities are blended
v = (1 − w)·v_u + w·v_g in the velocity's dtype: w = 1 is the guided path, w = 0 the unguided one, and the
upstream notebook uses w = 1.5.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor
from transformers.cache_utils import DynamicCache

from alpamayo_ros.model.expert import repeat_cache_rows
from alpamayo_ros.model.flow_matching import VelocityFn
from alpamayo_ros.model.prompt import mrope_position_ids, pad_left, remove_span
from alpamayo_ros.model.tokens import SpecialTokens

if TYPE_CHECKING:  # alpamayo.py imports this module
    from alpamayo_ros.model.alpamayo import AlpamayoR1


def unguided_prompt_ids(input_ids: Tensor, specials: SpecialTokens) -> Tensor:
    """The unguided prompts: each row without its route span, left-padded to a common length U.

    Rows keep any left padding they had (it is masked by id, as upstream's prefix mask = id != pad).

    Args:
        input_ids: [B, L_in] guided prompts (history fused), each holding one route block.
        specials: special-token ids.

    Returns:
        [B, U] int64 on the device of `input_ids`.

    Raises:
        ValueError: a row has no route block.
    """
    rows = [remove_span(row, specials.route_start, specials.route_end) for row in input_ids.cpu()]
    return pad_left(rows, specials.pad).to(input_ids.device)


def guided_velocity(guided: VelocityFn, unguided: VelocityFn, weight: float) -> VelocityFn:
    """Classifier-free guidance of two velocity fields: v = (1 − w)·v_u + w·v_g.

    The guided field is evaluated first, then the unguided one, at the same (x, t); the blend is formed in the
    velocities' dtype (bf16 under the reference autocast, each product and the sum rounded), as upstream.

    Args:
        guided: velocity with the route in the context.
        unguided: velocity without it.
        weight: w; 1 = guided only, 0 = unguided only, > 1 extrapolates away from the unguided field.
    """

    def velocity(x: Tensor, t: Tensor) -> Tensor:
        v_guided = guided(x, t)  # [N, T, 2]
        v_unguided = unguided(x, t)  # [N, T, 2]
        return (1.0 - weight) * v_unguided + weight * v_guided

    return velocity


def teacher_forcing_inputs(
    prefix_mask: Tensor, coc_ids: Tensor, rope_deltas: Tensor, pad_id: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Mask, positions and cache positions of the CoC tokens forced after an unguided prefix (§7 step 4).

    Args:
        prefix_mask: [b*, U] bool, False at the prefix's left padding.
        coc_ids: [b*, N] generated ids G (padded after EOS).
        rope_deltas: [b*, 1] of the unguided prefix.
        pad_id: `<|endoftext|>`; G's pads are masked.

    Returns:
        attention mask [b*, U + N] bool, position ids [3, b*, N] (cache index + rope delta on every axis),
        cache positions [N].
    """
    prefix_len, num_tokens = prefix_mask.shape[1], coc_ids.shape[1]
    mask = torch.cat([prefix_mask, coc_ids != pad_id], dim=1)  # [b*, U+N]
    cache_position = torch.arange(prefix_len, prefix_len + num_tokens, device=coc_ids.device)  # [N]
    positions = (cache_position[None, :] + rope_deltas).unsqueeze(0).expand(3, -1, -1)  # [3, b*, N]
    return mask, positions, cache_position


def unguided_velocity(
    model: AlpamayoR1,
    input_ids: Tensor,
    grid: Tensor,
    image_embeds: Tensor,
    deepstack: list[Tensor],
    generated: Tensor,
) -> VelocityFn:
    """The expert's velocity field over the route-free context (MODEL-1.5.md §7 steps 2–5).

    The route spans are cut from the fused prompts, which are re-padded and prefilled over the same image
    features (upstream re-runs the vision tower on the same pixels, which gives the same values); the cache
    rows are repeated per sample (upstream adds (B, 1) rope deltas to B·S rows, correct only for B = 1 or
    S = 1; here every row gets its input's delta), then the generated CoC tokens G are teacher-forced in one
    forward, so the cache holds U + N tokens, and the expert sees it up to G's first `<|traj_future_start|>`.

    Args:
        model: the model of the guided rollout.
        input_ids: [B, L_in] guided prompts (history fused), each with a route block.
        grid: [B·V·F, 3] image grids of the guided pass.
        image_embeds, deepstack: the vision tower outputs of the guided pass.
        generated: [b*, N] generated ids, padded after EOS.
    """
    special, device = model.special, model.device
    samples = generated.shape[0] // input_ids.shape[0]
    unguided = unguided_prompt_ids(input_ids, special)  # [B, U]
    prefix_mask = model._padding_mask(unguided)  # [B, U] or None
    position_ids, rope_deltas = mrope_position_ids(
        unguided.cpu(), grid.cpu(), special.image_pad, model.patch_geometry.merge_size,
        None if prefix_mask is None else prefix_mask.cpu(),
    )
    cache = DynamicCache()
    model._prefill(unguided, position_ids.to(device), image_embeds, deepstack, cache, prefix_mask)
    repeat_cache_rows(cache, samples)
    rope_deltas = rope_deltas.to(device).repeat_interleave(samples, 0)  # [b*, 1]
    unguided = unguided.repeat_interleave(samples, 0)  # [b*, U]
    prefix_valid = unguided != special.pad  # [b*, U]
    mask, positions, cache_position = teacher_forcing_inputs(prefix_valid, generated, rope_deltas,
                                                             special.pad)
    lm = model.vlm.model.language_model
    lm(inputs_embeds=lm.embed_tokens(generated), position_ids=positions, attention_mask=mask,
       past_key_values=cache, use_cache=True, cache_position=cache_position)  # cache: U + N tokens
    sequences = torch.cat([unguided, generated], dim=1)  # [b*, U+N]
    return model._velocity(cache, sequences, rope_deltas, None if prefix_mask is None else prefix_valid)

r"""GRPO as pure tensor functions: group advantages, the clipped objective, KL, aggregation.

Rows come in groups of ``G`` consecutive completions of the same prompt. For a token ``t`` of
completion ``i`` with advantage ``A_i`` and importance ratio
``r = exp(logp - logp_old)``, the per-token loss is

    -min(r * A_i, clip(r, 1 - epsilon_low, 1 + epsilon_high) * A_i) + beta * KL_t

with the k3 estimator ``KL_t = exp(ref - logp) - (ref - logp) - 1`` against the reference
(adapter-disabled) model. ``logp_old`` is the sampling policy's log-prob when a rollout is
reused (``num_iterations > 1``), else ``logp`` detached (the ratio is then 1 with gradient
``A_i * grad logp``). Aggregation over tokens:

* ``grpo``: mean over each sequence's tokens, then mean over sequences;
* ``dr_grpo``: sum over all tokens / (number of sequences * ``max_completion_length``);
* ``dapo``: mean over all tokens of the batch.

Every function takes optional global normalisers (``total_sequences``, ``total_tokens``) so a
batch split into micro-batches sums to exactly the full-batch loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

AdvantageScaling = Literal["group", "batch", "none"]
Aggregation = Literal["grpo", "dr_grpo", "dapo"]
SCALINGS: tuple[str, ...] = ("group", "batch", "none")
AGGREGATIONS: tuple[str, ...] = ("grpo", "dr_grpo", "dapo")


def _groups(rewards: Tensor, num_generations: int) -> Tensor:
    if rewards.dim() != 1 or num_generations < 1 or rewards.numel() % num_generations:
        raise ValueError(f"rewards of shape {tuple(rewards.shape)} do not split into groups of {num_generations}")
    return rewards.view(-1, num_generations)


def group_advantages(rewards: Tensor, num_generations: int, scaling: AdvantageScaling = "group",
                     eps: float = 1e-4) -> Tensor:
    """``reward - mean(reward of its group)``, divided by the group's std (``group``), the whole
    batch's std (``batch``) or nothing (``none``, Dr. GRPO). Stds are unbiased (n - 1), plus ``eps``.
    """
    if scaling not in SCALINGS:
        raise ValueError(f"advantage scaling must be one of {', '.join(SCALINGS)}, got {scaling!r}")
    grouped = _groups(rewards.float(), num_generations)
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    if scaling == "group":
        std = grouped.std(dim=1, keepdim=True) if num_generations > 1 else torch.zeros_like(grouped[:, :1])
        centred = centred / (std + eps)
    elif scaling == "batch":
        std = rewards.float().std() if rewards.numel() > 1 else rewards.new_zeros(())
        centred = centred / (std + eps)
    return centred.reshape(-1)


def constant_groups(rewards: Tensor, num_generations: int) -> Tensor:
    """(num_groups,) bool: groups whose completions all got the same reward (zero advantage)."""
    grouped = _groups(rewards, num_generations)
    return (grouped == grouped[:, :1]).all(dim=1)


def loss_mask(completion_mask: Tensor, truncated: Tensor, mask_truncated: bool) -> Tensor:
    """The tokens that count in the loss: the completion mask, minus truncated rows if asked."""
    mask = completion_mask.float()
    if mask_truncated:
        mask = mask * (~truncated).float().unsqueeze(1)
    return mask


def kl_k3(logps: Tensor, ref_logps: Tensor) -> Tensor:
    """Per-token k3 estimate of KL(policy || reference): ``exp(d) - d - 1`` with ``d = ref - logp``."""
    delta = ref_logps - logps
    return torch.exp(delta) - delta - 1


def aggregate(per_token: Tensor, mask: Tensor, aggregation: Aggregation, *, max_completion_length: int,
              total_sequences: int | None = None, total_tokens: float | None = None) -> Tensor:
    """Reduce (rows, C) per-token values to a scalar (see the module docstring).

    ``total_sequences`` / ``total_tokens`` are the full batch's row count and masked token
    count when ``per_token`` is one micro-batch of it (defaults: this tensor's own).
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"loss aggregation must be one of {', '.join(AGGREGATIONS)}, got {aggregation!r}")
    sequences = total_sequences if total_sequences is not None else per_token.shape[0]
    masked = per_token * mask
    if aggregation == "grpo":
        per_seq = masked.sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        return per_seq.sum() / max(sequences, 1)
    if aggregation == "dr_grpo":
        return masked.sum() / (max(sequences, 1) * max_completion_length)
    tokens = total_tokens if total_tokens is not None else float(mask.sum())
    return masked.sum() / max(tokens, 1.0)


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` over positions where ``mask`` is 1 (0 for an empty mask)."""
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


@dataclass
class PolicyLoss:
    """The scalar loss to back-propagate and detached per-batch statistics."""

    loss: Tensor
    kl: Tensor  # mean per-token k3 KL (0 when beta == 0 or no reference)
    clip_ratio_low: Tensor  # share of tokens with ratio < 1 - eps_low and A < 0
    clip_ratio_high: Tensor  # share of tokens with ratio > 1 + eps_high and A > 0
    clip_ratio_region: Tensor  # share clipped either way


def grpo_loss(
    logps: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    old_logps: Tensor | None = None,
    ref_logps: Tensor | None = None,
    epsilon_low: float = 0.2,
    epsilon_high: float = 0.2,
    beta: float = 0.0,
    aggregation: Aggregation = "grpo",
    max_completion_length: int,
    total_sequences: int | None = None,
    total_tokens: float | None = None,
) -> PolicyLoss:
    """The clipped GRPO objective (to minimise) for (rows, C) log-probs and (rows,) advantages."""
    if beta > 0 and ref_logps is None:
        raise ValueError("beta > 0 needs reference log-probs (ref_logps)")
    old = logps.detach() if old_logps is None else old_logps
    ratio = torch.exp(logps - old)
    adv = advantages.unsqueeze(1)
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high) * adv
    per_token = -torch.min(unclipped, clipped)
    kl = torch.zeros((), device=logps.device)
    if beta > 0:
        per_token_kl = kl_k3(logps, ref_logps)
        per_token = per_token + beta * per_token_kl
        kl = masked_mean(per_token_kl.detach(), mask)
    loss = aggregate(per_token, mask, aggregation, max_completion_length=max_completion_length,
                     total_sequences=total_sequences, total_tokens=total_tokens)
    with torch.no_grad():
        low = ((ratio < 1 - epsilon_low) & (adv < 0)).float()
        high = ((ratio > 1 + epsilon_high) & (adv > 0)).float()
        stats = dict(
            clip_ratio_low=masked_mean(low, mask), clip_ratio_high=masked_mean(high, mask),
            clip_ratio_region=masked_mean(((low + high) > 0).float(), mask),
        )
    return PolicyLoss(loss=loss, kl=kl, **stats)

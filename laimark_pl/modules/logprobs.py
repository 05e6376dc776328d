"""Per-token log-probabilities of completion tokens without a full-vocabulary log-softmax.

A causal LM's ``lm_head`` turns every hidden state into ``vocab`` logits; a log-softmax over
all positions of a (rows x length x 150k) batch costs gigabytes. Here only the hidden states
that predict *real completion tokens* (mask == 1) go through the head, in chunks of
``chunk_size`` positions; each chunk computes ``logit[target] - logsumexp(logits)`` in
float32 and, when gradients are needed, is recomputed in the backward pass
(activation checkpointing), so at most one chunk's logits are alive at a time.

Example:
    >>> logp, entropy = completion_logprobs(  # doctest: +SKIP
    ...     policy.model, rollout.input_ids, rollout.attention_mask, rollout.completion_ids,
    ...     rollout.completion_mask, with_entropy=True)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint


def position_ids_from_mask(attention_mask: Tensor) -> Tensor:
    """Positions that skip left padding (what ``generate`` uses), so scores match sampling."""
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.clamp(min=0)


def token_logprobs_from_logits(logits: Tensor, targets: Tensor) -> Tensor:
    """``log_softmax(logits)[target]`` as ``logit[target] - logsumexp(logits)`` in float32."""
    logits = logits.float()
    chosen = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return chosen - torch.logsumexp(logits, dim=-1)


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy of ``softmax(logits)`` along the last axis, in float32."""
    logits = logits.float()
    logz = torch.logsumexp(logits, dim=-1, keepdim=True)
    probs = torch.exp(logits - logz)
    return (logz.squeeze(-1) - (probs * logits).sum(-1))


def chunked_head_logprobs(
    hidden: Tensor,
    head: Callable[[Tensor], Tensor],
    targets: Tensor,
    *,
    temperature: float = 1.0,
    chunk_size: int = 256,
    with_entropy: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Log-probs of ``targets`` under ``head(hidden) / temperature`` for (N, H) hidden states.

    Processes ``chunk_size`` rows at a time; with autograd on, each chunk is checkpointed so
    its (chunk x vocab) logits are recomputed in backward instead of kept. Returns (N,)
    log-probs and, when asked, (N,) entropies (no gradient).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 for log-probs, got {temperature}")

    def one_chunk(h: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        logits = head(h).float() / temperature
        logp = token_logprobs_from_logits(logits, t)
        if with_entropy:
            with torch.no_grad():
                ent = entropy_from_logits(logits.detach())
        else:
            ent = logp.new_zeros(0)
        return logp, ent

    use_checkpoint = torch.is_grad_enabled() and hidden.requires_grad
    logps, entropies = [], []
    for start in range(0, hidden.shape[0], chunk_size):
        h, t = hidden[start:start + chunk_size], targets[start:start + chunk_size]
        if use_checkpoint:
            logp, ent = checkpoint(one_chunk, h, t, use_reentrant=False)
        else:
            logp, ent = one_chunk(h, t)
        logps.append(logp)
        entropies.append(ent)
    empty = hidden.new_zeros(0, dtype=torch.float32)
    logp = torch.cat(logps) if logps else empty
    entropy = (torch.cat(entropies) if entropies else empty) if with_entropy else None
    return logp, entropy


def _causal_lm_parts(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(backbone returning ``last_hidden_state``, output head) of a (peft-wrapped) causal LM."""
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone = getattr(lm, lm.base_model_prefix)
    head = lm.get_output_embeddings()
    if head is None:
        raise ValueError(f"{type(lm).__name__} has no output embeddings (lm_head)")
    return backbone, head


def completion_logprobs(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    completion_ids: Tensor,
    completion_mask: Tensor,
    *,
    temperature: float = 1.0,
    chunk_size: int = 256,
    with_entropy: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Per-token log-probs (and entropies) of the completion tokens of ``input_ids``.

    ``input_ids`` = prompt + completion (rows, P + C), the completion being the last C
    columns (``completion_ids``). Only positions with ``completion_mask == 1`` are scored;
    others are 0 in the (rows, C) outputs. ``temperature`` divides the logits as in sampling.
    """
    backbone, head = _causal_lm_parts(model)
    num_completion = completion_ids.shape[1]
    out = backbone(input_ids=input_ids, attention_mask=attention_mask,
                   position_ids=position_ids_from_mask(attention_mask), use_cache=False)
    hidden = out.last_hidden_state[:, -num_completion - 1:-1]  # position t predicts token t + 1
    selected = completion_mask.bool()
    logp_flat, ent_flat = chunked_head_logprobs(
        hidden[selected], head, completion_ids[selected], temperature=temperature,
        chunk_size=chunk_size, with_entropy=with_entropy,
    )
    logp = torch.zeros(completion_ids.shape, dtype=torch.float32, device=hidden.device)
    logp = logp.masked_scatter(selected, logp_flat)
    entropy = None
    if ent_flat is not None:
        entropy = torch.zeros_like(logp).masked_scatter(selected, ent_flat)
    return logp, entropy

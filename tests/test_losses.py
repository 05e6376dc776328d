"""GRPO losses against values computed by hand (in the comments)."""

from __future__ import annotations

import math

import pytest
import torch

from laimark_pl.modules.losses import (
    aggregate,
    constant_groups,
    group_advantages,
    grpo_loss,
    kl_k3,
    loss_mask,
)

EPS = 1e-4


def test_group_advantages_scaled_by_group_std():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0])
    adv = group_advantages(rewards, 4, "group", eps=EPS)
    # group 1: mean 0.25, unbiased std sqrt((0.5625 + 3 * 0.0625) / 3) = 0.5
    # group 2: mean 0.5, unbiased std sqrt(4 * 0.25 / 3) = 0.57735
    s2 = math.sqrt(1 / 3)
    expected = [0.75 / (0.5 + EPS), -0.25 / (0.5 + EPS), -0.25 / (0.5 + EPS), -0.25 / (0.5 + EPS),
                0.5 / (s2 + EPS), 0.5 / (s2 + EPS), -0.5 / (s2 + EPS), -0.5 / (s2 + EPS)]
    assert adv.tolist() == pytest.approx(expected, rel=1e-6)


def test_group_advantages_scaled_by_batch_std():
    rewards = torch.tensor([1.0, 0.0, 3.0, 3.0])
    adv = group_advantages(rewards, 2, "batch", eps=EPS)
    # centred in groups: [0.5, -0.5, 0, 0]; batch: mean 1.75, unbiased var
    # (0.5625 + 3.0625 + 1.5625 + 1.5625) / 3 = 2.25 -> std 1.5
    assert adv.tolist() == pytest.approx([0.5 / (1.5 + EPS), -0.5 / (1.5 + EPS), 0.0, 0.0], rel=1e-6)


def test_group_advantages_unscaled():
    adv = group_advantages(torch.tensor([2.0, 0.0, 1.0, 1.0, 1.0, 0.0]), 3, "none")
    assert adv.tolist() == pytest.approx([1.0, -1.0, 0.0, 1 / 3, 1 / 3, -2 / 3])


def test_constant_groups_have_zero_advantage():
    rewards = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 0.0])
    assert constant_groups(rewards, 2).tolist() == [True, False, True]
    assert group_advantages(rewards, 2, "group")[[0, 1, 4, 5]].abs().max() == 0


def test_group_advantages_rejects_bad_input():
    with pytest.raises(ValueError, match="groups of 4"):
        group_advantages(torch.zeros(6), 4)
    with pytest.raises(ValueError, match="scaling"):
        group_advantages(torch.zeros(4), 2, "median")


def test_loss_mask_drops_truncated_rows_only_when_asked():
    completion_mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    truncated = torch.tensor([False, True])
    assert loss_mask(completion_mask, truncated, False).tolist() == [[1, 1, 0], [1, 1, 1]]
    assert loss_mask(completion_mask, truncated, True).tolist() == [[1, 1, 0], [0, 0, 0]]


def test_kl_k3():
    # d = ref - logp = log(0.5) - log(0.25) = log 2: exp(d) - d - 1 = 2 - 0.693147 - 1
    value = kl_k3(torch.tensor([math.log(0.25)]), torch.tensor([math.log(0.5)]))
    assert value.item() == pytest.approx(1 - math.log(2))
    assert kl_k3(torch.tensor([0.3]), torch.tensor([0.3])).item() == 0.0


# Two sequences: lengths 2 and 4 (C = 4); per-token values v; the mask selects real tokens.
VALUES = torch.tensor([[1.0, 3.0, 100.0, 100.0], [2.0, 2.0, 2.0, 6.0]])
MASK = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])


def test_aggregate_grpo():
    # sequence means 2 and 3 -> 2.5
    assert aggregate(VALUES, MASK, "grpo", max_completion_length=8).item() == pytest.approx(2.5)


def test_aggregate_dr_grpo():
    # token sum 4 + 12 = 16, / (2 sequences * 8)
    assert aggregate(VALUES, MASK, "dr_grpo", max_completion_length=8).item() == pytest.approx(1.0)


def test_aggregate_dapo():
    # token sum 16 over 6 tokens
    assert aggregate(VALUES, MASK, "dapo", max_completion_length=8).item() == pytest.approx(16 / 6)


@pytest.mark.parametrize("aggregation", ["grpo", "dr_grpo", "dapo"])
def test_micro_batches_sum_to_the_full_batch(aggregation):
    full = aggregate(VALUES, MASK, aggregation, max_completion_length=8)
    parts = sum(aggregate(VALUES[i:i + 1], MASK[i:i + 1], aggregation, max_completion_length=8,
                          total_sequences=2, total_tokens=6.0) for i in range(2))
    assert parts.item() == pytest.approx(full.item())


def test_aggregate_rejects_unknown():
    with pytest.raises(ValueError, match="aggregation"):
        aggregate(VALUES, MASK, "mean", max_completion_length=8)


def test_grpo_loss_on_policy_value_and_gradient():
    # old = detached current: ratio 1 everywhere, loss = -A per token
    logps = torch.log(torch.tensor([[0.5, 0.25], [0.5, 0.5]])).requires_grad_()
    adv = torch.tensor([2.0, -1.0])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    out = grpo_loss(logps, adv, mask, aggregation="grpo", max_completion_length=2)
    # per sequence: mean(-2, -2) = -2 and -(-1) = 1 -> mean -0.5
    assert out.loss.item() == pytest.approx(-0.5)
    out.loss.backward()
    # d loss / d logp = -A * mask / len / num_sequences
    assert logps.grad.flatten().tolist() == pytest.approx([-0.5, -0.5, 0.5, 0.0])
    assert out.clip_ratio_region.item() == 0.0 and out.kl.item() == 0.0


def test_grpo_loss_clipping_symmetric():
    # ratios e^0.5 = 1.6487 (A > 0, clipped at 1.2), e^-0.5 = 0.6065 (A < 0, clipped at 0.8),
    # e^0.1 = 1.1052 (not clipped)
    old = torch.zeros(1, 3)
    logps = torch.tensor([[0.5, -0.5, 0.1]])
    out = grpo_loss(logps, torch.tensor([1.0]), torch.ones(1, 3), old_logps=old, epsilon_low=0.2,
                    epsilon_high=0.2, aggregation="dapo", max_completion_length=3)
    # token 1: -min(1.6487, 1.2) = -1.2; token 2: -min(0.6065, 0.8) = -0.6065; token 3: -1.1052
    expected = (-1.2 - math.exp(-0.5) - math.exp(0.1)) / 3
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)
    # high: ratio > 1.2 with A > 0 -> token 1; low needs A < 0 -> none
    assert out.clip_ratio_high.item() == pytest.approx(1 / 3)
    assert out.clip_ratio_low.item() == 0.0
    assert out.clip_ratio_region.item() == pytest.approx(1 / 3)


def test_grpo_loss_clip_higher_and_negative_advantage():
    old = torch.zeros(2, 1)
    logps = torch.tensor([[0.25], [-0.5]])  # ratios 1.2840, 0.6065
    adv = torch.tensor([1.0, -2.0])
    out = grpo_loss(logps, adv, torch.ones(2, 1), old_logps=old, epsilon_low=0.2, epsilon_high=0.28,
                    aggregation="grpo", max_completion_length=1)
    # row 1: ratio 1.284 < 1.28? no: 1.2840 > 1.28 -> clipped: -min(1.2840, 1.28) = -1.28
    # row 2: A = -2: -min(0.6065 * -2, 0.8 * -2) = -min(-1.2131, -1.6) = 1.6
    assert out.loss.item() == pytest.approx((-1.28 + 1.6) / 2, rel=1e-5)
    assert out.clip_ratio_high.item() == pytest.approx(0.5)
    assert out.clip_ratio_low.item() == pytest.approx(0.5)


def test_clipped_tokens_get_no_gradient():
    old = torch.zeros(1, 2)
    logps = torch.tensor([[0.5, 0.0]], requires_grad=True)
    out = grpo_loss(logps, torch.tensor([1.0]), torch.ones(1, 2), old_logps=old, aggregation="dapo",
                    max_completion_length=2)
    out.loss.backward()
    # token 1 clipped (ratio 1.65 > 1.2, A > 0): zero grad; token 2: -A * ratio / 2 = -0.5
    assert logps.grad.flatten().tolist() == pytest.approx([0.0, -0.5])


def test_grpo_loss_kl_penalty():
    logps = torch.log(torch.tensor([[0.25, 0.5]]))
    ref = torch.log(torch.tensor([[0.5, 0.5]]))
    out = grpo_loss(logps, torch.tensor([0.0]), torch.ones(1, 2), ref_logps=ref, beta=0.1, aggregation="dapo",
                    max_completion_length=2)
    kl_first = 1 - math.log(2)  # see test_kl_k3; second token: 0
    assert out.kl.item() == pytest.approx(kl_first / 2)
    assert out.loss.item() == pytest.approx(0.1 * kl_first / 2)
    with pytest.raises(ValueError, match="ref_logps"):
        grpo_loss(logps, torch.tensor([0.0]), torch.ones(1, 2), beta=0.1, max_completion_length=2)


def test_grpo_loss_dr_grpo_uses_the_constant_length():
    logps = torch.zeros(2, 3)
    adv = torch.tensor([1.0, 1.0])
    mask = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    out = grpo_loss(logps, adv, mask, aggregation="dr_grpo", max_completion_length=10)
    # 4 tokens with -1 each / (2 * 10)
    assert out.loss.item() == pytest.approx(-4 / 20)

"""Chunked completion log-probs against a naive full log-softmax, on the tiny model."""

from __future__ import annotations

import pytest
import torch

from laimark_pl.modules.logprobs import (
    chunked_head_logprobs,
    completion_logprobs,
    entropy_from_logits,
    position_ids_from_mask,
)
from laimark_pl.modules.policy import PolicyConfig, load_policy
from laimark_pl.tiny import build_tiny_model


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    path = build_tiny_model(tmp_path_factory.mktemp("tiny"), seed=0)
    torch.manual_seed(0)
    pol = load_policy(PolicyConfig(model=str(path), lora_r=4, lora_dropout=0.0, device="cpu"))
    with torch.no_grad():  # a non-zero adapter, so the adapter path is exercised
        for name, param in pol.model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.1)
    return pol


def naive_logprobs(model, input_ids, attention_mask, completion_ids, temperature=1.0):
    """Full-vocabulary log_softmax over every position (what we avoid doing)."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask,
                   position_ids=position_ids_from_mask(attention_mask)).logits
    logits = logits[:, -completion_ids.shape[1] - 1:-1].float() / temperature
    logp_all = torch.log_softmax(logits, dim=-1)
    logp = logp_all.gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp, entropy


def test_entropy_matches_definition():
    logits = torch.randn(5, 11)
    p = torch.softmax(logits, -1)
    assert torch.allclose(entropy_from_logits(logits), -(p * p.log()).sum(-1), atol=1e-5)


@pytest.mark.parametrize("chunk_size", [1, 3, 1000])
def test_chunked_head_matches_log_softmax(chunk_size):
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 50, bias=True)
    hidden = torch.randn(7, 8)
    targets = torch.randint(0, 50, (7,))
    logp, entropy = chunked_head_logprobs(hidden, head, targets, temperature=0.7, chunk_size=chunk_size,
                                          with_entropy=True)
    full = torch.log_softmax(head(hidden) / 0.7, -1)
    assert torch.allclose(logp, full.gather(-1, targets[:, None]).squeeze(-1), atol=1e-5)
    assert torch.allclose(entropy, -(full.exp() * full).sum(-1), atol=1e-5)


def test_chunked_gradients_match_naive():
    torch.manual_seed(1)
    head = torch.nn.Linear(8, 50, bias=False)
    hidden = torch.randn(9, 8, requires_grad=True)
    targets = torch.randint(0, 50, (9,))
    logp, _ = chunked_head_logprobs(hidden, head, targets, chunk_size=4)
    logp.sum().backward()
    chunked_grad, head_grad = hidden.grad.clone(), head.weight.grad.clone()
    hidden.grad, head.weight.grad = None, None
    torch.log_softmax(head(hidden), -1).gather(-1, targets[:, None]).sum().backward()
    assert torch.allclose(chunked_grad, hidden.grad, atol=1e-5)
    assert torch.allclose(head_grad, head.weight.grad, atol=1e-5)


def test_completion_logprobs_match_naive_on_a_rollout(policy):
    torch.manual_seed(3)
    rollout = policy.sample(["def add(a, b):", "Write a function that reverses a string."], num_samples=3,
                            temperature=1.0, max_new_tokens=12)
    args = (rollout.input_ids, rollout.attention_mask, rollout.completion_ids)
    logp, entropy = completion_logprobs(policy.model, *args, rollout.completion_mask, temperature=0.8,
                                        chunk_size=5, with_entropy=True)
    mask = rollout.completion_mask.bool()
    with torch.no_grad():
        ref_logp, ref_entropy = naive_logprobs(policy.model, *args, temperature=0.8)
    assert torch.allclose(logp[mask], ref_logp[mask], atol=1e-4)
    assert torch.allclose(entropy[mask], ref_entropy[mask], atol=1e-4)
    assert (logp[~mask] == 0).all() and (entropy[~mask] == 0).all()


def test_completion_logprobs_gradients_match_naive(policy):
    torch.manual_seed(4)
    rollout = policy.sample(["def f(x):"], num_samples=2, temperature=1.0, max_new_tokens=6)
    args = (rollout.input_ids, rollout.attention_mask, rollout.completion_ids)
    mask = rollout.completion_mask.bool()
    params = policy.trainable_parameters()
    logp, _ = completion_logprobs(policy.model, *args, rollout.completion_mask, chunk_size=2)
    chunked = torch.autograd.grad(logp[mask].sum(), params)
    naive, _ = naive_logprobs(policy.model, *args)
    expected = torch.autograd.grad(naive[mask].sum(), params)
    for got, want in zip(chunked, expected, strict=True):
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-5)


def test_logprobs_match_the_sampling_distribution(policy):
    """Left padding: scores must use the same positions as generate (else the ratio is not 1)."""
    tok = policy.tokenizer
    prompts = [policy.chat_prompt("hi"), policy.chat_prompt("a much longer prompt with more tokens in it")]
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    assert (enc["attention_mask"][0] == 0).any()  # the short prompt is left-padded
    with torch.no_grad():
        out = policy.model.generate(**enc, max_new_tokens=4, do_sample=False, output_logits=True,
                                    return_dict_in_generate=True, pad_token_id=tok.pad_token_id,
                                    eos_token_id=None)
    completion = out.sequences[:, enc["input_ids"].shape[1]:]
    gen_logp = torch.stack([torch.log_softmax(s.float(), -1) for s in out.logits], 1)
    gen_logp = gen_logp.gather(-1, completion.unsqueeze(-1)).squeeze(-1)
    attention = torch.cat([enc["attention_mask"], torch.ones_like(completion)], 1)
    with torch.no_grad():
        logp, _ = completion_logprobs(policy.model, out.sequences, attention, completion,
                                      torch.ones_like(completion))
    assert torch.allclose(logp, gen_logp, atol=1e-4)

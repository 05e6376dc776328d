"""Training core: the policy (`policy`), per-token log-probs (`logprobs`), GRPO losses (`losses`),
reward functions (`rewards`) and the Lightning `GRPOModule` (`grpo`).

Import from the submodules (``from laimark_pl.modules.grpo import GRPOModule``); this package
imports nothing itself, so loading the policy does not pull in Lightning.
"""

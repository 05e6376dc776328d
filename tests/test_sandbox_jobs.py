"""What the parent sends a child: the compiled program, and the calls or the tests."""

from __future__ import annotations

import marshal
import warnings

from laimark_pl.sandbox.asserts import plan_asserts
from laimark_pl.sandbox.jobs import build_job, compile_program
from laimark_pl.sandbox.types import Program
from laimark_pl.sandbox.wire import HEADER


def _body(job: bytes) -> dict:
    (size,) = HEADER.unpack(job[:HEADER.size])
    assert size == len(job) - HEADER.size
    return marshal.loads(job[HEADER.size:])


def test_programs_compile_here_and_the_uncompilable_travel_as_source():
    assert compile_program("def f(x):\n    return x").co_filename == "<solution>"
    assert compile_program("def f(:\n") == "def f(:\n"  # the child compiles it again and reports the error
    assert compile_program("x = '\x00'") == "x = '\x00'"


def test_compile_time_warnings_are_not_shown_even_after_the_filters_were_reset():
    with warnings.catch_warnings(record=True) as shown:
        warnings.resetwarnings()  # drops our filter too: it is put back at the next compile
        warnings.simplefilter("default")
        compile_program("y = 1 is 1")
    assert not [w for w in shown if w.filename == "<solution>"], [str(w.message) for w in shown]


def test_assert_shaped_tests_travel_as_calls_others_whole():
    program = Program("def f(x):\n    return 2 * x", "assert f(3) == 6\nassert f(0) == 0")
    mode, job = build_job(program, plan_asserts(program.tests, None))
    body = _body(job)
    assert mode == "calls" and [c[0] for c in body["calls"]] == ["f", "f"] and "tests" not in body
    namespace: dict = {}
    exec(body["code"], namespace)
    assert namespace["f"](4) == 8

    looped = Program(program.code, "for i in range(3):\n    assert f(i) == 2 * i", "f")
    mode, job = build_job(looped, plan_asserts(looped.tests, "f"))
    assert mode == "tester" and _body(job)["tests"] == looped.tests and _body(job)["entry_point"] == "f"

"""The process backend: contract, honest programs, verdict details, bad input, worker recovery."""

from __future__ import annotations

import os
import signal
import time
import warnings

import pytest

from laimark_pl.sandbox import BACKENDS, ProcessSandbox, Program, Verdict, create

DOUBLE = "def f(x):\n    return 2 * x"


@pytest.fixture(scope="module")
def sandbox():
    with ProcessSandbox(workers=2, timeout_s=3.0, memory_mb=256) as sb:
        yield sb


def check_one(sandbox, code: str, tests: str = "assert f(3) == 6", entry_point: str | None = None) -> Verdict:
    return sandbox.check([Program(code, tests, entry_point)])[0]


# ------------------------------------------------------------------ contract


def test_create_returns_process_backend_and_rejects_unknown():
    assert BACKENDS == ("process", "docker")
    with create("process", workers=1, timeout_s=2.0) as sb:
        assert isinstance(sb, ProcessSandbox)
        assert sb.check([Program(DOUBLE, "assert f(2) == 4")])[0].passed
    with pytest.raises(ValueError, match="unknown sandbox backend 'podman'"):
        create("podman")


@pytest.mark.parametrize("kwargs,match", [({"workers": 0}, "workers"), ({"timeout_s": 0}, "timeout_s"),
                                          ({"memory_mb": 8}, "memory_mb"), ({"max_processes": 0}, "max_processes")])
def test_invalid_configuration(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ProcessSandbox(**kwargs)


def test_batch_verdicts_in_order_and_parallel(sandbox):
    programs = [Program(DOUBLE, f"assert f({i}) == {2 * i if i % 3 else -1}") for i in range(12)]
    verdicts = sandbox.check(programs)
    assert [v.passed for v in verdicts] == [i % 3 != 0 for i in range(12)]
    slow = Program("import time\ndef f(x):\n    time.sleep(0.5)\n    return 2 * x", "assert f(1) == 2")
    start = time.monotonic()
    assert all(v.passed for v in sandbox.check([slow, slow]))
    assert time.monotonic() - start < 0.95  # the two ran side by side
    assert sandbox.check([]) == []


def test_fully_isolated_as_root(sandbox):
    if os.geteuid() != 0:
        pytest.skip("full isolation needs root")
    assert sandbox.degraded == []
    code = "import os\ndef probe():\n    return [os.getuid(), os.getcwd(), os.environ['TMPDIR']]"
    verdict = check_one(sandbox, code, "assert probe()[0] >= 61000\nassert probe()[1:] == ['/tmp', '/tmp']")
    assert verdict.passed, verdict


# ------------------------------------------------------------------ verdicts


def test_verdict_fields_for_pass_and_failure(sandbox):
    ok = check_one(sandbox, "def f(x):\n    print('hello')\n    return 2 * x",
                   "assert f(1) == 2\nassert f(\n    2\n) == 4\nassert f(3) == 6")
    assert (ok.status, ok.passed, ok.tests_passed, ok.tests_total) == ("passed", True, 3, 3)
    assert "hello" in ok.stdout_tail and ok.duration_s > 0
    bad = check_one(sandbox, "def f(x):\n    return 2 * x if x < 3 else 0",
                    "assert f(1) == 2\nassert f(3) == 6\nassert f(2) == 4")
    assert (bad.status, bad.passed, bad.tests_passed, bad.tests_total) == ("failed", False, 2, 3)
    assert "assert f(3) == 6" in bad.detail and "returned 0" in bad.detail


def test_exception_in_candidate_fails_with_detail(sandbox):
    verdict = check_one(sandbox, "def f(x):\n    raise KeyError('nope')")
    assert verdict.status == "failed" and "KeyError" in verdict.detail


@pytest.mark.parametrize("tests", [
    "assert abs(f(1.5) - 3.0) < 1e-9",
    "import math\nassert math.isclose(f(0.1), 0.2)",
    "assert f(2) is not None and f(2) in (4, 5)",
    "assert sorted(f([3, 1])) == [1, 1, 3, 3]",
    "assert f('ab') == 'abab'\nassert f(b'x') == b'xx'",
    "assert f((1,)) == (1, 1)\nassert f((1,)) != [1, 1]",
    "METADATA = {'author': 'x'}\nK = 3\nassert f(K) == 6",
    "def check(candidate):\n    assert candidate(2) == 4\n    assert candidate(5) == 10\n",
    "def check(c):\n    assert c(2) == 4\ncheck(f)\n",
], ids=["abs", "math", "boolops", "sorted", "str-bytes", "tuple-vs-list", "constants", "check", "check-called"])
def test_assert_shaped_tests_judged_by_parent(sandbox, tests):
    code = "def f(x):\n    return x * 2 if not isinstance(x, list) else x + x"
    verdict = check_one(sandbox, code, tests, "f")
    assert verdict.passed, verdict
    assert verdict.extra["mode"] == "asserts"


@pytest.mark.parametrize("tests,passed", [
    ("def check(candidate):\n    for i in range(5):\n        assert candidate(i) == 2 * i\n", True),
    ("def check(candidate):\n    import random\n    for _ in range(20):\n        x = random.randint(0, 9)\n"
     "        assert candidate(x) == x + x\n", True),
    ("def check(candidate):\n    try:\n        candidate('boom')\n    except ValueError:\n        return\n"
     "    assert False\n", True),
    ("def check(candidate):\n    for i in range(5):\n        assert candidate(i) == 2 * i + (i == 4)\n", False),
    ("def check(candidate):\n    h = helper(3)\n    assert h == 'h3'\n    assert candidate(1) == 2\n", True),
], ids=["loop", "random", "expects-exception", "loop-fails", "program-helper"])
def test_general_tests_run_in_tester(sandbox, tests, passed):
    code = ("def f(x):\n    if x == 'boom':\n        raise ValueError('boom')\n    return 2 * x\n"
            "def helper(x):\n    return 'h' + str(x)\n")
    verdict = check_one(sandbox, code, tests, "f")
    assert verdict.passed is passed, verdict
    assert verdict.extra["mode"] == "tester"


def test_tester_children_share_one_cpu(sandbox):
    """A tester execution is a ping-pong of two processes: both run on their worker's CPU."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two CPUs")
    code = "import os\ndef f():\n    return sorted(os.sched_getaffinity(0))"
    tests = "def check(candidate):\n    for _ in range(2):\n        assert len(candidate()) == 1\n"
    verdict = check_one(sandbox, code, tests, "f")
    assert verdict.passed and verdict.extra["mode"] == "tester", verdict
    assigned = check_one(sandbox, code, "assert len(f()) > 1")  # a lone candidate is not pinned
    assert assigned.passed and assigned.extra["mode"] == "asserts", assigned


def test_programs_are_compiled_by_the_parent_and_their_warnings_stay_out_of_its_console(sandbox):
    code = "def f(x):\n    if x is 1:\n        return 'one'\n    raise ValueError('no ' + repr(x))"
    with warnings.catch_warnings(record=True) as shown:  # the filters in force, recorded not printed
        verdict = check_one(sandbox, code, "assert f(1) == 'one'\nassert f(2) == 'two'")
    assert verdict.status == "failed" and "no 2" in verdict.detail, verdict
    assert not [w for w in shown if w.filename == "<solution>"], [str(w.message) for w in shown]


def test_tests_may_use_the_programs_plain_constants(sandbox):
    code = "LIMIT = 5\nTABLE = {1: (2, 3)}\ndef f(x):\n    return min(x, LIMIT)"
    verdict = check_one(sandbox, code, "assert f(9) == LIMIT\nassert TABLE[1] == (2, 3)")
    assert verdict.passed and verdict.extra["mode"] == "tester", verdict
    liar = "class Eq:\n    def __eq__(self, o):\n        return True\nLIMIT = Eq()\ndef f(x):\n    return 0"
    assert not check_one(sandbox, liar, "assert f(9) == LIMIT").passed


def test_stateful_program_sees_calls_in_order(sandbox):
    code = "seen = []\ndef f(x):\n    seen.append(x)\n    return list(seen)"
    assert check_one(sandbox, code, "assert f(1) == [1]\nassert f(2) == [1, 2]").passed


@pytest.mark.parametrize("tests,units", [
    ("for i in range(3):\n    assert f(i) == 2 * i\n", 1),
    ("for i in range(3):\n    assert f(i) == 2 * i\nassert f(1) == 2", 2),
    ("import contextlib\nif True:\n    assert f(1) == 2\nwhile False:\n    pass\n"
     "with contextlib.suppress(KeyError):\n    assert f(2) == 4\n", 2),
    ("def check(candidate):\n    assert candidate(2) == 4\nfor _ in range(2):\n    check(f)\n", 1),
], ids=["for", "for-and-assert", "if-with", "check-in-for"])
def test_asserts_inside_top_level_blocks_are_units(sandbox, tests, units):
    right = check_one(sandbox, DOUBLE, tests, "f")
    assert right.passed and right.tests_total == units, right
    wrong = check_one(sandbox, "def f(x):\n    return 2 * x + (x == 2)", tests, "f")
    assert wrong.status == "failed" and wrong.tests_passed == units - 1, wrong


def test_program_helpers_are_seen_but_builtins_are_never_shadowed(sandbox):
    code = "def f(x):\n    return 2 * x\ndef poly(x):\n    return x + 1\ndef len(x):\n    return 99"
    tests = "def check(candidate):\n    for x in range(3):\n        assert candidate(x) == 2 * x\n" \
            "        assert poly(x) == x + 1 and len([x]) == 1\n"
    verdict = check_one(sandbox, code, tests, "f")
    assert verdict.passed and verdict.extra["mode"] == "tester", verdict


def test_workers_start_isolated_from_the_working_directory(sandbox):
    code = ("import os, sys\ndef f():\n"
            "    return [sys.flags.isolated, sys.flags.no_site, '' in sys.path, os.getcwd() in sys.path]")
    verdict = check_one(sandbox, code, "assert f() == [1, 1, False, False]")
    assert verdict.passed, verdict


# ------------------------------------------------------------------ honest programs


@pytest.mark.parametrize("code", [
    "def f(x):\n    for i in range(20000):\n        print('line', i)\n    return 2 * x",
    "import tempfile, os\ndef f(x):\n    with tempfile.NamedTemporaryFile('w+', delete=False) as fh:\n"
    "        fh.write(str(2 * x))\n    open('local.txt', 'w').write('ok')\n"
    "    return int(open(fh.name).read())",
    "import sys\ndef f(x):\n    sys.stdout.buffer.write(b'\\xff\\xfe raw bytes\\n')\n    print('\\udcff')\n"
    "    sys.stderr.write('warn\\n')\n    return 2 * x",
    "import collections, itertools, functools, heapq, bisect, re, json, fractions, decimal, datetime, "
    "statistics, hashlib, string, typing, dataclasses, textwrap, math, random, copy, operator, enum\n"
    "def f(x):\n    return 2 * x",
    "import time\ndef f(x):\n    time.sleep(1.0)\n    return 2 * x",
    "import threading\ndef f(x):\n    out = []\n"
    "    ts = [threading.Thread(target=out.append, args=(i,)) for i in range(8)]\n"
    "    [t.start() for t in ts]; [t.join() for t in ts]\n    return 2 * x if len(out) == 8 else 0",
    "import subprocess, sys\ndef f(x):\n"
    "    return int(subprocess.run([sys.executable, '-c', f'print({x} * 2)'], capture_output=True).stdout)",
    "from collections import Counter\ndef f(x):\n    return Counter('ab' * x)",
    "import multiprocessing\ndef half(v):\n    return v / 2\ndef f(x):\n"
    "    with multiprocessing.Pool(2) as pool:\n        return int(sum(pool.map(half, [4 * x])))",
], ids=["prints-a-lot", "temp-files", "non-utf8-output", "stdlib-imports", "takes-a-second", "threads",
        "subprocess", "counter", "multiprocessing"])
def test_honest_programs_pass(sandbox, code):
    tests = "assert f(3) == 6" if "Counter" not in code else "assert f(2) == {'a': 2, 'b': 2}"
    verdict = check_one(sandbox, code, tests)
    assert verdict.passed, verdict


def test_generator_results_are_iterators_not_lists(sandbox):
    code = "def f(x):\n    return (i for i in range(x))"
    assert check_one(sandbox, code, "assert list(f(3)) == [0, 1, 2]").passed
    assert not check_one(sandbox, code, "assert f(3) == [0, 1, 2]").passed


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize("program,fragment", [
    (Program("def f(x) return", "assert f(1) == 2"), "does not compile"),
    (Program("def f(x):\n    return 2 * x", "assert f(1) == = 2"), "tests do not parse"),
    (Program("def f(x):\n    return '\udcff'", "assert f(1) == 2"), "not valid UTF-8"),
    (Program("x = 1\n" * 200_000, "assert x == 1"), "limit"),
    (Program("def f(x):\n    return 2 * x", "   \n"), "empty"),
    (Program("def f(x):\n    return 2 * x", "# only a comment\npass"), "no assertions"),
    (Program("def f(x):\n    return 2 * x", "assert f(1) == 2", entry_point="not an id"), "identifier"),
    (Program("x = '\x00'\n", "assert f(1) == 2"), "compile"),
    (Program(b"def f(): pass", "assert f() is None"), "must be a str"),
], ids=["syntax", "test-syntax", "surrogate", "megabyte", "empty-tests", "no-asserts", "entry-point",
        "null-byte", "bytes"])
def test_bad_input_is_an_error_verdict(sandbox, program, fragment):
    verdict = sandbox.check([program, Program(DOUBLE, "assert f(1) == 2")])
    assert verdict[0].status == "error" and not verdict[0].passed, verdict[0]
    assert fragment in verdict[0].detail
    assert verdict[1].passed  # the pool is unharmed


# ------------------------------------------------------------------ recovery


def test_dead_workers_are_replaced():
    with ProcessSandbox(workers=2, timeout_s=3.0) as sb:
        before = sb.worker_pids
        for pid in before:
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
        verdicts = sb.check([Program(DOUBLE, "assert f(2) == 4")] * 4)
        assert all(v.passed for v in verdicts), verdicts
        after = sb.worker_pids
        assert len(after) == 2 and not set(after) & set(before)


def test_worker_killed_mid_execution_gives_crashed_verdict():
    with ProcessSandbox(workers=1, timeout_s=5.0) as sb:
        slow = Program("import time\ndef f(x):\n    time.sleep(3)\n    return 2 * x", "assert f(1) == 2")
        import threading

        pid = sb.worker_pids[0]
        threading.Timer(0.5, os.kill, (pid, signal.SIGKILL)).start()
        start = time.monotonic()
        verdict = sb.check([slow])[0]
        assert not verdict.passed and verdict.status == "crashed", verdict
        assert time.monotonic() - start < 3.0
        assert sb.check([Program(DOUBLE, "assert f(2) == 4")])[0].passed


def test_close_stops_workers():
    sb = ProcessSandbox(workers=1)
    pids = sb.worker_pids
    sb.close()
    time.sleep(0.2)
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
    with pytest.raises(RuntimeError, match="closed"):
        sb.check([Program(DOUBLE, "assert f(1) == 2")])


SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to start a process as another user")
def test_non_root_degrades_with_a_warning_and_still_judges(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[1])
    script = (
        "import warnings, json\n"
        "from laimark_pl.sandbox import ProcessSandbox, Program\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    sb = ProcessSandbox(workers=1, timeout_s=2)\n"
        "probe = ('import os, socket\\ndef f(x):\\n    try:\\n'\n"
        "         '        socket.create_connection((\"127.0.0.1\", 9), timeout=1)\\n'\n"
        "         '    except OSError as e:\\n        return [e.errno, os.path.exists(\"/work\")]')\n"
        "with sb:\n"
        "    v = sb.check([Program('def f(x):\\n    return 2 * x', 'assert f(2) == 4'),\n"
        "                  Program('def f(x):\\n    return 0', 'assert f(2) == 4'),\n"
        "                  Program(probe, 'assert f(0) == [101, False]')])\n"
        "print(json.dumps([[str(w.message) for w in caught], [x.passed for x in v]]))\n"
    )
    for python in (sys.executable, SYSTEM_PYTHON):
        try:
            probe = subprocess.run([python, "-c", "import sys; print(sys.version_info >= (3, 10))"],
                                   user=65534, capture_output=True, text=True, cwd="/")
        except OSError:
            continue
        if probe.stdout.strip() == "True":
            break
    else:
        pytest.skip("no Python >= 3.10 runnable by an unprivileged user")
    out = subprocess.run([python, "-c", script], user=65534, capture_output=True, text=True, cwd="/",
                         env={"PYTHONPATH": root, "PATH": "/usr/bin:/bin"}, timeout=60)
    assert out.returncode == 0, out.stderr
    import json

    warned, passed = json.loads(out.stdout.strip().splitlines()[-1])
    assert any("not running as root" in w for w in warned), warned
    userns = not any("user namespaces refused" in w for w in warned)
    assert passed == [True, False, userns]  # with a user namespace: no network, no host files


def test_concurrent_sandboxes_do_not_kill_each_others_executions():
    import threading

    sleeper = Program("import time, os\ndef f(x):\n    time.sleep(10)\n    return os.getuid()", "assert f(1) == 0")
    slow = Program("import time, os\ndef f(x):\n    time.sleep(1.5)\n    return 2 * x", "assert f(2) == 4")
    uid = Program("import os\ndef f(x):\n    return os.getuid()", "assert f(0) == -1")
    with ProcessSandbox(workers=1, timeout_s=0.8) as a, ProcessSandbox(workers=1, timeout_s=5.0) as b:
        uids = {check_one(sb, uid.code, uid.tests).detail for sb in (a, b)}
        assert len(uids) == 2  # distinct uids even though both use slot 0
        result = {}
        thread = threading.Thread(target=lambda: result.setdefault("b", b.check([slow])[0]))
        thread.start()
        assert a.check([sleeper])[0].status == "timeout"  # a kills everything of *its* uid
        thread.join()
        assert result["b"].passed, result["b"]


def test_forked_copy_neither_uses_nor_closes_the_parents_workers(sandbox):
    pid = os.fork()
    if pid == 0:  # e.g. a data-loader worker forked from a training process holding a sandbox
        code = 0
        try:
            sandbox.check([Program(DOUBLE, "assert f(1) == 2")])
            code = 1
        except RuntimeError:
            sandbox.close()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert check_one(sandbox, DOUBLE).passed


def test_many_memory_hogs_together_stay_within_the_workers_cgroup():
    bomb = ("import os, time\ndef f(x):\n    for _ in range(24):\n        if os.fork() == 0:\n"
            "            keep = []\n            try:\n                while True:\n"
            "                    keep.append(bytearray(10 ** 7))\n            except MemoryError:\n"
            "                time.sleep(30)\n    time.sleep(30)\n")
    with ProcessSandbox(workers=1, timeout_s=2.0, memory_mb=128) as sb:
        if any("memory cgroup" in d for d in sb.degraded) or os.geteuid() != 0:
            pytest.skip("no memory cgroup here")
        with open(f"/proc/{sb.worker_pids[0]}/cgroup") as fh:
            line = next(entry for entry in fh.read().splitlines() if ":memory:" in entry or entry.startswith("0::"))
        path = line.split(":", 2)[2]
        group = f"/sys/fs/cgroup/memory{path}" if ":memory:" in line else f"/sys/fs/cgroup{path}"
        verdict = sb.check([Program(bomb, "assert f(1) == 2")])[0]
        assert not verdict.passed
        peak_file = "memory.max_usage_in_bytes" if ":memory:" in line else "memory.peak"
        limit_file = "memory.limit_in_bytes" if ":memory:" in line else "memory.max"
        with open(f"{group}/{peak_file}") as peak, open(f"{group}/{limit_file}") as limit:
            assert int(peak.read()) <= int(limit.read()) <= (2 * 128 + 64 + 64) << 20  # not 24 x 128 MB
        assert sb.check([Program(DOUBLE, "assert f(2) == 4")])[0].passed


SHM_HOG = """import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
def f():
    made = 0
    for key in range(4):
        sid = libc.shmget(0x5000 + key, 120 << 20, 0o1600)
        addr = libc.shmat(sid, None, 0) if sid >= 0 else None
        if addr in (None, ctypes.c_void_p(-1).value):
            continue
        ctypes.memset(addr, 1, 120 << 20)
        libc.shmdt(ctypes.c_void_p(addr))
        made += 1
    return made
"""


def test_shared_memory_left_by_one_run_never_starves_the_next():
    """System V segments outlive their process (and count against the worker's memory): the
    worker removes them after every execution, so an honest 200 MB program still passes."""
    honest = Program("def g():\n    return len(bytearray(200 << 20))", "assert g() == 200 << 20")
    with ProcessSandbox(workers=1, timeout_s=5.0, memory_mb=256) as sb:
        assert sb.check([honest])[0].passed
        hog = sb.check([Program(SHM_HOG, "assert f() == 4")])[0]
        assert hog.status in ("passed", "failed", "memory", "crashed"), hog
        for _ in range(2):
            verdict = sb.check([honest])[0]
            assert verdict.passed, (hog, verdict)

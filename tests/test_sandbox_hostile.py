"""Hostile programs never pass, runaway programs end in time, and nothing escapes the sandbox.

Parametrised over backends: ``process`` always, ``docker`` when ``laimark_pl.sandbox.docker``
exists (skipped by conftest when no engine is reachable).
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import socket
import sys
import time
from pathlib import Path

import pytest
from sandbox_programs import ipc_programs

from laimark_pl.sandbox import Program, create

TIMEOUT_S = 2.0
MARGIN_S = 3.0
REPO_ROOT = Path(__file__).resolve().parents[1]
SECRET_ENV = "LAIMARK_SANDBOX_TEST_SECRET"
os.environ.setdefault(SECRET_ENV, "hunter2")  # set before any sandbox starts

BACKENDS = ["process"]
if importlib.util.find_spec("laimark_pl.sandbox.docker") is not None:
    BACKENDS.append(pytest.param("docker", marks=pytest.mark.docker))


@pytest.fixture(scope="module", params=BACKENDS)
def sandbox(request):
    with create(request.param, workers=2, timeout_s=TIMEOUT_S, memory_mb=256) as sb:
        yield sb


def run(sandbox, code: str, tests: str = "assert f(3) == 6", entry_point: str | None = None):
    start = time.monotonic()
    verdict = sandbox.check([Program(code, tests, entry_point)])[0]
    return verdict, time.monotonic() - start


def assert_fails(sandbox, code: str, tests: str = "assert f(3) == 6", entry_point: str | None = None):
    verdict, elapsed = run(sandbox, code, tests, entry_point)
    assert not verdict.passed, verdict
    assert verdict.status != "passed"
    assert elapsed < TIMEOUT_S + MARGIN_S, (elapsed, verdict)
    return verdict


CHECK_TESTS = "def check(candidate):\n    for x in range(1, 4):\n        assert candidate(x) == 2 * x\n"

# ------------------------------------------------------------------ forged passes


@pytest.mark.parametrize("tests,entry_point", [("assert f(3) == 6", None), (CHECK_TESTS, "f")],
                         ids=["asserts", "check"])
@pytest.mark.parametrize("code", [
    "import sys\nsys.exit(0)\ndef f(x):\n    return 0",
    "def f(x):\n    import sys\n    sys.exit(0)",
    "def f(x):\n    raise SystemExit(0)",
    "import os\nos._exit(0)",
    "def f(x):\n    import os\n    os._exit(0)",
    "import atexit, os\natexit.register(lambda: os._exit(0))\ndef f(x):\n    return 0",
    "import sys, os\nsys.excepthook = lambda *a: os._exit(0)\ndef f(x):\n    raise ValueError('x')",
    "import os, signal\ndef f(x):\n    os.kill(os.getpid(), signal.SIGKILL)",
], ids=["exit-at-load", "exit-in-call", "systemexit", "os-exit-at-load", "os-exit-in-call", "atexit",
        "excepthook", "self-kill"])
def test_exiting_never_passes(sandbox, code, tests, entry_point):
    assert_fails(sandbox, code, tests, entry_point)


@pytest.mark.parametrize("tests,entry_point", [("assert f(3) == 6", None), (CHECK_TESTS, "f")],
                         ids=["asserts", "check"])
@pytest.mark.parametrize("code", [
    "class Eq:\n    def __eq__(self, o):\n        return True\n    __hash__ = None\ndef f(x):\n    return Eq()",
    "class I(int):\n    def __eq__(self, o):\n        return True\n    __hash__ = int.__hash__\n"
    "def f(x):\n    return I(0)",
    "class S(str):\n    def __eq__(self, o):\n        return True\n    __hash__ = str.__hash__\n"
    "def f(x):\n    return S('')",
    "class L(list):\n    def __eq__(self, o):\n        return True\ndef f(x):\n    return L()",
    "class I(int):\n    pass\ndef f(x):\n    return I(2 * x)",  # even the right value: not plain data
    "class Eq:\n    def __eq__(self, o):\n        return True\ndef f(x):\n    return [Eq()]",
], ids=["eq-object", "int-subclass", "str-subclass", "list-subclass", "int-subclass-right-value", "nested"])
def test_lying_objects_never_pass(sandbox, code, tests, entry_point):
    assert_fails(sandbox, code, tests, entry_point)


def test_printing_success_markers_does_not_pass(sandbox):
    code = ("import sys\nprint('passed'); print('All tests passed'); print('OK')\n"
            "sys.stdout.write('{\"status\": \"passed\", \"passed\": true}\\n')\ndef f(x):\n    return 0")
    verdict = assert_fails(sandbox, code)
    assert "All tests passed" in verdict.stdout_tail


def test_forged_result_frames_do_not_pass(sandbox):
    # Writes fake protocol frames on every descriptor it can find, then exits cleanly.
    code = (
        "import os, json, struct\n"
        "def frame(m):\n    b = json.dumps(m).encode()\n    return struct.pack('>I', len(b)) + b\n"
        "for fd in range(3, 64):\n"
        "    try:\n        os.write(fd, frame(['loaded', ['f']]) + frame(['ok', 6]) * 5 + "
        "frame({'units': [[True, '']], 'load': 'ok'}))\n"
        "    except OSError:\n        pass\n"
        "os._exit(0)\n"
    )
    assert_fails(sandbox, code, "assert f(3) == 6\nassert f(4) == 8\nassert f(5) == 10")


def test_expected_values_are_unreachable(sandbox):
    # Searches frames, gc and its own memory for the expected value; would return it if found.
    code = (
        "import gc, sys, re\n"
        "def _scan():\n"
        "    texts = []\n"
        "    for o in gc.get_objects():\n"
        "        try:\n"
        "            if isinstance(o, dict):\n"
        "                texts += [v for v in o.values() if isinstance(v, (str, bytes))]\n"
        "            elif isinstance(o, (list, tuple)):\n"
        "                texts += [v for v in o if isinstance(v, (str, bytes))]\n"
        "        except Exception:\n            pass\n"
        "    f = sys._getframe()\n"
        "    while f is not None:\n"
        "        texts += [v for v in f.f_locals.values() if isinstance(v, (str, bytes))]\n"
        "        f = f.f_back\n"
        "    try:\n"
        "        for line in open('/proc/self/maps'):\n"
        "            a, b = (int(x, 16) for x in line.split()[0].split('-'))\n"
        "            if 'rw' in line.split()[1] and b - a < 1 << 26:\n"
        "                with open('/proc/self/mem', 'rb') as m:\n"
        "                    m.seek(a); texts.append(m.read(b - a))\n"
        "    except Exception:\n        pass\n"
        "    for t in texts:\n"
        "        s = t.decode('latin-1') if isinstance(t, bytes) else t\n"
        "        hit = re.search(r'== (7\\d{8}1)', s)\n"
        "        if hit:\n            return int(hit.group(1))\n"
        "    return 0\n"
        "def f(x):\n    return _scan()\n"
    )
    verdict = assert_fails(sandbox, code, "assert f(3) == 712345671")
    assert verdict.status == "failed"


def test_patching_harness_through_gc_does_not_pass(sandbox):
    # Replaces every function it can find (harness included) by one that claims success.
    code = (
        "import gc, types, sys\n"
        "def ok(*a, **k):\n    return True\n"
        "for o in gc.get_objects():\n"
        "    if isinstance(o, types.FunctionType) and o.__module__ and 'laimark' in o.__module__:\n"
        "        try:\n            o.__code__ = ok.__code__\n        except Exception:\n            pass\n"
        "for name, mod in list(sys.modules.items()):\n"
        "    if 'laimark' in name:\n"
        "        for attr in dir(mod):\n"
        "            if callable(getattr(mod, attr, None)):\n"
        "                try:\n                    setattr(mod, attr, ok)\n"
        "                except Exception:\n                    pass\n"
        "def f(x):\n    return 0\n"
    )
    assert_fails(sandbox, code)
    assert_fails(sandbox, code, CHECK_TESTS, "f")


def test_tester_cannot_be_killed_into_passing(sandbox):
    code = "import os, signal\ndef f(x):\n    os.kill(-1, signal.SIGKILL)\n    return 0"
    assert_fails(sandbox, code, CHECK_TESTS, "f")


SHADOW_TESTER = ["def check(candidate):\n    for x in range(1, 4):\n        assert candidate(x) == 2 * x\n",
                 "def check(candidate):\n    for x in [1.0, 2.0]:\n        assert abs(candidate(x) - 2 * x) < 1e-6\n",
                 "assert all(f(i) == 2 * i for i in [1, 2])",
                 "for i in [1, 2]:\n    assert len([f(i)]) == 1 and f(i) == 2 * i\n"]


@pytest.mark.parametrize("shadow", [
    "def range(*a):\n    return []",
    "def abs(x):\n    return 0",
    "def all(x):\n    return True",
    "def len(x):\n    return 1\nbuiltins_eq = True\ndef isinstance(*a):\n    return True",
    "globals()['range'] = lambda *a: []\nglobals()['all'] = lambda x: True\nabs = lambda x: 0",
], ids=["range", "abs", "all", "several", "dynamic"])
@pytest.mark.parametrize("tests", SHADOW_TESTER, ids=["check-range", "check-abs", "all", "for-block"])
def test_programs_never_shadow_the_tests_builtins(sandbox, shadow, tests):
    """Tests run in the tester see only the entry point and the program names they need: a
    program redefining range/abs/all/... cannot make a wrong function pass."""
    assert_fails(sandbox, "def f(x):\n    return 0\n" + shadow, tests, "f")
    verdict, _ = run(sandbox, "def f(x):\n    return 2 * x\n" + shadow, tests, "f")
    assert verdict.passed, verdict  # the right function still passes: its shadows are ignored


def test_program_cannot_replace_the_tests_check(sandbox):
    code = "def f(x):\n    return 0\ndef check(candidate):\n    return None"
    tests = "def check(candidate):\n    for x in range(3):\n        assert candidate(x) == x + 1\n"
    assert_fails(sandbox, code, tests, "f")
    assert_fails(sandbox, code, "for x in range(3):\n    check(f)\n", "f")  # tests that use an undefined check


@pytest.mark.parametrize("code,tests,entry_point", [
    ("def sorted(x):\n    return 0", "assert sorted([3, 1]) == [1, 3]", "sorted"),
    ("def max(a, b):\n    return 0", "assert max(2, 5) == 5", None),
    ("import os\nos._exit(0)", "assert max(2, 5) == 5", None),
    ("x = 1", "assert 1 + 1 == 2\nassert sorted([2, 1]) == [1, 2]", None),
    ("def f(x):\n    return 'G'\ndef abs(x):\n    return f(x)", "assert f(2) == abs(-2)", "f"),
    ("def f(x):\n    return 'G'\ndef sorted(x):\n    return 'G'", "assert f(2) == sorted([2])[0]", None),
], ids=["entry-point-named-sorted", "max-no-entry-point", "exit-and-builtins-only", "no-calls",
        "expected-via-abs", "expected-via-sorted"])
def test_parent_judged_builtins_are_real_and_the_program_must_be_called(sandbox, code, tests, entry_point):
    verdict = assert_fails(sandbox, code, tests, entry_point)
    if "f(2)" not in tests and "sorted([3, 1])" not in tests:
        assert verdict.status == "error" and "never call the program" in verdict.detail, verdict


@pytest.mark.parametrize("tests", ["assert sorted([3, 1]) == [1, 3]\nassert helper(1) == 1",
                                   "for xs in [[3, 1]]:\n    assert sorted(xs) == [1, 3]\nassert helper(1) == 1"],
                         ids=["asserts", "tester"])
def test_builtin_never_stands_in_for_a_missing_entry_point(sandbox, tests):
    verdict = assert_fails(sandbox, "def helper(x):\n    return x", tests, "sorted")
    assert "sorted" in verdict.detail, verdict


def test_honest_entry_point_named_like_a_builtin_passes(sandbox):
    code = "def sorted(xs):\n    out = list(xs)\n    out.sort()\n    return out"
    verdict, _ = run(sandbox, code, "assert sorted([3, 1]) == [1, 3]", "sorted")
    assert verdict.passed and verdict.extra["mode"] == "asserts", verdict


PLANT_IPC, FIND_IPC = ipc_programs(0x4c51)


def test_ipc_objects_do_not_persist_between_runs(sandbox):
    """System V shared memory, semaphores and message queues and POSIX message queues outlive
    the process that made them: none may reach a later execution."""
    planted = sandbox.check([Program(PLANT_IPC, "assert f(0) == [True, True, True, True]")] * 2)
    assert all(v.passed for v in planted), planted  # the plants really were made...
    found = sandbox.check([Program(FIND_IPC, "assert f(0) == [False, False, False, False]")] * 2)
    assert all(v.passed for v in found), found  # ...and no later run finds any of them


PLANT_MODULES = """import importlib, os, sys, tempfile
def f(x):
    for where in (os.getcwd(), tempfile.gettempdir(), '/tmp'):
        for name in ('json', 'threading', 'colorsys'):
            try:
                with open(os.path.join(where, name + '.py'), 'w') as fh:
                    fh.write('PLANTED = True\\n')
            except OSError:
                pass
    return real_modules()
def real_modules():
    importlib.invalidate_caches()
    for name in ('json', 'threading', 'colorsys'):
        sys.modules.pop(name, None)
    import json, threading, colorsys
    return [not hasattr(m, 'PLANTED') for m in (json, threading, colorsys)] + ['' not in sys.path]
"""


def test_planted_modules_are_never_imported(sandbox):
    """Nothing in the working directory or /tmp is importable as a module (``-I``: no '' on
    sys.path), so one program cannot plant ``json.py`` for itself or a concurrent one."""
    importer = PLANT_MODULES.replace("def f(x):", "def plant(x):").replace("def real_modules():", "def f(x):")
    verdicts = sandbox.check([Program(PLANT_MODULES, "assert f(1) == [True, True, True, True]"),
                              Program(importer, "assert f(1) == [True, True, True, True]")])
    assert all(v.passed for v in verdicts), verdicts


# ------------------------------------------------------------------ isolation


def _plain_result(sandbox, code: str, expected_literal: str) -> bool:
    verdict, _ = run(sandbox, code, f"assert probe() == {expected_literal}")
    assert verdict.status in ("passed", "failed"), verdict
    return verdict.passed


def test_environment_is_allow_listed(sandbox):
    code = "import os\ndef probe():\n    return sorted(os.environ)"
    verdict, _ = run(sandbox, code, f"assert {SECRET_ENV!r} not in probe()\nassert len(probe()) <= 6")
    assert verdict.passed, verdict
    leak = "import os\ndef probe():\n    return repr(dict(os.environ))"
    verdict, _ = run(sandbox, leak, "assert 'hunter2' in probe()")
    assert not verdict.passed


@pytest.mark.parametrize("path", ["/root", "/etc/shadow", str(REPO_ROOT / "pyproject.toml"), str(REPO_ROOT)])
def test_host_files_unreadable(sandbox, path):
    code = (f"import os\ndef probe():\n    try:\n        if os.path.isdir({path!r}):\n"
            f"            return sorted(os.listdir({path!r}))\n"
            f"        return open({path!r}, 'rb').read()[:10].hex()\n"
            "    except OSError:\n        return 'unreadable'\n")
    # Only the path down to the Python installation may show (a pyenv Python lives in /root).
    assert _plain_result(sandbox, code, f"'unreadable' or set(probe()) <= {_python_path_parts(path)!r}")


def _python_path_parts(directory: str) -> set[str]:
    parts = set()
    for prefix in {sys.prefix, sys.base_prefix, sys.exec_prefix}:
        rel = os.path.relpath(prefix, directory)
        if not rel.startswith(".."):
            parts.add(rel.split(os.sep)[0])
    return parts or {"<none>"}


def test_host_temp_files_unreadable(sandbox, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cret")
    secret.chmod(0o644)
    tmp_path.chmod(0o755)
    code = (f"def probe():\n    try:\n        return open({str(secret)!r}).read()\n"
            "    except OSError:\n        return 'unreadable'\n")
    assert _plain_result(sandbox, code, "'unreadable'")


def test_no_network(sandbox):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    try:
        code = (f"import socket\ndef probe():\n    try:\n"
                f"        socket.create_connection(('127.0.0.1', {port}), timeout=1).close()\n"
                "        return 'connected'\n    except OSError:\n        return 'blocked'\n")
        assert _plain_result(sandbox, code, "'blocked'")
        with pytest.raises(BlockingIOError):
            listener.accept()
    finally:
        listener.close()


@pytest.mark.parametrize("where", ["cwd", "tempfile", "/tmp"])
def test_files_do_not_persist_between_runs(sandbox, where, request):
    path = {"cwd": "'persist.txt'", "tempfile": "os.path.join(tempfile.gettempdir(), 'persist.txt')",
            "/tmp": "'/tmp/persist.txt'"}[where]
    writer = f"import os, tempfile\ndef probe():\n    open({path}, 'w').write('x')\n    return True\n"
    reader = f"import os, tempfile\ndef probe():\n    return os.path.exists({path})\n"
    assert all(v.passed for v in sandbox.check([Program(writer, "assert probe() is True")] * 4))
    verdicts = sandbox.check([Program(reader, "assert probe() is False")] * 4)
    assert all(v.passed for v in verdicts), verdicts


def _marker_processes(marker: str) -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/cmdline", "rb") as fh:
                    if marker.encode() in fh.read():
                        found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_no_processes_left_behind(sandbox):
    # A fresh marker per run: another suite running the same test concurrently on this machine
    # must not be mistaken for (or hide) this run's leftovers.
    marker = f"{900 + secrets.randbelow(100)}.{secrets.randbelow(10**9):09d}"
    sleeper = f"[sys.executable, '-c', 'import time; time.sleep({marker})']"
    code = ("import os, subprocess, sys\ndef f(x):\n"
            "    if os.fork() == 0:\n        os.setsid()\n"
            f"        if os.fork() == 0:\n            os.execv(sys.executable, {sleeper})\n"
            "        os._exit(0)\n"
            f"    subprocess.Popen({sleeper}, start_new_session=True)\n"
            "    return 2 * x\n")
    verdict, _ = run(sandbox, code)
    assert verdict.passed, verdict
    deadline = time.monotonic() + 3
    while _marker_processes(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _marker_processes(marker) == []


# ------------------------------------------------------------------ runaway programs


@pytest.mark.parametrize("code,statuses", [
    ("def f(x):\n    while True:\n        pass", {"timeout"}),
    ("import time\ndef f(x):\n    time.sleep(60)", {"timeout"}),
    ("import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ndef f(x):\n    time.sleep(60)",
     {"timeout"}),
    ("def f(x):\n    while True:\n        print('y' * 10000)", {"output_limit"}),
    ("import os\ndef f(x):\n    while True:\n        try:\n            os.fork()\n        except OSError:\n"
     "            pass", {"timeout", "crashed", "failed"}),
    ("def f(x):\n    return bytearray(10 ** 10)", {"memory"}),
    ("def f(x):\n    keep = []\n    while True:\n        keep.append(bytearray(10 ** 7))", {"memory"}),
    ("import sys\nsys.setrecursionlimit(10 ** 7)\ndef f(x):\n    return f(x + 1) + 1",
     {"crashed", "failed", "memory", "timeout"}),
    ("import sys\nsys.setrecursionlimit(10 ** 7)\ndef f(x):\n    return repr(type('N', (), {'__repr__': f})())",
     {"crashed", "failed", "memory", "timeout"}),
    ("def f(x):\n    return int(input())", {"failed"}),
    ("x = input()\ndef f(x):\n    return 2 * x", {"failed"}),
], ids=["busy-loop", "sleep", "sigterm-ignored", "output-flood", "fork-bomb", "memory-bomb",
        "memory-creep", "deep-recursion", "c-recursion-segfault", "input-in-call", "input-at-load"])
def test_runaway_programs_end_in_time(sandbox, code, statuses):
    verdict = assert_fails(sandbox, code)
    assert verdict.status in statuses, verdict


def test_pool_keeps_serving_after_runaways(sandbox):
    bomb = "import os\ndef f(x):\n    while True:\n        try:\n            os.fork()\n        except OSError:\n" \
           "            pass"
    honest = "def f(x):\n    return 2 * x"
    verdicts = sandbox.check([Program(bomb, "assert f(3) == 6"), Program(honest, "assert f(3) == 6")] * 2)
    assert [v.passed for v in verdicts] == [False, True, False, True]
    assert sandbox.check([Program(honest, "assert f(3) == 6")] * 4)[0].passed

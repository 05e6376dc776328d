"""Code that runs inside the sandbox's execution children.

`run_candidate` runs in the *untrusted* child: it executes the program and then serves calls
(``[name, args, kwargs]``: listed in the job frame read from fd 3, or sent one frame at a time
after it) by writing plain-data results to fd 4. It
never receives expected values, so nothing it can reach (frames, ``gc``, its memory) tells it
the right answer; whatever it writes is just a claimed return value that the trusted side
decodes strictly and compares itself.

`run_tester` runs in a second child (another uid, not ptrace-able) for tests that are not
assert-shaped: it executes the tests with the program's functions they use (``names.py``:
the entry point and the non-builtin names they read, never a builtin) replaced by proxies that
call into the candidate child over a pipe, and reports per-unit outcomes to the parent. Only
the tests' own code and plain data from the candidate ever run or exist in it.
"""

from __future__ import annotations

import ast
import builtins
import os
import sys
import types
from typing import Any, NoReturn

from laimark_pl.sandbox.names import visible_names
from laimark_pl.sandbox.wire import (
    FrameError,
    NotPlain,
    Unplain,
    decode_value,
    encode_result,
    encode_value,
    pack,
    pack_job,
    read_frame,
    read_job,
    write_all,
    write_frame,
)

CANDIDATE_NAME = "__solution__"
SOLUTION_FILENAME = "<solution>"  # the program's code objects' file name (tracebacks, warnings)


def prepare_stdio() -> None:
    """Called once in the worker: the standard streams every execution child inherits (fds 0-2
    are re-pointed per child; the stream objects, with empty buffers, are shared by fork)."""
    sys.stdin = open(0, encoding="utf-8", errors="replace", closefd=False)
    sys.stdout = open(1, "w", encoding="utf-8", errors="backslashreplace", closefd=False)
    sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False, buffering=1)
    sys.argv = [CANDIDATE_NAME]


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass


def _exit(code: int = 0) -> NoReturn:
    _flush()
    os._exit(code)


def _describe(exc: BaseException) -> str:
    try:
        return f"{type(exc).__name__}: {exc}"[:500]
    except BaseException:
        return type(exc).__name__


def _kind(exc: BaseException) -> str:
    return "memory" if isinstance(exc, MemoryError) else "exception"


def run_candidate(in_fd: int = 3, out_fd: int = 4) -> NoReturn:
    """Untrusted child: load the program, then answer call frames until end of input."""
    _serve_candidate(in_fd, out_fd)
    _exit()


def _serve_candidate(in_fd: int, out_fd: int) -> None:
    try:
        job = read_job(in_fd)
        code = job["code"]  # compiled by the parent; the source only when it did not compile there
        if not isinstance(code, types.CodeType):
            code = compile(code, SOLUTION_FILENAME, "exec", dont_inherit=True)
    except (SyntaxError, ValueError, TypeError, EOFError, RecursionError, MemoryError, FrameError) as exc:
        write_frame(out_fd, ["compile_error", _describe(exc)])
        return
    module = types.ModuleType(CANDIDATE_NAME)  # importable by name: pickling (multiprocessing) works
    sys.modules[CANDIDATE_NAME] = module
    namespace: dict[str, Any] = module.__dict__
    namespace["__builtins__"] = builtins
    try:
        exec(code, namespace)
    except BaseException as exc:  # SystemExit included: exiting while loading is a failure
        write_frame(out_fd, ["load_error", _describe(exc), _kind(exc)])
        return
    names, values = [], {}
    for name, value in list(namespace.items()):
        if name.startswith("__") or isinstance(value, types.ModuleType):
            continue
        if _is_callable(value):
            names.append(name)
        elif job.get("values") and len(values) < 100:
            encoded = encode_result(value)  # plain-data globals (constants the tests may use)
            if not (isinstance(encoded, dict) and "x" in encoded) and len(repr(encoded)) < 100_000:
                values[name] = encoded
    write_frame(out_fd, ["loaded", names, values])
    for call in job.get("calls", ()):  # calls known in advance come with the program
        _answer(namespace, call, out_fd)
    while (call := read_frame(in_fd)) is not None:  # the tester's calls, one at a time
        _answer(namespace, call, out_fd)


def _answer(namespace: dict[str, Any], call: list, out_fd: int) -> None:
    """Make one ``[name, args, kwargs]`` call of a program function and write its plain-data
    result (or exception). Only the program's own names: never a builtin it does not define."""
    name, args, kwargs = call
    try:
        if name not in namespace:
            raise NameError(f"name {name!r} is not defined")
        value = namespace[name](*decode_value(args), **decode_value(kwargs))
        reply = ["ok", encode_result(value)]
    except BaseException as exc:
        reply = ["exc", _describe(exc), _kind(exc)]
    _flush()  # output first: a verdict may be returned as soon as the last answer is read
    write_frame(out_fd, reply)


_WARM_UP_PROGRAM = """
def scale(xs, k=2, *, shift=0.5):
    return [x * k + shift for x in xs], {"n": len(xs)}, (True, None, "s", b"b", {1, 2})
def fails(x):
    raise ValueError(x)
"""
_WARM_UP_CALLS = [["scale", [[1, 2.5, -3]], {"d": [["k", 3]]}], ["fails", ["x"], {"d": []}],
                  ["scale", [[]], {"d": []}]]


def warm_up(rounds: int = 12) -> None:
    """Run the candidate's code path a few times in the worker itself, with a fixed trusted
    program, before any execution child is forked: CPython specialises bytecode on first runs,
    and a child that inherits specialised code writes to (and copies) fewer shared pages."""
    code = compile(_WARM_UP_PROGRAM, SOLUTION_FILENAME, "exec", dont_inherit=True)
    job = pack_job({"code": code, "calls": _WARM_UP_CALLS}) + b"".join(pack(call) for call in _WARM_UP_CALLS)
    stdout, stderr = sys.stdout, sys.stderr
    try:
        for _ in range(rounds):
            job_r, job_w = os.pipe()
            res_r, res_w = os.pipe()
            try:
                os.write(job_w, job)
                os.close(job_w)
                job_w = -1
                _serve_candidate(job_r, res_w)
                os.close(res_w)
                res_w = -1
                while os.read(res_r, 1 << 16):
                    pass
            finally:
                for fd in (job_r, job_w, res_r, res_w):
                    if fd >= 0:
                        os.close(fd)
    finally:
        sys.modules.pop(CANDIDATE_NAME, None)
        sys.stdout, sys.stderr = stdout, stderr


def _is_callable(value: Any) -> bool:
    try:
        return callable(value)
    except BaseException:
        return False


# ------------------------------------------------------------------------------ tester


class CandidateDied(BaseException):
    """The candidate process stopped answering (not an ``Exception``: tests cannot swallow it)."""


class _Remote:
    """Proxy for one function of the program, living in the tester process."""

    def __init__(self, channel: _Channel, name: str):
        self._channel, self._name = channel, name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._channel.call(self._name, args, kwargs)

    def __repr__(self) -> str:
        return f"<candidate function {self._name}>"


class _Channel:
    def __init__(self, to_fd: int, from_fd: int):
        self.to_fd, self.from_fd = to_fd, from_fd
        self.died = False
        self.memory = False
        self.calls = 0

    def call(self, name: str, args: tuple, kwargs: dict) -> Any:
        if self.died:
            raise CandidateDied("the candidate process is gone")
        try:
            payload = [name, encode_value(list(args)), encode_value(kwargs)]
        except NotPlain as exc:
            raise TypeError(f"argument for {name}() is not plain data ({exc.type_name})") from None
        try:
            write_frame(self.to_fd, payload)
            reply = read_frame(self.from_fd)
        except (OSError, FrameError, ValueError):
            reply = None
        self.calls += 1
        if not isinstance(reply, list) or not reply:
            self.died = True
            raise CandidateDied("the candidate process stopped answering")
        if reply[0] == "ok" and len(reply) == 2:
            try:
                value = decode_value(reply[1])
            except FrameError as exc:
                raise TypeError(f"{name}() returned malformed data: {exc}") from None
            if isinstance(value, Unplain):
                raise TypeError(f"{name}() returned a non-plain {value.type_name}")
            return value
        if reply[0] == "exc" and len(reply) == 3 and isinstance(reply[1], str):
            self.memory |= reply[2] == "memory"
            raise _exception_from(reply[1])
        self.died = True
        raise CandidateDied("protocol violation by the candidate process")


def _exception_from(description: str) -> Exception:
    type_name, _, message = description.partition(": ")
    cls = getattr(builtins, type_name, None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            return cls(message)
        except Exception:
            pass
    return RuntimeError(description)


def run_tester(in_fd: int = 3, out_fd: int = 4, to_candidate: int = 5, from_candidate: int = 6) -> NoReturn:
    """Trusted-side tester child: run the tests against proxies and report per-unit outcomes."""
    job = read_job(in_fd)
    os.close(in_fd)
    channel = _Channel(to_candidate, from_candidate)
    report: dict[str, Any] = {"units": [], "load": "ok", "detail": ""}
    try:
        write_all(to_candidate, pack_job({"code": job["code"], "values": True}))
        hello = read_frame(from_candidate)
    except (OSError, FrameError, ValueError):
        hello = None
    if not isinstance(hello, list) or not hello or hello[0] != "loaded":
        if isinstance(hello, list) and hello and hello[0] in ("compile_error", "load_error"):
            report["load"] = hello[0]
            report["detail"] = str(hello[1])[:500]
            report["memory"] = len(hello) > 2 and hello[2] == "memory"
        else:
            report["load"] = "died"
        write_frame(out_fd, report)
        _exit()
    units: list[list] = report["units"]
    try:
        tree = ast.parse(job["tests"])
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        units.append([False, f"tests do not parse: {_describe(exc)}"])
        tree = None
    if tree is not None:
        entry_point = job.get("entry_point")
        namespace = _tests_namespace(hello, visible_names(tree, entry_point), entry_point, channel)
        try:
            _run_tests(tree, job.get("entry_point"), namespace, units)
        except CandidateDied:
            pass
    report["died"] = channel.died
    report["memory"] = channel.memory
    report["calls"] = channel.calls
    _flush()
    try:
        os.close(to_candidate)  # end of input: the candidate process exits
    except OSError:
        pass
    write_frame(out_fd, report)
    _exit()


def _tests_namespace(hello: list, visible: frozenset[str], entry_point: str | None,
                     channel: _Channel) -> dict[str, Any]:
    """The tests' globals: real builtins, plus proxies (functions) and plain values for the
    program names in ``visible`` only, so that no program definition shadows a builtin. The
    entry point is always the program's: a builtin never stands in for a missing one."""
    namespace: dict[str, Any] = {"__name__": "__tests__", "__builtins__": builtins}
    for name in hello[1] if len(hello) > 1 and isinstance(hello[1], list) else ():
        if isinstance(name, str) and name in visible:
            namespace[name] = _Remote(channel, name)
    values = hello[2] if len(hello) > 2 and isinstance(hello[2], dict) else {}
    for name, encoded in values.items():
        if name in visible and name not in namespace:
            try:
                namespace[name] = decode_value(encoded)
            except FrameError:
                continue
    if entry_point and entry_point not in namespace:
        namespace[entry_point] = _undefined(entry_point)
    return namespace


def _undefined(name: str) -> Any:
    def undefined(*_args: Any, **_kwargs: Any) -> NoReturn:
        raise NameError(f"the program defines no function {name!r}")

    return undefined


def _is_check_call(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "check"


def _is_unit(stmt: ast.stmt) -> bool:
    """A top-level statement that tests something: it contains an ``assert`` or a ``check(...)``
    call (a ``for``/``while``/``if``/``with`` block of asserts is one unit); definitions are not."""
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return False
    return any(isinstance(node, ast.Assert) or _is_check_call(node) for node in ast.walk(stmt))


def _run_tests(tree: ast.Module, entry_point: str | None, namespace: dict, units: list[list]) -> None:
    check_runs: list[bool] = []  # whether the tests called their own check() (then we don't)
    for stmt in tree.body:
        is_unit = _is_unit(stmt)
        code = compile(ast.Module(body=[stmt], type_ignores=[]), "<tests>", "exec")
        try:
            exec(code, namespace)
            if is_unit:
                units.append([True, ""])
        except Exception as exc:
            units.append([False, f"line {stmt.lineno}: {ast.unparse(stmt)[:200]}: {_describe(exc)}"])
            if not is_unit:
                return
        if isinstance(stmt, ast.FunctionDef) and stmt.name == "check" and callable(namespace.get("check")):
            namespace["check"] = _noting_runs(namespace["check"], check_runs)
    if not check_runs and callable(namespace.get("check")) and entry_point:
        candidate = namespace.get(entry_point)
        if not isinstance(candidate, _Remote):
            units.append([False, f"the program defines no function {entry_point!r}"])
            return
        try:
            namespace["check"](candidate)
            units.append([True, ""])
        except Exception as exc:
            units.append([False, f"check({entry_point}): {_describe(exc)}"])


def _noting_runs(check: Any, runs: list[bool]) -> Any:
    def check_wrapper(*args: Any, **kwargs: Any) -> Any:
        runs.append(True)
        return check(*args, **kwargs)

    return check_wrapper

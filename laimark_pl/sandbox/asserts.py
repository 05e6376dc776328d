"""Assert-shaped tests judged by the trusted parent.

Most tests are ``assert f(<constant args>) == <constant>`` (possibly spanning lines, inside a
HumanEval ``def check(candidate)``, with ``abs(...) < tol``, ``not``, ``is True``, ...).
`plan_asserts` turns such tests into a list of `RemoteCall` (function name + plain-data
arguments) that the untrusted child executes, and a list of `AssertUnit` that the parent
evaluates itself with `evaluate_unit`, substituting the child's plain-data results. The
child never sees the expected values, and no object it creates is ever compared.

The evaluator understands a small, side-effect-free subset of Python (literals, arithmetic
with size guards, comparisons, boolean logic, subscripts and a whitelist of pure builtins and
``math`` functions). Tests using anything else get ``None`` from `plan_asserts` and are run by
the two-process tester instead (see ``harness.py``).

Names follow ``names.py`` (as in the tester): the entry point is always a call into the
candidate, even when it is named like a builtin; every other whitelisted builtin is the real
one, whatever the program defines. Asserts that never call the program test nothing: the
judge gives such a plan an ``"error"`` verdict.
"""

from __future__ import annotations

import ast
import builtins
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from laimark_pl.sandbox.wire import Unplain

MAX_SIZE = 10_000_000  # largest sequence the evaluator will build (str * n, range, ...)
MAX_POW_BITS = 1_000_000

_SAFE_FUNCS: dict[str, Callable] = {
    f.__name__: f for f in (abs, all, any, bool, dict, divmod, float, frozenset, int, isinstance, len, list,
                            max, min, repr, reversed, round, set, sorted, str, sum, tuple, type, zip,
                            enumerate, chr, ord, bytes, complex)
}


def _bounded_range(*args: int) -> range:
    r = range(*args)
    if len(r) > MAX_SIZE:
        raise ValueError("range too large")
    return r


_SAFE_FUNCS["range"] = _bounded_range
_SAFE_MATH: dict[str, Any] = {name: getattr(math, name) for name in (
    "isclose", "fabs", "sqrt", "floor", "ceil", "isnan", "isinf", "isfinite", "log", "log2", "log10",
    "exp", "trunc", "gcd", "pi", "e", "inf", "nan")}
_SAFE_MODULES = {"math": _SAFE_MATH}
_BINOPS: dict[type, Callable] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
    ast.BitAnd: operator.and_, ast.BitOr: operator.or_, ast.BitXor: operator.xor,
    ast.LShift: operator.lshift, ast.RShift: operator.rshift,
}
_UNARY: dict[type, Callable] = {ast.Not: operator.not_, ast.USub: operator.neg, ast.UAdd: operator.pos,
                                ast.Invert: operator.invert}
_COMPARE: dict[type, Callable] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge, ast.Is: operator.is_, ast.IsNot: operator.is_not,
    ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b,
}


class NotAssertShaped(Exception):
    """The tests use something the parent-side evaluator does not support."""


class CandidateFailure(Exception):
    """A call into the candidate raised, returned non-plain data, or never answered."""


@dataclass(frozen=True)
class RemoteCall:
    """One call the untrusted child performs: ``name(*args, **kwargs)`` with plain-data args."""

    name: str
    args: tuple
    kwargs: dict


@dataclass(frozen=True)
class AssertUnit:
    """One assert the parent evaluates; ``calls`` maps call nodes to indices in the plan."""

    test: ast.expr
    source: str
    env: dict
    calls: dict[int, int]  # id(ast.Call node) -> index into AssertPlan.calls


@dataclass(frozen=True)
class AssertPlan:
    calls: list[RemoteCall] = field(default_factory=list)
    units: list[AssertUnit] = field(default_factory=list)


@dataclass(frozen=True)
class RemoteFailure:
    """The child's report that a call raised (or that its result never arrived)."""

    detail: str
    kind: str = "exception"  # "exception" | "memory" | "missing"


@lru_cache(maxsize=512)
def plan_asserts(tests: str, entry_point: str | None) -> AssertPlan | None:
    """The parent-judged plan for ``tests``, or None when they are not assert-shaped.

    Raises `SyntaxError` when the tests do not parse.
    """
    tree = ast.parse(tests)
    try:
        return _Planner(entry_point).plan(tree)
    except (NotAssertShaped, RecursionError):
        return None


class _Planner:
    def __init__(self, entry_point: str | None):
        self.entry_point = entry_point
        self.plan_ = AssertPlan()

    def plan(self, tree: ast.Module) -> AssertPlan:
        env: dict[str, Any] = {}
        check: ast.FunctionDef | None = None
        invoked = False
        for stmt in tree.body:
            if isinstance(stmt, ast.FunctionDef) and stmt.name == "check" and check is None:
                args = stmt.args
                if (len(args.args) != 1 or args.vararg or args.kwarg or args.kwonlyargs or args.posonlyargs
                        or stmt.decorator_list):
                    raise NotAssertShaped("check() must take exactly one argument")
                check = stmt
            elif (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)
                  and isinstance(stmt.value.func, ast.Name) and stmt.value.func.id == "check"):
                call = stmt.value
                if check is None or invoked or len(call.args) != 1 or call.keywords \
                        or not isinstance(call.args[0], ast.Name) or self._is_builtin(call.args[0].id, env):
                    raise NotAssertShaped("unsupported check() invocation")
                self._statements(check.body, dict(env), {check.args.args[0].arg: call.args[0].id})
                invoked = True
            else:
                self._statements([stmt], env, {})
        if check is not None and not invoked:
            if not self.entry_point:
                raise NotAssertShaped("check() defined but no entry point to pass it")
            self._statements(check.body, dict(env), {check.args.args[0].arg: self.entry_point})
        return self.plan_

    def _statements(self, body: list[ast.stmt], env: dict, aliases: dict[str, str]) -> None:
        for stmt in body:
            if isinstance(stmt, ast.Assert):
                self._unit(stmt, env, aliases)
            elif isinstance(stmt, (ast.Pass,)) or (isinstance(stmt, ast.Expr)
                                                   and isinstance(stmt.value, ast.Constant)):
                continue
            elif isinstance(stmt, ast.Import):
                for alias in stmt.names:
                    if alias.name not in _SAFE_MODULES:
                        raise NotAssertShaped(f"import {alias.name}")
                    env[alias.asname or alias.name] = _Module(alias.name)
            elif isinstance(stmt, ast.ImportFrom) and stmt.module in _SAFE_MODULES and stmt.level == 0:
                for alias in stmt.names:
                    if alias.name not in _SAFE_MODULES[stmt.module]:
                        raise NotAssertShaped(f"from {stmt.module} import {alias.name}")
                    env[alias.asname or alias.name] = _SAFE_MODULES[stmt.module][alias.name]
            elif (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
                  and isinstance(stmt.targets[0], ast.Name)):
                env[stmt.targets[0].id] = self._constant(stmt.value, env)
            else:
                raise NotAssertShaped(type(stmt).__name__)

    def _unit(self, stmt: ast.Assert, env: dict, aliases: dict[str, str]) -> None:
        calls: dict[int, int] = {}
        self._validate(stmt.test, env, aliases, calls)
        self.plan_.units.append(AssertUnit(stmt.test, ast.unparse(stmt)[:300], dict(env), calls))

    def _constant(self, node: ast.expr, env: dict) -> Any:
        self._validate(node, env, {}, None)
        try:
            return _Evaluator(env, {}, {}).eval(node)
        except Exception as exc:
            raise NotAssertShaped(f"cannot evaluate {ast.unparse(node)[:80]}: {exc}") from None

    def _validate(self, node: ast.AST, env: dict, aliases: dict[str, str], calls: dict[int, int] | None) -> None:
        """Check every node is supported; register calls into the candidate (in evaluation order)."""
        if isinstance(node, ast.Call):
            remote = self._remote_name(node.func, env, aliases)
            if remote is not None:
                if calls is None:
                    raise NotAssertShaped("call into the candidate where a constant is needed")
                if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
                    raise NotAssertShaped("starred arguments")
                args = tuple(self._constant(a, env) for a in node.args)
                kwargs = {k.arg: self._constant(k.value, env) for k in node.keywords}
                calls[id(node)] = len(self.plan_.calls)
                self.plan_.calls.append(RemoteCall(remote, args, kwargs))
                return
            if not self._safe_callee(node.func, env):
                raise NotAssertShaped(f"call of {ast.unparse(node.func)[:60]}")
            for child in [*node.args, *(k.value for k in node.keywords)]:
                if isinstance(child, ast.Starred):
                    raise NotAssertShaped("starred arguments")
                self._validate(child, env, aliases, calls)
            return
        if isinstance(node, ast.Name):
            if node.id in aliases or not (node.id in env or node.id in _SAFE_FUNCS) \
                    or (node.id == self.entry_point and node.id not in env):
                raise NotAssertShaped(f"name {node.id!r}")
            return
        if isinstance(node, ast.Attribute):
            if not self._safe_callee(node, env):
                raise NotAssertShaped(f"attribute {ast.unparse(node)[:60]}")
            return
        if isinstance(node, ast.BinOp) and type(node.op) not in _BINOPS:
            raise NotAssertShaped("operator")
        if not isinstance(node, _ALLOWED_NODES):
            raise NotAssertShaped(type(node).__name__)
        for child in ast.iter_child_nodes(node):
            self._validate(child, env, aliases, calls)

    def _remote_name(self, func: ast.expr, env: dict, aliases: dict[str, str]) -> str | None:
        if not isinstance(func, ast.Name):
            return None
        if func.id in aliases:
            return aliases[func.id]
        if func.id in env:
            return None
        if func.id == self.entry_point:  # the function under test, even if named like a builtin
            return func.id
        if func.id in _SAFE_FUNCS:  # the real builtin, whatever the program defines (names.py)
            return None
        if hasattr(builtins, func.id):  # e.g. __import__, print, map: leave these to the tester
            raise NotAssertShaped(f"builtin {func.id}()")
        return func.id

    def _is_builtin(self, name: str, env: dict) -> bool:
        return name not in env and name != self.entry_point and hasattr(builtins, name)

    @staticmethod
    def _safe_callee(func: ast.expr, env: dict) -> bool:
        if isinstance(func, ast.Name):
            return func.id in _SAFE_FUNCS or callable(env.get(func.id)) and env[func.id] in _SAFE_MATH.values()
        return (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
                and isinstance(env.get(func.value.id), _Module)
                and func.attr in _SAFE_MODULES[env[func.value.id].name])


_ALLOWED_NODES = (ast.Constant, ast.List, ast.Tuple, ast.Set, ast.Dict, ast.UnaryOp, ast.BinOp, ast.BoolOp,
                  ast.Compare, ast.IfExp, ast.Subscript, ast.Slice, ast.Load, ast.expr_context,
                  ast.unaryop, ast.operator, ast.boolop, ast.cmpop)


@dataclass(frozen=True)
class _Module:
    name: str


class _Evaluator:
    """Evaluates a validated expression on plain values (results of candidate calls substituted)."""

    def __init__(self, env: dict, calls: dict[int, int], results: dict[int, Any] | list):
        self.env, self.calls, self.results = env, calls, results

    def eval(self, node: ast.AST) -> Any:
        method = getattr(self, "_" + type(node).__name__)
        return method(node)

    def _Constant(self, node: ast.Constant) -> Any:
        return node.value

    def _Name(self, node: ast.Name) -> Any:
        return self.env[node.id] if node.id in self.env else _SAFE_FUNCS[node.id]

    def _List(self, node: ast.List) -> list:
        return [self.eval(e) for e in node.elts]

    def _Tuple(self, node: ast.Tuple) -> tuple:
        return tuple(self.eval(e) for e in node.elts)

    def _Set(self, node: ast.Set) -> set:
        return {self.eval(e) for e in node.elts}

    def _Dict(self, node: ast.Dict) -> dict:
        if any(k is None for k in node.keys):
            raise TypeError("dict unpacking is not supported")
        return {self.eval(k): self.eval(v) for k, v in zip(node.keys, node.values, strict=True)}

    def _UnaryOp(self, node: ast.UnaryOp) -> Any:
        return _UNARY[type(node.op)](self.eval(node.operand))

    def _BinOp(self, node: ast.BinOp) -> Any:
        left, right = self.eval(node.left), self.eval(node.right)
        _guard(type(node.op), left, right)
        return _BINOPS[type(node.op)](left, right)

    def _BoolOp(self, node: ast.BoolOp) -> Any:
        value: Any = None
        for operand in node.values:
            value = self.eval(operand)
            if isinstance(node.op, ast.And) and not value or isinstance(node.op, ast.Or) and value:
                return value
        return value

    def _Compare(self, node: ast.Compare) -> bool:
        left = self.eval(node.left)
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            right = self.eval(comparator)
            if not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True

    def _IfExp(self, node: ast.IfExp) -> Any:
        return self.eval(node.body) if self.eval(node.test) else self.eval(node.orelse)

    def _Subscript(self, node: ast.Subscript) -> Any:
        return self.eval(node.value)[self.eval(node.slice)]

    def _Slice(self, node: ast.Slice) -> slice:
        part = [None if n is None else self.eval(n) for n in (node.lower, node.upper, node.step)]
        return slice(*part)

    def _Attribute(self, node: ast.Attribute) -> Any:
        module = self.env[node.value.id]  # validated: a safe module
        return _SAFE_MODULES[module.name][node.attr]

    def _Call(self, node: ast.Call) -> Any:
        index = self.calls.get(id(node))
        if index is not None:
            result = self.results[index]
            if isinstance(result, RemoteFailure):
                raise CandidateFailure(f"{ast.unparse(node)[:120]} -> {result.detail}")
            if isinstance(result, Unplain):
                raise CandidateFailure(f"{ast.unparse(node)[:120]} returned a non-plain {result.type_name}")
            return result
        func = self.eval(node.func)
        args = [self.eval(a) for a in node.args]
        kwargs = {k.arg: self.eval(k.value) for k in node.keywords}
        if func is bytes and args and type(args[0]) is int and args[0] > MAX_SIZE:
            raise ValueError("bytes too large")
        return func(*args, **kwargs)


def _guard(op: type, left: Any, right: Any) -> None:
    """Refuse arithmetic whose result would be huge (the tests are not trusted with the host)."""
    if op is ast.Mult:
        for seq, n in ((left, right), (right, left)):
            if isinstance(seq, (str, bytes, list, tuple)) and isinstance(n, int) and len(seq) * n > MAX_SIZE:
                raise ValueError("repetition too large")
    elif op is ast.Pow and isinstance(left, int) and isinstance(right, int):
        if abs(left) > 1 and right > 0 and left.bit_length() * right > MAX_POW_BITS:
            raise ValueError("power too large")
    elif op is ast.LShift and isinstance(right, int) and right > MAX_POW_BITS:
        raise ValueError("shift too large")


def evaluate_unit(unit: AssertUnit, results: list) -> tuple[bool, str]:
    """Evaluate one assert with the candidate's results; ``(held, detail)``."""
    try:
        held = bool(_Evaluator(unit.env, unit.calls, results).eval(unit.test))
    except CandidateFailure as exc:
        return False, f"{unit.source}: {exc}"
    except Exception as exc:  # a TypeError comparing results etc.: the assert did not hold
        return False, f"{unit.source}: {type(exc).__name__}: {exc}"[:500]
    if held:
        return True, ""
    shown = [f"{name}(...) returned {_short(results[i])}" for i, name in _call_names(unit)[:3]]
    return False, f"failed: {unit.source}" + (f" [{'; '.join(shown)}]" if shown else "")


def _call_names(unit: AssertUnit) -> list[tuple[int, str]]:
    names = {}
    for node in ast.walk(unit.test):
        if isinstance(node, ast.Call) and id(node) in unit.calls:
            names[unit.calls[id(node)]] = ast.unparse(node.func)
    return sorted(names.items())


def _short(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 120 else text[:117] + "..."

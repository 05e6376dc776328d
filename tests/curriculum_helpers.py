"""Scripted text generators and a small problem library for the curriculum tests.

A scripted generator implements `laimark_pl.generation.TextGenerator` with rules instead of a
model: it answers proposal requests with canned FUNCTION/TESTS/SOLUTION replies and solves a
known problem correctly with a fixed probability, so pass rates, funnels and resume behaviour
can be checked exactly.
"""

from __future__ import annotations

import random
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Spec:
    """A problem the scripted model knows: statement, tests, a right and a wrong solution."""

    name: str
    doc: str
    args: str
    tests: tuple[str, ...]
    right: str  # body
    wrong: str  # body

    def proposal(self) -> str:
        tests = "\n".join(self.tests)
        return (f"Here is an exercise.\n\nFUNCTION:\n```python\ndef {self.name}({self.args}):\n"
                f'    """{self.doc}"""\n```\n\nTESTS:\n```python\n{tests}\n```\n\nSOLUTION:\n```python\n'
                f"def {self.name}({self.args}):\n{self.right}\n```\n")

    def answer(self, correct: bool) -> str:
        return f"```python\ndef {self.name}({self.args}):\n{self.right if correct else self.wrong}\n```"


LIBRARY: list[Spec] = [
    Spec("add_pairs", "Return the element-wise sums of two equally long lists.", "a, b",
         ("assert add_pairs([1, 2], [3, 4]) == [4, 6]", "assert add_pairs([], []) == []",
          "assert add_pairs([-1], [1]) == [0]"),
         "    return [x + y for x, y in zip(a, b)]", "    return a + b"),
    Spec("count_upper", "Count the upper-case letters in a string.", "s",
         ("assert count_upper('aBcD') == 2", "assert count_upper('') == 0", "assert count_upper('XYZ') == 3"),
         "    return sum(c.isupper() for c in s)", "    return len(s)"),
    Spec("second_largest", "Return the second largest distinct value of a list, or None if there is none.", "xs",
         ("assert second_largest([3, 1, 2]) == 2", "assert second_largest([5, 5]) is None",
          "assert second_largest([7, 9, 9, 8]) == 8"),
         "    d = sorted(set(xs))\n    return d[-2] if len(d) > 1 else None", "    return sorted(xs)[-2]"),
    Spec("digits_product", "Multiply the decimal digits of a positive integer.", "n",
         ("assert digits_product(123) == 6", "assert digits_product(5) == 5", "assert digits_product(405) == 0"),
         "    p = 1\n    for c in str(n):\n        p *= int(c)\n    return p",
         "    return sum(int(c) for c in str(n))"),
    Spec("snake_to_camel", "Convert a snake_case identifier to camelCase.", "name",
         ("assert snake_to_camel('hello_world') == 'helloWorld'", "assert snake_to_camel('x') == 'x'",
          "assert snake_to_camel('a_b_c') == 'aBC'"),
         "    head, *rest = name.split('_')\n    return head + ''.join(w.title() for w in rest)",
         "    return name.replace('_', '')"),
    Spec("gcd_list", "Return the greatest common divisor of a non-empty list of positive integers.", "xs",
         ("assert gcd_list([12, 18]) == 6", "assert gcd_list([7]) == 7", "assert gcd_list([8, 12, 20]) == 4"),
         "    import math\n    g = 0\n    for x in xs:\n        g = math.gcd(g, x)\n    return g",
         "    return min(xs)"),
    Spec("rle_decode", "Decode a list of (char, count) pairs into a string.", "pairs",
         ("assert rle_decode([('a', 2), ('b', 1)]) == 'aab'", "assert rle_decode([]) == ''",
          "assert rle_decode([('z', 3)]) == 'zzz'"),
         "    return ''.join(c * n for c, n in pairs)", "    return ''.join(c for c, n in pairs)"),
    Spec("max_subarray_sum", "Return the largest sum of a non-empty contiguous sub-list.", "xs",
         ("assert max_subarray_sum([1, -2, 3, 4]) == 7", "assert max_subarray_sum([-3, -1]) == -1",
          "assert max_subarray_sum([2]) == 2"),
         "    best = cur = xs[0]\n    for x in xs[1:]:\n        cur = max(x, cur + x)\n        best = max(best, cur)\n"
         "    return best", "    return sum(xs)"),
]
BY_NAME = {s.name: s for s in LIBRARY}

NONDETERMINISTIC = Spec("coin_flip_sum", "Add a random 0 or 1 to x.", "x",
                        ("assert coin_flip_sum(1) in (1, 2)", "assert coin_flip_sum(0) in (0, 1)",
                         "assert coin_flip_sum(5) in (5, 6)"),
                        "    import random\n    return x + random.randint(0, 1)", "    return x")
WEAK_TESTS = Spec("always_none", "Print a greeting for name and return nothing.", "name",
                  ("assert always_none('a') is None", "assert always_none('') is None",
                   "assert always_none('bob') is None"),
                  "    return None", "    return 1")
FAILING_REFERENCE = Spec("broken_double", "Return twice x.", "x",
                         ("assert broken_double(2) == 4", "assert broken_double(0) == 0",
                          "assert broken_double(5) == 10"),
                         "    return x + 2", "    return x")
HUMANEVAL_RENAMED = Spec(
    "near_pairs", "Check if in given list of numbers, are any two numbers closer to each other than given "
    "threshold.", "numbers, threshold",
    ("assert near_pairs([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.3) == True",
     "assert near_pairs([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.05) == False",
     "assert near_pairs([1.0, 2.0, 5.9, 4.0, 5.0], 0.95) == True"),
    "    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])",
    "    return False")


class CountingSandbox:
    """A real sandbox that records the size of every ``check`` call (stages must batch)."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def check(self, programs):
        self.calls.append(len(programs))
        return self.inner.check(programs)


def _stable_seed(*parts: object) -> int:
    return zlib.crc32("\x00".join(map(str, parts)).encode())


@dataclass
class ScriptedModel:
    """A `TextGenerator` that proposes canned replies and solves known problems with probability p.

    Args:
        proposals: replies for proposal requests, handed out in order (cycling).
        pass_prob: probability of a correct answer per function name (``default_p`` otherwise).
        fail_after: raise ``RuntimeError`` on the call after this many calls (simulated crash).
    """

    proposals: Sequence[str] = ()
    pass_prob: dict[str, float] = field(default_factory=dict)
    default_p: float = 0.5
    fail_after: int | None = None
    calls: list[dict] = field(default_factory=list)
    _next_proposal: int = 0

    def generate_text(self, prompts, *, num_samples=1, temperature=0.0, top_p=1.0, max_new_tokens=512,
                      system_prompt=None, seed=None, desc=None):
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise RuntimeError("scripted crash")
        self.calls.append({"prompts": list(prompts), "num_samples": num_samples, "temperature": temperature,
                           "system_prompt": system_prompt, "seed": seed, "desc": desc})
        return [[self._reply(p, k, seed, system_prompt) for k in range(num_samples)] for p in prompts]

    def probability(self, name: str, system_prompt: str | None) -> float:
        return self.pass_prob.get(name, self.default_p)

    def _reply(self, prompt: str, k: int, seed: int | None, system_prompt: str | None) -> str:
        if "FUNCTION:" in prompt and "SOLUTION:" in prompt:  # a proposal request
            if not self.proposals:
                return "I have no idea."
            reply = self.proposals[self._next_proposal % len(self.proposals)]
            self._next_proposal += 1
            return reply
        rng = random.Random(_stable_seed(prompt, k, seed, system_prompt))
        m = re.search(r"def (\w+)\(", prompt)
        name = m.group(1) if m else ""
        correct = rng.random() < self.probability(name, system_prompt)
        if "What does `" in prompt:  # deduction: compute the value by running the shown code
            call = re.search(r"What does `(.*?)` return", prompt).group(1)
            return f"<answer>{_evaluate(prompt, call) if correct else 'None'}</answer>"
        if "Find arguments such that" in prompt:  # abduction: take arguments from a known assert
            expected = re.search(r"returns `(.*?)`\. Reason", prompt, re.DOTALL).group(1)
            spec = BY_NAME.get(name)
            for t in spec.tests if spec else ():
                got = re.match(rf"assert {name}\((.*)\) == (.*)$", t)
                if got and got.group(2) == expected:
                    return f"<answer>{got.group(1) if correct else 'object()'}</answer>"
            return "<answer>0</answer>"
        spec = BY_NAME.get(name) or _spec_from_extra(name)
        return spec.answer(correct) if spec else "```python\npass\n```"


EXTRA: dict[str, Spec] = {s.name: s for s in (NONDETERMINISTIC, WEAK_TESTS, FAILING_REFERENCE, HUMANEVAL_RENAMED)}


def _spec_from_extra(name: str) -> Spec | None:
    return EXTRA.get(name)


def _evaluate(prompt: str, call: str) -> str:
    code = re.search(r"```python\n(.*?)```", prompt, re.DOTALL).group(1)
    namespace: dict = {}
    exec(code, namespace)  # trusted: the test library's own reference solutions
    return repr(eval(call, namespace))


HELPFUL = ("Consider edge cases first.", "Re-read the examples before answering.", "Check argument types.")
USELESS = ("Be polite.", "Use descriptive names.", "Write fast code.")


@dataclass
class PromptSensitiveModel(ScriptedModel):
    """Solves problems with probability 0.2 + 0.25 per helpful sentence in its system prompt; as a
    prompt writer it appends one random advice sentence (mutation) or merges sentences (crossover)."""

    leak: str | None = None  # a text the writer sometimes smuggles into its prompts

    def probability(self, name, system_prompt):
        return min(1.0, 0.2 + 0.25 * sum(h in (system_prompt or "") for h in HELPFUL))

    def _reply(self, prompt, k, seed, system_prompt):
        parents = re.findall(r"<prompt>\n(.*?)\n</prompt>", prompt, re.DOTALL)
        if not parents:
            return super()._reply(prompt, k, seed, system_prompt)
        rng = random.Random(f"{prompt}{seed}{k}")
        if len(parents) == 2:  # crossover: the union of both prompts' sentences
            sentences = list(dict.fromkeys(parents[0].split("\n") + parents[1].split("\n")))
            return "<prompt>" + "\n".join(sentences) + "</prompt>"
        advice = rng.choice(HELPFUL + USELESS)
        if self.leak and rng.random() < 0.5:
            advice = self.leak
        return f"Here you go:\n<prompt>{parents[0]}\n{advice}</prompt>"

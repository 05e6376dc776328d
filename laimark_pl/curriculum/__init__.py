"""The self-generated curriculum: the policy writes, verifies and calibrates its own problems.

Stages (one module each, every stage batched: one generation call, one sandbox call):

1. `propose` (+ `parsing`): FUNCTION / TESTS / SOLUTION proposals over topics, or harder variants;
2. `verify`: the reference passes its tests twice; no clock/randomness; tests reject trivial code;
3. `dedup`: duplicates of the pool (name, docstring Jaccard) and HumanEval look-alikes go;
4. `calibrate`: pass rate under the current policy must lie in the learnability window;
5. `task_types`: deduction/abduction tasks derived from verified asserts; the type mix is capped.

`pipeline` chains them (`run_round`), `funnel` counts what each stage kept and why it dropped
the rest, `resumable` writes files that survive interruption, and `cli` adds ``laimark
generate`` and ``laimark calibrate`` (and ``evolve-prompt``, see `laimark_pl.prompt_evolution`).
"""

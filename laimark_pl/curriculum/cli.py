"""``laimark generate``, ``laimark calibrate`` and ``laimark evolve-prompt``.

All three load the model as a frozen policy (``--model`` + optional ``--adapter``), show
progress bars, and print a summary at the end. ``generate`` and ``calibrate`` are resumable:
re-running the same command after an interruption continues where it stopped (state beside
``--out`` in ``<out>.state.json``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from laimark_pl.cli_params import SYSTEM_PROMPT_HELP, answer_mode, resolve_system_prompt
from laimark_pl.generation import TextGenerator
from laimark_pl.problems import ProblemFileError, read_problems
from laimark_pl.prompts import OPERATIONAL_SYSTEM_PROMPT

GeneratorFactory = Callable[[str, "str | None"], TextGenerator]

MODEL_HELP = "Hub id, local directory, .gguf file, or 'tiny' (a random test model)."


def load_generator(model: str, adapter: str | None) -> TextGenerator:
    """The policy (frozen) as a text generator."""
    from laimark_pl.modules.policy import PolicyConfig, load_policy

    return load_policy(PolicyConfig(model=model, adapter=adapter, trainable=False))


def register(app: typer.Typer, generator_factory: GeneratorFactory | None = None) -> None:
    """Add ``generate``, ``calibrate`` and ``evolve-prompt`` to ``app``.

    ``generator_factory(model, adapter)`` builds the text generator (default: `load_generator`);
    tests pass scripted generators through it.
    """
    factory = generator_factory or load_generator

    @app.command("generate")
    def generate(
        model: str = typer.Option(..., "--model", "-m", help=MODEL_HELP),
        adapter: str | None = typer.Option(None, "--adapter", "-a", help="LoRA adapter directory to apply."),
        count: int = typer.Option(32, "--count", "-n", min=1, help="Problems to write (verified, unique, clean)."),
        out: Path = typer.Option(..., "--out", "-o", help="Output JSONL (appended to; resumable)."),
        seed: int = typer.Option(0, "--seed", help="Seed of topic choices and sampling."),
        backend: str = typer.Option("process", "--backend", help="Sandbox backend: process or docker."),
        batch: int = typer.Option(16, "--batch", min=1, help="Candidates proposed per round."),
        max_rounds: int | None = typer.Option(None, "--max-rounds", min=1,
                                              help="Stop after this many rounds (default: about 10x count)."),
        pool: list[Path] = typer.Option([], "--pool", help="Existing curricula to deduplicate against."),
        topics: str | None = typer.Option(None, "--topics", help="Comma-separated topic list."),
        harder_share: float = typer.Option(0.5, "--harder-share", min=0.0, max=1.0,
                                           help="Share of requests for a harder variant of an accepted problem."),
        temperature: float = typer.Option(0.9, "--temperature", min=0.0, help="Proposal sampling temperature."),
        max_new_tokens: int = typer.Option(1024, "--max-new-tokens", min=1, help="Proposal length limit."),
        dedup_threshold: float = typer.Option(0.6, "--dedup-threshold", min=0.01, max=1.0,
                                              help="Docstring word-trigram Jaccard above which a problem is a "
                                              "duplicate."),
        decontaminate: bool = typer.Option(True, "--decontaminate/--no-decontaminate",
                                           help="Reject problems close to HumanEval."),
        timeout_s: float = typer.Option(5.0, "--timeout", min=0.1, help="Per-program time limit (seconds)."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
    ) -> None:
        """Stages 1-3: propose, verify, deduplicate and decontaminate new problems."""
        from laimark_pl.curriculum.pipeline import RoundConfig
        from laimark_pl.curriculum.propose import DEFAULT_TOPICS, ProposeConfig
        from laimark_pl.curriculum.resumable import StateMismatchError, generate_to_file
        from laimark_pl.sandbox import create

        topic_list = [t.strip() for t in topics.split(",") if t.strip()] if topics else list(DEFAULT_TOPICS)
        config = RoundConfig(
            num_candidates=batch, dedup_threshold=dedup_threshold, decontaminate=decontaminate,
            propose=ProposeConfig(topics=topic_list, harder_share=harder_share, temperature=temperature,
                                  max_new_tokens=max_new_tokens))
        existing = _read_pools(pool)
        generator = factory(model, adapter)
        try:
            with create(backend, timeout_s=timeout_s) as sandbox:
                funnel = generate_to_file(generator, sandbox, out, count, config, seed=seed, pool=existing,
                                          max_rounds=max_rounds, progress=progress)
        except StateMismatchError as exc:
            raise typer.BadParameter(str(exc), param_hint="--out") from exc
        console = Console()
        console.print(funnel.render("generate: funnel"))
        written = len(read_problems(out)) if out.exists() else 0
        console.print(f"{written} / {count} problems in {out}")

    @app.command("calibrate")
    def calibrate_cmd(
        problems: Path = typer.Option(..., "--problems", "-p", help="Curriculum JSONL (ours or the study's)."),
        model: str = typer.Option(..., "--model", "-m", help=MODEL_HELP),
        adapter: str | None = typer.Option(None, "--adapter", "-a", help="LoRA adapter directory to apply."),
        samples: int = typer.Option(8, "--samples", "-k", min=1, help="Completions per problem (K)."),
        lo: float = typer.Option(0.2, "--lo", min=0.0, max=1.0, help="Lowest pass rate kept."),
        hi: float = typer.Option(0.8, "--hi", min=0.0, max=1.0, help="Highest pass rate kept."),
        out: Path = typer.Option(..., "--out", "-o", help="Output JSONL of learnable problems (resumable)."),
        temperature: float = typer.Option(0.7, "--temperature", min=0.0, help="Sampling temperature."),
        max_new_tokens: int = typer.Option(1024, "--max-new-tokens", min=1, help="Completion length limit."),
        mode: str = typer.Option("full", "--mode", callback=answer_mode,
                                 help="Answer style: 'full' function or 'body'."),
        system_prompt: str | None = typer.Option(None, "--system-prompt", callback=resolve_system_prompt,
                                                 help="System message; " + SYSTEM_PROMPT_HELP),
        batch: int = typer.Option(16, "--batch", min=1, help="Problems per generation/sandbox batch."),
        decontaminate: bool = typer.Option(True, "--decontaminate/--no-decontaminate",
                                           help="Drop input problems close to HumanEval before sampling."),
        seed: int = typer.Option(0, "--seed", help="Sampling seed."),
        backend: str = typer.Option("process", "--backend", help="Sandbox backend: process or docker."),
        timeout_s: float = typer.Option(5.0, "--timeout", min=0.1, help="Per-program time limit (seconds)."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
    ) -> None:
        """Stage 4: keep the problems whose pass rate under the model lies between --lo and --hi."""
        from laimark_pl.curriculum.calibrate import CalibrationConfig
        from laimark_pl.curriculum.dedup import Decontaminator
        from laimark_pl.curriculum.resumable import StateMismatchError, calibrate_file
        from laimark_pl.sandbox import create

        if lo > hi:
            raise typer.BadParameter(f"--lo {lo} is above --hi {hi}", param_hint="--lo")
        _check_file(problems, "--problems")
        config = CalibrationConfig(samples=samples, temperature=temperature, max_new_tokens=max_new_tokens, lo=lo,
                                   hi=hi, answer_mode=mode)  # type: ignore[arg-type]
        generator = factory(model, adapter)
        try:
            with create(backend, timeout_s=timeout_s) as sandbox:
                funnel = calibrate_file(generator, sandbox, problems, out, config, batch_size=batch,
                                        system_prompt=system_prompt, seed=seed, progress=progress,
                                        decontaminator=Decontaminator() if decontaminate else None)
        except StateMismatchError as exc:
            raise typer.BadParameter(str(exc), param_hint="--out") from exc
        except ProblemFileError as exc:
            raise typer.BadParameter(str(exc), param_hint="--problems") from exc
        console = Console()
        console.print(funnel.render("calibrate: funnel"))
        console.print(f"{funnel.steps.get('calibrated', 0)} learnable problems (pass rate in [{lo}, {hi}]) in {out}")

    @app.command("evolve-prompt")
    def evolve_prompt_cmd(
        model: str = typer.Option(..., "--model", "-m", help=MODEL_HELP),
        adapter: str | None = typer.Option(None, "--adapter", "-a", help="LoRA adapter directory to apply."),
        heldout: Path = typer.Option(..., "--problems", "-p",
                                     help="Held-out SELF-GENERATED problems to score prompts on (never HumanEval)."),
        generations: int = typer.Option(3, "--generations", "-g", min=0, help="Generations of offspring."),
        population: int = typer.Option(6, "--population", min=2, help="Prompts kept per generation."),
        elite: int = typer.Option(2, "--elite", min=1, help="Best prompts carried over unchanged."),
        samples: int = typer.Option(1, "--samples", min=1, help="Answers per held-out problem when scoring."),
        temperature: float = typer.Option(0.0, "--temperature", min=0.0, help="Scoring temperature (0 = greedy)."),
        max_new_tokens: int = typer.Option(1024, "--max-new-tokens", min=1, help="Answer length limit."),
        initial: str | None = typer.Option(None, "--initial", callback=resolve_system_prompt,
                                           help="Starting prompt (default: the study's operational prompt); "
                                           + SYSTEM_PROMPT_HELP),
        mode: str = typer.Option("full", "--mode", callback=answer_mode,
                                 help="Answer style: 'full' function or 'body'."),
        out: Path = typer.Option(..., "--out", "-o", help="Where the best prompt is written (text)."),
        seed: int = typer.Option(0, "--seed", help="Search and sampling seed."),
        backend: str = typer.Option("process", "--backend", help="Sandbox backend: process or docker."),
        timeout_s: float = typer.Option(5.0, "--timeout", min=0.1, help="Per-program time limit (seconds)."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
    ) -> None:
        """Evolve the system prompt on held-out self-generated problems; write the best one."""
        from laimark_pl.prompt_evolution import EvolutionConfig, HeldoutError, evolve_prompt
        from laimark_pl.sandbox import create

        _check_file(heldout, "--problems")
        try:
            config = EvolutionConfig(population=population, generations=generations, elite=elite,
                                     eval_samples=samples, eval_temperature=temperature,
                                     eval_max_new_tokens=max_new_tokens, answer_mode=mode,  # type: ignore[arg-type]
                                     seed=seed)
            problems = read_problems(heldout)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from exc
        generator = factory(model, adapter)
        try:
            with create(backend, timeout_s=timeout_s) as sandbox:
                result = evolve_prompt(generator, sandbox, problems, config,
                                       initial=(initial or OPERATIONAL_SYSTEM_PROMPT,),
                                       progress=progress)
        except HeldoutError as exc:
            raise typer.BadParameter(str(exc), param_hint="--problems") from exc
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(result.best.prompt + "\n", encoding="utf-8")
        history = out.with_name(out.name + ".history.json")
        history.write_text(json.dumps({"history": result.history, "rejected": dict(result.rejected),
                                       "population": [c.__dict__ for c in result.population]}, indent=1))
        table = Table(title="evolve-prompt")
        for column in ("generation", "best", "mean", "offspring"):
            table.add_column(column, justify="right")
        for h in result.history:
            table.add_row(str(h["generation"]), f"{h['best']:.3f}", f"{h['mean']:.3f}", str(h["offspring"]))
        console = Console()
        console.print(table)
        console.print(f"seed prompt fitness {result.baseline.fitness:.3f} -> best {result.best.fitness:.3f} "
                      f"({result.best.origin}, generation {result.best.generation}); written to {out}")


def _check_file(path: Path, hint: str) -> None:
    if not path.is_file():
        raise typer.BadParameter(f"file not found: {path}", param_hint=hint)


def _read_pools(paths: list[Path]) -> list:
    problems = []
    for path in paths:
        _check_file(path, "--pool")
        try:
            problems += read_problems(path)
        except ProblemFileError as exc:
            raise typer.BadParameter(str(exc), param_hint="--pool") from exc
    return problems

"""The ``laimark`` command.

``laimark fit|validate|test ...`` hand every argument to a `LightningCLI` over `GRPOModule` and
`CurriculumDataModule` (so ``--config``, repeated configs, dotted overrides, ``--print_config``
and ``--help`` behave as Lightning users expect). The other commands (``evaluate``,
``generate``, ``calibrate``, ``evolve-prompt``, ``sandbox``, ``register``, ``promote``,
``serve``) are Typer commands contributed by the feature packages.
"""

from __future__ import annotations

import sys

import typer

LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test")

app = typer.Typer(
    name="laimark",
    help="Self-improving code models: self-generated curricula + GRPO on LoRA adapters.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


def _add_lightning_command(name: str) -> None:
    @app.command(
        name,
        help=f"Run LightningCLI `{name}` (try `laimark {name} --help`).",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        add_help_option=False,
    )
    def _command(ctx: typer.Context) -> None:
        from laimark_pl.lightning_cli import UserInputError, run_lightning_cli

        try:
            run_lightning_cli([name, *ctx.args])
        except UserInputError as exc:
            typer.secho(f"laimark {name}: {exc}", fg=typer.colors.RED, err=True)
            raise typer.Exit(2) from exc


for _name in LIGHTNING_SUBCOMMANDS:
    _add_lightning_command(_name)


def _register_feature_commands() -> None:
    from laimark_pl.curriculum.cli import register as register_curriculum
    from laimark_pl.evaluation.cli import register as register_evaluation
    from laimark_pl.registry.cli import register as register_registry
    from laimark_pl.sandbox.cli import register as register_sandbox

    for register in (register_evaluation, register_curriculum, register_sandbox, register_registry):
        register(app)


_register_feature_commands()


def main() -> None:
    """Console-script entry point."""
    app(args=sys.argv[1:], prog_name="laimark")


if __name__ == "__main__":
    main()

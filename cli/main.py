"""``persona``: the one command-line entry point.

It is the only package that reaches both sides; each subcommand imports its side lazily so that
``persona ingest`` never loads vLLM and ``persona serve`` never loads the trainer. The subcommands
live in one module per side: :mod:`cli.serve`, :mod:`cli.train`, :mod:`cli.personas`.
"""

from __future__ import annotations

import sys

import typer

from . import augment, eval, personas, serve, train, warm, worker

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Fine-tune and serve chat personas.")
for part in (serve, warm, personas, train, worker, eval, augment):
    for command in part.app.registered_commands:
        app.registered_commands.append(command)


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())

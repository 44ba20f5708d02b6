"""The `rescore` command line (placeholder, filled in by the integration work)."""

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True)


def main() -> None:
    app()

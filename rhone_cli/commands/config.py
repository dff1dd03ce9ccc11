"""`rhone config`: check and show rhone.toml offline — no server and no credentials needed (CI lint)."""

from pathlib import Path
from typing import Annotated

import typer

from rhone_cli.commands._common import group, invocation
from rhone_cli.errors import ExitCode

app = group("config", "Check and show rhone.toml (offline: no server or credentials needed).")

FileOption = Annotated[
    Path | None,
    typer.Option(
        "--file", "-f", help="rhone.toml to read (default: the nearest in this or a parent directory).", metavar="PATH"
    ),
]


@app.command("validate")
def validate(ctx: typer.Context, file: FileOption = None) -> None:
    """Validate rhone.toml: exit 0 when valid, else 2 with every problem listed (`--json`: as a list)."""
    from rhone_cli.config import project

    inv = invocation(ctx)
    path = project.locate(inv.env.workdir, file)
    result = project.load_file(path)
    if inv.env.options.json:
        inv.out.json_document(
            {
                "file": str(path),
                "valid": result.config is not None,
                "problems": [p.to_dict() for p in result.problems],
            }
        )
        if result.config is None:
            raise typer.Exit(ExitCode.USAGE)
        return
    if result.config is None:
        raise project.config_error(result)
    inv.out.line(f"{path}: valid (project {result.config.project.name}, app {result.config.app.name})")


@app.command("show")
def show(ctx: typer.Context, file: FileOption = None) -> None:
    """Print the resolved configuration, with every default filled in."""
    from rhone_cli.config import project

    inv = invocation(ctx)
    path = project.locate(inv.env.workdir, file)
    result = project.load_file(path)
    if result.config is None:
        raise project.config_error(result)
    resolved = result.config.resolved()

    def human(out) -> None:
        import tomli_w

        out.line(f"# {path} (defaults filled in)")
        out.line(tomli_w.dumps(_without_none(resolved)).rstrip())

    inv.out.result({"file": str(path), "config": resolved}, human)


def _without_none(value):
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    return value

"""`rhone artifact`: artifacts: immutable, content-addressed builds."""

from typing import Annotated

import typer

from rhone_cli.commands._common import group, invocation

app = group("artifact", "Artifacts: immutable, content-addressed builds.")


@app.command("manifest")
def manifest(
    ctx: typer.Context,
    prebuilt: Annotated[
        bool,
        typer.Option("--prebuilt", help="List rhone.toml's build.output directory (an already built artifact)."),
    ] = False,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Hash every file; ignore (and do not update) the stat cache.")
    ] = False,
    explain: Annotated[
        str | None,
        typer.Option(
            "--explain", help="Say why PATH is in the manifest or out of it (which rule, where).", metavar="PATH"
        ),
    ] = None,
) -> None:
    """Print the artifact manifest and digest of the project directory (offline: no server or credentials).

    The root is the directory of the nearest rhone.toml (else the current directory, or -C DIR); with --prebuilt,
    rhone.toml's build.output. Files are filtered by the built-in ignores (which keep .env files out), every
    .gitignore, every .rhoneignore and build.include/exclude.
    """
    from rhone_cli.services.artifacts import explain_path, show_manifest

    inv = invocation(ctx)
    if explain is not None:
        verdict = explain_path(inv.env.workdir, explain, prebuilt=prebuilt)
        word = "included" if verdict["included"] else "excluded"
        inv.out.result(verdict, lambda out: out.line(f"{verdict['path']}: {word}: {verdict['reason']}"))
        return
    show_manifest(inv.out, inv.env.workdir, prebuilt=prebuilt, use_cache=not no_cache)

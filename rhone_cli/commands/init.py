"""`rhone init`: create rhone.toml for the project in this directory (never overwrites one)."""

import re
from pathlib import Path
from typing import Annotated

import typer

from rhone_cli.commands._common import invocation
from rhone_cli.errors import ExitCode, RhoneError, input_required


def _slug(text: str) -> str | None:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    slug = re.sub(r"^[0-9-]+", "", slug)[:40].strip("-")
    return slug or None


def _guess_start(directory: Path) -> str:
    for name, command in (
        ("app.py", "python app.py"),
        ("main.py", "python main.py"),
        ("server.py", "python server.py"),
        ("package.json", "npm start"),
        ("go.mod", "go run ."),
    ):
        if (directory / name).exists():
            return command
    return "python app.py"


def register(root: typer.Typer) -> None:
    @root.command("init")
    def init(
        ctx: typer.Context,
        project_name: Annotated[
            str | None, typer.Option("--project", help="Project name (default: the directory name).")
        ] = None,
        app_name: Annotated[str | None, typer.Option("--app", help="App name (default: the directory name).")] = None,
        start: Annotated[
            str | None, typer.Option("--start", help="Start command; it receives PORT (default: guessed).")
        ] = None,
        link: Annotated[
            bool, typer.Option("--link", help="Link an existing rhone.toml (create or find its project and app).")
        ] = False,
        no_link: Annotated[
            bool, typer.Option("--no-link", help="Only write rhone.toml; do not contact the API.")
        ] = False,
    ) -> None:
        """Create rhone.toml here (never overwriting one) and link the directory: the project and app it names are
        created on the server when missing, and their ids recorded in .rhone/link.json."""
        from rhone_cli.config import project

        inv = invocation(ctx)
        directory = inv.env.workdir
        target = directory / project.FILENAME
        if target.exists():
            if not link:
                raise RhoneError(
                    f"{target} already exists; rhone init never overwrites it",
                    code="config_exists",
                    exit_code=ExitCode.CONFLICT,
                    hint="edit it by hand (check with `rhone config validate`), or `rhone init --link` to link it",
                )
            config = project.load(directory, target)
        else:
            config = _write_new(inv, directory, target, project_name, app_name, start)
        linked = None
        if not no_link:
            if inv.credential(required=False).token is None:
                inv.out.info(
                    "Not linked: not logged in. Run `rhone login` (or `rhone local up`), then `rhone init --link`."
                )
            else:
                from rhone_cli.services import tenancy

                linked = tenancy.link(inv, config, directory)
                inv.out.info(
                    f"Linked to project {linked['project']} and app {linked['app']} "
                    f"({', '.join(linked['created']) + ' created' if linked['created'] else 'both existed'})."
                )
        inv.out.result(
            {"file": str(target), "config": config.resolved(), "link": linked}, lambda out: out.line(str(target))
        )


def _write_new(
    inv,
    directory: Path,
    target: Path,
    project_name: str | None,
    app_name: str | None,
    start: str | None,
):
    """Ask for (or default) the names and start command, validate, and write rhone.toml without clobbering."""
    from rhone_cli.config import project

    default_name = _slug(directory.resolve().name)
    prompting = inv.env.can_prompt
    if project_name is None:
        if prompting:
            project_name = typer.prompt("Project name", default=default_name)
        elif default_name is None:
            raise input_required("--project", "a project name (the directory name is not usable)")
        else:
            project_name = default_name
    if app_name is None:
        app_name = typer.prompt("App name", default=project_name) if prompting else project_name
    if start is None:
        guess = _guess_start(directory)
        start = typer.prompt("Start command (receives PORT)", default=guess) if prompting else guess
    text = project.render_new(project_name, app_name, start)
    config, problems = project.parse(text, str(target))
    if config is None:
        raise RhoneError(
            "cannot create rhone.toml from these values",
            code="invalid_config",
            exit_code=ExitCode.USAGE,
            details={"file": str(target), "problems": [p.to_dict() for p in problems]},
        )
    try:
        with target.open("x", encoding="utf-8") as handle:  # "x": never clobber a file created meanwhile
            handle.write(text)
    except FileExistsError:
        raise RhoneError(f"{target} already exists", code="config_exists", exit_code=ExitCode.CONFLICT) from None
    inv.out.info(f"Wrote {target}. Next: `rhone config validate`, then `rhone deploy`.")
    return config

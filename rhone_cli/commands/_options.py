"""Options shared by command modules, and the one way a command names its target (`--workspace/--project/--app`).

A command that acts on a workspace, a project or an app declares it with `@targets(LEVEL)`: the decorator gives it the
options that level needs (`--workspace`; `--workspace --project`; all three) and hands them over as one `TargetFlags`
parameter, `where`. `where.resolve(inv)` is the one resolver (`rhone_cli.services.tenancy.target`): the flags, else
the nearest rhone.toml, else the profile, with every missing value named in one error.

Standard library and typer only (start-up budget).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import typer

from rhone_cli.commands._common import wait_timeout_callback

if TYPE_CHECKING:
    from rhone_cli.api import Target
    from rhone_cli.invocation import Invocation

WorkspaceOpt = Annotated[
    str | None,
    typer.Option("--workspace", "-w", help="Workspace (default: rhone.toml, then the profile).", metavar="NAME"),
]
ProjectOpt = Annotated[
    str | None, typer.Option("--project", "-p", help="Project (default: rhone.toml, then the profile).", metavar="NAME")
]
AppOpt = Annotated[str | None, typer.Option("--app", "-a", help="App (default: rhone.toml).", metavar="NAME")]
LimitOpt = Annotated[
    int | None, typer.Option("--limit", "-L", help="The N newest (default 30).", min=1, max=10_000, metavar="N")
]
AllOpt = Annotated[bool, typer.Option("--all", help="Every one, newest first (all pages).")]
NoWaitOpt = Annotated[bool, typer.Option("--no-wait", help="Return the operation at once instead of waiting.")]
WaitTimeoutOpt = Annotated[
    float | None,
    typer.Option(
        "--wait-timeout",
        help="Stop waiting after SECONDS (exit 7; the operation continues).",
        metavar="SECONDS",
        callback=wait_timeout_callback,
    ),
]

LEVELS = ("workspace", "project", "app")
# The parameter each target option arrives in (`app` names the Typer group in command modules, so not that).
_PARAMETERS = {
    "app": inspect.Parameter("app_name", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=AppOpt),
    "project": inspect.Parameter("project", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=ProjectOpt),
    "workspace": inspect.Parameter("workspace", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=WorkspaceOpt),
}


@dataclass(frozen=True)
class TargetFlags:
    """`--workspace`, `--project` and `--app` as given (None: not given), and the level the command needs."""

    need: str = "app"
    workspace: str | None = None
    project: str | None = None
    app: str | None = None

    def resolve(self, inv: Invocation, *, need: str | None = None, **arguments: str | None) -> Target:
        """The command's target. `arguments` are names the command took as arguments instead (`project create
        NAME`): they win over the flags; `need` raises the level when such an argument names a deeper one."""
        from rhone_cli.services.tenancy import target

        given = {"workspace": self.workspace, "project": self.project, "app": self.app}
        given.update({name: value for name, value in arguments.items() if value is not None})
        return target(inv, need=need or self.need, **given)


def targets(level: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a command the target options of `level` ("workspace", "project" or "app") and the `where: TargetFlags`
    they make. The command's own parameters keep their order; the target options follow them."""
    options = LEVELS[: LEVELS.index(level) + 1]

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        own = inspect.signature(command, eval_str=True)
        kept = [p for p in own.parameters.values() if p.name != "where"]
        added = [_PARAMETERS[name] for name in reversed(options)]  # --app, --project, --workspace: as before

        @functools.wraps(command)
        def with_target(*args: Any, **kwargs: Any) -> Any:
            flags = TargetFlags(
                level, kwargs.pop("workspace", None), kwargs.pop("project", None), kwargs.pop("app_name", None)
            )
            return command(*args, where=flags, **kwargs)

        parameters = [*kept, *added]
        with_target.__signature__ = own.replace(parameters=parameters)  # type: ignore[attr-defined]
        with_target.__annotations__ = {p.name: p.annotation for p in parameters}
        return with_target

    return decorate

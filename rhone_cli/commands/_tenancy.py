"""Options and renderers shared by the tenancy command modules (workspace, project, app, env, op)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from rhone_cli.commands._common import wait_timeout_callback
from rhone_cli.output import Output

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


def table(columns: list[str], keys: list[str], rows: list[dict[str, Any]], empty: str):
    def human(out: Output) -> None:
        out.table(columns, [[_cell(row.get(k)) for k in keys] for row in rows], empty=empty)

    return human


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "" if value is None else str(value)


def fields(doc: dict[str, Any], order: list[str]):
    def human(out: Output) -> None:
        out.fields(doc, order=[k for k in order if k in doc])

    return human


def created_or_operation(doc: dict[str, Any], what: str):
    """Human rendering of a create command: the new resource, or the operation with --no-wait."""

    def human(out: Output) -> None:
        if str(doc.get("id", "")).startswith("op_"):
            out.line(f"{doc['id']}  {doc['kind']}  {doc['state']}")
        else:
            out.line(f"created {what} {doc['name']} ({doc['id']})")

    return human

"""Helpers shared by command modules."""

from __future__ import annotations

from typing import Any

import typer

from rhone_cli.errors import not_implemented
from rhone_cli.invocation import Invocation

# Placeholders accept any arguments so that every spelling ends in the same honest "not available yet" message.
PASSTHROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}


def invocation(ctx: typer.Context) -> Invocation:
    obj: Any = ctx.find_root().obj
    if not isinstance(obj, Invocation):  # run through typer directly (e.g. CliRunner) rather than main()
        from rhone_cli.environment import Environment

        obj = Invocation(Environment())
        ctx.find_root().obj = obj
    return obj


# The milestones that bring the server side of commands not available yet (see CHANGELOG.md).
TOPOLOGY = "the bindings, scale and topology milestone"


def placeholder(group: typer.Typer, name: str, help_text: str, arrives_with: str) -> None:
    """Register `name` on `group` as a command that exists in the tree but says it is not available yet."""
    full_name = f"{group.info.name} {name}"

    @group.command(
        name, help=f"{help_text}\n\n(Not available yet: arrives with {arrives_with}.)", context_settings=PASSTHROUGH
    )
    def _command(ctx: typer.Context) -> None:
        raise not_implemented(full_name, arrives_with)


def new_typer(**settings: Any) -> typer.Typer:
    """A Typer with rhone's help style: plain text, which is fast (no rich import), greppable and pipe-safe."""
    return typer.Typer(rich_markup_mode=None, pretty_exceptions_enable=False, **settings)


def group(name: str, help_text: str) -> typer.Typer:
    return new_typer(name=name, help=help_text, no_args_is_help=True)

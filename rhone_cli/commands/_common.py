"""Helpers shared by command modules."""

from __future__ import annotations

from typing import Any

import typer

from rhone_cli.invocation import Invocation


def invocation(ctx: typer.Context) -> Invocation:
    obj: Any = ctx.find_root().obj
    if not isinstance(obj, Invocation):  # run through typer directly (e.g. CliRunner) rather than main()
        from rhone_cli.environment import Environment

        obj = Invocation(Environment())
        ctx.find_root().obj = obj
    return obj


def new_typer(**settings: Any) -> typer.Typer:
    """A Typer with rhone's help style: plain text, which is fast (no rich import), greppable and pipe-safe."""
    return typer.Typer(rich_markup_mode=None, pretty_exceptions_enable=False, **settings)


def group(name: str, help_text: str) -> typer.Typer:
    return new_typer(name=name, help=help_text, no_args_is_help=True)

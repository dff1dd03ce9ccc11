"""Helpers shared by command modules."""

import math
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


# Bounds of the durations rhone accepts: a request longer than an hour is a hung connection, a wait longer than a
# week is a job that forgot about it. NaN and infinity are refused everywhere (they used to reach the socket layer).
REQUEST_TIMEOUT_RANGE = (0.1, 3600.0)
WAIT_TIMEOUT_RANGE = (0.0, 7 * 24 * 3600.0)


def seconds_problem(value: float, bounds: tuple[float, float]) -> str | None:
    """What `value` should have been, when it is not a finite number of seconds within `bounds` (else None)."""
    low, high = bounds
    if not math.isfinite(value) or not low <= value <= high:
        return f"must be a number of seconds between {low:g} and {high:g}"
    return None


def wait_timeout_callback(value: float | None) -> float | None:
    problem = None if value is None else seconds_problem(value, WAIT_TIMEOUT_RANGE)
    if problem:
        raise typer.BadParameter(f"{problem}, not {value:g}")
    return value


def group(name: str, help_text: str) -> typer.Typer:
    return new_typer(name=name, help=help_text, no_args_is_help=True)

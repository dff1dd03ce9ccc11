"""The plain forms of a command, answered without the command tree (typer's start-up costs more than some commands).

`rhone_cli.entry` hands the arguments to a command's fast path first (`artifact manifest`, `config validate`). Only
the plain forms are answered: the command's words, its own simple options, and the global flags below before or after
the command, with no environment variable the fast path does not read. Anything else returns None and the full CLI
runs instead, so every message, error and exit code stays the one place (`rhone_cli.main`) that defines them.
"""

from __future__ import annotations

import os

# `typing` is for the type checker only: this module is on the start-up path of the commands answered without the
# command tree, where importing it costs ~2 ms (rhone_cli/plain_invocation.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from rhone_cli.environment import Environment

GLOBAL_FLAGS = frozenset({"--json", "--quiet", "-q", "--no-color", "--no-input"})
PROGRESS_MODES = frozenset({"auto", "plain", "jsonl", "none"})
# Read by the full CLI's start-up (a completion request, a value it validates): their presence sends it there.
FULL_CLI_VARIABLES = ("_RHONE_COMPLETE", "RHONE_REQUEST_TIMEOUT")


class PlainArguments:
    # A plain class: `dataclasses` imports `inspect`, a good part of the start-up these paths are here to save.
    def __init__(self) -> None:
        self.flags: set[str] = set()  # the global flags given
        self.cwd: str | None = None  # -C/--cwd DIR
        self.options: dict[str, str | bool] = {}  # the command's own options, by their long name


def parse(argv: list[str], command: list[str], flags: dict[str, str], values: dict[str, str]) -> PlainArguments | None:
    """The arguments of a plain form of `command`, or None for any other. `flags` and `values` map each spelling of
    the command's own switches and value options (accepted only after the command) to their long name."""
    parsed = PlainArguments()
    words: list[str] = []
    index = 0
    while index < len(argv):
        arg = argv[index]
        name, equals, inline = arg.partition("=")
        after_command = words == command
        if arg in ("-C", "--cwd") or (after_command and arg in values):
            if index + 1 == len(argv) or argv[index + 1].startswith("-"):
                return None
            index += 1
            _take(parsed, arg, argv[index], values)
        elif equals and name.startswith("--") and (name == "--cwd" or (after_command and name in values)):
            _take(parsed, name, inline, values)
        elif arg in GLOBAL_FLAGS:
            parsed.flags.add(arg)
        elif after_command and arg in flags:
            parsed.options[flags[arg]] = True
        elif arg.startswith("-") or after_command:
            return None
        else:
            words.append(arg)
        index += 1
    if words != command or parsed.cwd == "" or "" in parsed.options.values():
        return None
    return parsed


def _take(parsed: PlainArguments, option: str, value: str, values: dict[str, str]) -> None:
    if option in ("-C", "--cwd"):
        parsed.cwd = value
    else:
        parsed.options[values[option]] = value


def environment(parsed: PlainArguments) -> Environment | None:
    """The environment the full CLI's root callback would set up for these arguments, or None where it would do more
    (validate a variable, answer a completion request, refuse a missing -C directory). `-C DIR` stays a string:
    `pathlib` is imported only by what asks for `env.workdir`."""
    from rhone_cli.environment import Environment, _truthy

    env = Environment()
    mode = env.environ.get("RHONE_PROGRESS", "auto")
    if mode not in PROGRESS_MODES or any(name in env.environ for name in FULL_CLI_VARIABLES):
        return None
    options = env.options
    options.json = "--json" in parsed.flags
    options.quiet = "--quiet" in parsed.flags or "-q" in parsed.flags
    options.no_color = "--no-color" in parsed.flags
    options.no_input = "--no-input" in parsed.flags or _truthy(env.environ.get("RHONE_NO_INPUT"))
    options.progress = "none" if (options.quiet and mode == "auto") else mode
    options.cwd = parsed.cwd
    if parsed.cwd is not None and not os.path.isdir(workdir(parsed)):
        return None
    return env


def workdir(parsed: PlainArguments) -> str:
    """`Environment.workdir` as a string, without `pathlib`: -C/--cwd DIR (`~` expanded) against the process's
    working directory."""
    if parsed.cwd is None:
        return os.getcwd()
    path = os.path.expanduser(parsed.cwd)
    return path if os.path.isabs(path) else os.path.join(os.getcwd(), path)

"""The Click command tree of `rhone`, built as it is walked.

typer turns every registered function into a Click command up front: it reads each function's signature and
evaluates its annotations, about 1 ms per command, so the 60-odd commands cost most of a run's start-up although one
run uses one of them. `build(app)` makes the same groups and commands with typer's own functions, but a group holds
its subcommands in a `LazyCommands` mapping that builds each one the first time it is looked up: `rhone deploy ls`
builds the root, the `deploy` group and `ls`; `rhone --help` builds the root and the commands it lists; a completion
request builds the path it walks. Whatever walks the whole tree (the completion scripts' generator, the contract
tests) gets every command as before, since iterating a group's `commands` builds each entry it yields.

Each group is typer's own (`get_group_from_info`, given a copy of its Typer without subcommands), then handed the
subcommands unbuilt; `tests/test_command_tree.py` compares the tree with typer's, command by command (pyproject pins
typer to 0.28, whose construction this relies on).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, MutableMapping
from functools import partial
from typing import Any

import typer
from typer import main as typer_main

Builder = Callable[[], Any]


class LazyCommands(MutableMapping[str, Any]):
    """Command name → Click command, each built by its builder on first lookup and kept. Names and their order are
    known without building anything."""

    def __init__(self, builders: dict[str, Builder]) -> None:
        self._builders = builders
        self._built: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        command = self._built.get(name)
        if command is None:
            builder = self._builders[name]  # KeyError for a name no one registered: "No such command"
            try:
                command = self._built[name] = builder()
            except KeyError as error:  # Click's lookup (`.get`) would take it for an unknown name
                raise RuntimeError(f"building the command {name!r} failed: {error!r}") from error
        return command

    def __setitem__(self, name: str, command: Any) -> None:
        self._built[name] = command
        self._builders.setdefault(name, lambda: command)

    def __delitem__(self, name: str) -> None:
        del self._builders[name]
        self._built.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(self._builders)

    def __len__(self) -> int:
        return len(self._builders)

    def __contains__(self, name: object) -> bool:
        return name in self._builders


def build(app: typer.Typer) -> Any:
    """The root group of `app`, its subcommands built on first use (see the module's docstring)."""
    return _group(
        typer_main.TyperInfo(app),
        pretty_exceptions_short=app.pretty_exceptions_short,
        rich_markup_mode=app.rich_markup_mode,
        suggest_commands=app.suggest_commands,
    )


def _group(group_info: Any, **settings: Any) -> Any:
    """typer's group for `group_info`, made by typer itself from a copy that has no subcommands, then given them
    unbuilt."""
    instance = group_info.typer_instance
    command_settings = {key: settings[key] for key in ("pretty_exceptions_short", "rich_markup_mode")}
    builders: dict[str, Builder] = {}
    for command_info in instance.registered_commands:
        name = command_info.name or typer_main.get_command_name(command_info.callback.__name__)
        builders[name] = partial(typer_main.get_command_from_info, command_info, **command_settings)
    for sub_info in instance.registered_groups:
        name = typer_main.solve_typer_info_defaults(sub_info).name
        if not name:
            # typer merges an unnamed sub-Typer's commands into its parent; rhone names every group.
            raise ValueError("every typer added to rhone's command tree needs a name")
        builders[name] = partial(_group, sub_info, **settings)

    bare = copy.copy(instance)
    bare.registered_commands, bare.registered_groups = [], []
    bare_info = copy.copy(group_info)
    bare_info.typer_instance = bare
    group = typer_main.get_group_from_info(bare_info, **settings)
    group.commands = LazyCommands(builders)
    return group

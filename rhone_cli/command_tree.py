"""The Click command tree of `rhone`, built as it is walked.

typer turns every registered function into a Click command up front: it reads each function's signature and
evaluates its annotations, about 1 ms per command, so the 60-odd commands cost most of a run's start-up although one
run uses one of them. `build(app)` makes the same groups and commands with typer's own functions, but a group holds
its subcommands in a `LazyCommands` mapping that builds each one the first time it is looked up: `rhone deploy ls`
builds the root, the `deploy` group and `ls`; `rhone --help` builds the root and the commands it lists; a completion
request builds the path it walks. Whatever walks the whole tree (the completion scripts' generator, the contract
tests) gets every command as before, since iterating a group's `commands` builds each entry it yields.

The group construction below is typer 0.28's `get_group_from_info` (pyproject pins typer to 0.28) with the
subcommands left unbuilt; `tests/test_command_tree.py` compares the tree it makes with typer's, command by command.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

import typer
from typer import main as typer_main
from typer.core import TyperGroup

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

    def built(self) -> list[str]:
        """The names built so far (for tests that count what a run builds)."""
        return list(self._built)


def build(app: typer.Typer) -> Any:
    """The root group of `app`, its subcommands built on first use (see the module's docstring)."""
    return _group(
        typer_main.TyperInfo(app),
        pretty_exceptions_short=app.pretty_exceptions_short,
        rich_markup_mode=app.rich_markup_mode,
        suggest_commands=app.suggest_commands,
    )


def _group(group_info: Any, *, pretty_exceptions_short: bool, rich_markup_mode: Any, suggest_commands: bool) -> Any:
    instance = group_info.typer_instance
    builders: dict[str, Builder] = {}
    for command_info in instance.registered_commands:
        name = command_info.name or typer_main.get_command_name(command_info.callback.__name__)
        builders[name] = _command_builder(command_info, pretty_exceptions_short, rich_markup_mode)
    for sub_info in instance.registered_groups:
        name = typer_main.solve_typer_info_defaults(sub_info).name
        if not name:
            # typer merges an unnamed sub-Typer's commands into its parent; rhone names every group.
            raise ValueError("every typer added to rhone's command tree needs a name")
        builders[name] = _group_builder(sub_info, pretty_exceptions_short, rich_markup_mode, suggest_commands)

    solved = typer_main.solve_typer_info_defaults(group_info)
    params, convertors, context_param_name = typer_main.get_params_convertors_ctx_param_name_from_function(
        solved.callback
    )
    cls = solved.cls or TyperGroup
    return cls(
        name=solved.name or "",
        commands=LazyCommands(builders),
        invoke_without_command=solved.invoke_without_command,
        no_args_is_help=solved.no_args_is_help,
        subcommand_metavar=solved.subcommand_metavar,
        result_callback=solved.result_callback,
        context_settings=solved.context_settings,
        callback=typer_main.get_callback(
            callback=solved.callback,
            params=params,
            convertors=convertors,
            context_param_name=context_param_name,
            pretty_exceptions_short=pretty_exceptions_short,
        ),
        params=params,
        help=solved.help,
        epilog=solved.epilog,
        short_help=solved.short_help,
        options_metavar=solved.options_metavar,
        add_help_option=solved.add_help_option,
        hidden=solved.hidden,
        deprecated=solved.deprecated,
        rich_markup_mode=rich_markup_mode,
        rich_help_panel=solved.rich_help_panel,
        suggest_commands=suggest_commands,
    )


def _command_builder(command_info: Any, pretty_exceptions_short: bool, rich_markup_mode: Any) -> Builder:
    return lambda: typer_main.get_command_from_info(
        command_info, pretty_exceptions_short=pretty_exceptions_short, rich_markup_mode=rich_markup_mode
    )


def _group_builder(
    group_info: Any, pretty_exceptions_short: bool, rich_markup_mode: Any, suggest_commands: bool
) -> Builder:
    return lambda: _group(
        group_info,
        pretty_exceptions_short=pretty_exceptions_short,
        rich_markup_mode=rich_markup_mode,
        suggest_commands=suggest_commands,
    )

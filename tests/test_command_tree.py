"""rhone_cli/command_tree.py: the lazily built command tree is typer's tree, and a run builds only what it walks."""

from __future__ import annotations

import io
from typing import Any

import pytest
import typer
from typer import main as typer_main

from rhone_cli import command_tree
from rhone_cli.environment import Environment
from rhone_cli.invocation import Invocation
from rhone_cli.main import app, main


def _param_facts(param: Any) -> tuple[Any, ...]:
    return (
        param.param_type_name,
        param.name,
        tuple(param.opts),
        tuple(param.secondary_opts),
        type(param.type).__name__,
        repr(getattr(param.type, "choices", None)),
        repr(param.default),
        param.required,
        param.multiple,
        param.nargs,
        getattr(param, "is_flag", None),
        getattr(param, "count", None),
        getattr(param, "help", None),
        getattr(param, "hidden", None),
        getattr(param, "metavar", None),
        param.envvar,
        param.is_eager,
        param.callback is None,
    )


def _command_facts(command: Any) -> tuple[Any, ...]:
    return (
        type(command).__name__,
        command.name,
        command.help,
        command.short_help,
        command.epilog,
        command.hidden,
        command.no_args_is_help,
        command.add_help_option,
        command.options_metavar,
        repr(command.context_settings),
        [_param_facts(p) for p in command.params],
        command.deprecated,
        getattr(command, "rich_help_panel", None),
        getattr(command, "rich_markup_mode", None),
        getattr(command, "invoke_without_command", None),
        getattr(command, "subcommand_metavar", None),
        getattr(command, "suggest_commands", None),
        getattr(command, "_result_callback", None),
        getattr(getattr(command, "callback", None), "__wrapped__", None),
    )


def _walk(command: Any, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], tuple[Any, ...]]:
    found = {path: _command_facts(command)}
    for name, sub in getattr(command, "commands", {}).items():
        found.update(_walk(sub, (*path, name)))
    return found


def test_the_lazy_tree_is_typers_tree_command_by_command() -> None:
    eager = _walk(typer.main.get_command(app))
    lazy = _walk(command_tree.build(app))
    assert list(lazy) == list(eager)  # the same commands, in the same order (help lists them in this order)
    assert len(eager) > 60
    for path, facts in eager.items():
        assert lazy[path] == facts, path


@pytest.mark.parametrize("args", [["--help"], ["deploy", "--help"], ["env", "set", "--help"], ["app", "ls", "--help"]])
def test_help_text_is_the_same_as_typers(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    texts = []
    for root in (typer.main.get_command(app), command_tree.build(app)):
        with pytest.raises(SystemExit) as exit_info:
            root.main(args=args, prog_name="rhone", standalone_mode=True, obj=Invocation(Environment(environ={})))
        assert exit_info.value.code == 0
        texts.append(capsys.readouterr().out)
    assert texts[0] == texts[1]
    assert "Usage: rhone" in texts[0]


class _Counting:
    """Counts the commands and groups typer is asked to build, by name."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.commands: list[str] = []
        self.groups: list[str] = []
        build_command = typer_main.get_command_from_info
        build_group = command_tree._group

        def counting_command(command_info: Any, **settings: Any) -> Any:
            command = build_command(command_info, **settings)
            self.commands.append(command.name)
            return command

        def counting_group(group_info: Any, **settings: Any) -> Any:
            group = build_group(group_info, **settings)
            self.groups.append(group.name)
            return group

        monkeypatch.setattr(typer_main, "get_command_from_info", counting_command)
        monkeypatch.setattr(command_tree, "_group", counting_group)


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    status = main(args, Environment(environ={"HOME": "/nonexistent", "RHONE_NO_INPUT": "1"}))
    return status, capsys.readouterr().out  # click writes help to sys.stdout


def _top_level() -> tuple[list[str], list[str]]:
    commands = [c.name or typer_main.get_command_name(c.callback.__name__) for c in app.registered_commands]
    groups = [typer_main.solve_typer_info_defaults(g).name for g in app.registered_groups]
    return commands, groups


def test_top_level_help_builds_only_the_first_level(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    everything = _walk(typer.main.get_command(app))
    counted = _Counting(monkeypatch)
    status, out = _run(["--help"], capsys)
    assert status == 0 and "deploy" in out
    commands, groups = _top_level()
    # Every first-level entry is built once (its short help is listed); no command inside a group is.
    assert sorted(counted.commands) == sorted(commands)
    assert sorted(counted.groups) == sorted(["rhone", *groups])
    assert len(counted.commands) + len(counted.groups) < len(everything) / 2


def test_a_subcommands_help_builds_only_its_path(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    counted = _Counting(monkeypatch)
    status, out = _run(["deploy", "ls", "--help"], capsys)
    assert status == 0 and "Usage: rhone deploy ls" in out
    assert counted.groups == ["rhone", "deploy"]
    assert counted.commands == ["ls"]


def test_an_unknown_subcommand_is_a_usage_error_naming_the_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    counted = _Counting(monkeypatch)
    out, err = io.StringIO(), io.StringIO()
    status = main(["deploy", "lss"], Environment(stdout=out, stderr=err, environ={"HOME": "/nonexistent"}))
    assert status == 2
    assert "No such command 'lss'. Did you mean 'ls'?" in err.getvalue()
    assert "deploy" in counted.groups


def test_lazy_commands_mapping() -> None:
    calls: list[str] = []

    def builder(name: str) -> Any:
        def build() -> str:
            calls.append(name)
            return f"built {name}"

        return build

    commands = command_tree.LazyCommands({"b": builder("b"), "a": builder("a")})
    assert list(commands) == ["b", "a"] and len(commands) == 2 and "a" in commands and "z" not in commands
    assert calls == []  # names, order and membership build nothing
    assert commands["a"] == "built a" and commands["a"] == "built a"
    assert calls == ["a"]  # built once, then kept
    assert commands.get("z") is None
    commands["c"] = "given c"
    assert list(commands) == ["b", "a", "c"] and commands["c"] == "given c"
    del commands["b"]
    assert list(commands) == ["a", "c"] and commands["c"] == "given c"
    assert calls == ["a"]  # the given one was never built


def test_a_builder_that_fails_with_a_key_error_is_not_taken_for_an_unknown_name() -> None:
    def broken() -> Any:
        raise KeyError("a missing setting")

    commands = command_tree.LazyCommands({"broken": broken})
    with pytest.raises(RuntimeError, match="building the command 'broken' failed"):
        commands.get("broken")  # Click looks commands up with .get, which would turn a KeyError into None
    assert commands.get("other") is None

"""Answer shell completion requests (`_RHONE_COMPLETE=complete_bash|complete_zsh|complete_fish`).

The scripts under `completions/` are typer's (`rhone completion SHELL` prints them); on every TAB they call back into
`rhone` with the words typed so far. typer would answer by parsing those words through the full command machinery,
which coerces every option value with pydantic (~65 ms per TAB). Completion only needs names, so this module walks
the command tree itself and never converts a value: a TAB costs little more than `rhone --help`.
"""

from __future__ import annotations

import enum
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

HELP_OPTIONS = ("--help", "-h")  # click adds these at parse time, so they are not in `params`


@dataclass(frozen=True)
class Candidate:
    value: str
    help: str = ""


def split_words(text: str) -> list[str]:
    """Split a command line like a shell would, tolerating an unfinished quote in the word being typed."""
    lexer = shlex.shlex(text, posix=True)
    lexer.whitespace_split = True
    lexer.commenters = ""
    words: list[str] = []
    try:
        for word in lexer:
            words.append(word)
    except ValueError:
        words.append(lexer.token)
    return words


def _short_help(text: str | None) -> str:
    text = (text or "").strip().split("\n\n")[0].replace("\n", " ")
    return text if len(text) <= 60 else text[:57].rstrip() + "..."


def _visible_options(command: Any) -> list[Any]:
    return [p for p in command.params if p.param_type_name == "option" and not p.hidden]


def _takes_value(option: Any) -> bool:
    return not (option.is_flag or getattr(option, "count", False))


def _choices(param: Any) -> list[str]:
    choices = getattr(getattr(param, "type", None), "choices", None)  # typer < 0.29: a Click Choice
    if choices:
        return [str(getattr(choice, "value", choice)) for choice in choices]
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)  # typer >= 0.29
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return [str(member.value) for member in annotation]
    return []


def candidates(
    root: Any, args: list[str], incomplete: str, environ: Mapping[str, str] | None = None
) -> list[Candidate]:
    """What may come next after `args` (the words before the one being typed). With `environ`, values of ids and
    names come from the API too (rhone_cli/completion_values.py), in the API's order (newest first)."""
    command = root
    chain = [root]  # options of every command on the path are accepted (root options are global)
    positional = 0
    pending: Any = None  # an option waiting for its value
    for arg in args:
        if pending is not None:
            pending = None
            continue
        if arg == "--":
            break
        if arg.startswith("-") and len(arg) > 1:
            name = arg.split("=", 1)[0]
            option = next((o for c in chain for o in _visible_options(c) if name in o.opts + o.secondary_opts), None)
            if option is not None and _takes_value(option) and "=" not in arg:
                pending = option
            continue
        subcommands = getattr(command, "commands", None)
        if subcommands and arg in subcommands:
            command = subcommands[arg]
            chain.append(command)
            positional = 0
        else:
            positional += 1

    if pending is not None:
        return _values(pending, args, incomplete, environ)
    if "--" in args:
        return []  # everything after `--` is an argument, never an option
    if incomplete.startswith("-"):
        found = [Candidate(name, "Show help and exit.") for name in HELP_OPTIONS if name.startswith(incomplete)]
        for owner in reversed(chain):
            for option in _visible_options(owner):
                for name in option.opts + option.secondary_opts:
                    if name.startswith(incomplete) and name not in {c.value for c in found}:
                        found.append(Candidate(name, _short_help(option.help)))
        return found
    subcommands = getattr(command, "commands", None)
    if subcommands:
        return [
            Candidate(name, _short_help(sub.short_help or sub.help))
            for name, sub in subcommands.items()
            if name.startswith(incomplete) and not getattr(sub, "hidden", False)
        ]
    arguments = [p for p in command.params if p.param_type_name == "argument"]
    if positional < len(arguments):
        return _values(arguments[positional], args, incomplete, environ)
    return []


def _values(param: Any, args: list[str], incomplete: str, environ: Mapping[str, str] | None) -> list[Candidate]:
    """A parameter's fixed choices, else the ids or names the API has for it."""
    choices = _choices(param)
    if choices or environ is None:
        return [Candidate(c) for c in choices if c.startswith(incomplete)]
    from rhone_cli.completion_values import kind_of, values

    kind = kind_of(param)
    if kind is None:
        return []
    return [Candidate(value, note) for value, note in values(kind, args, environ) if value.startswith(incomplete)]


# -- the three shells' sides of typer's protocol -----------------------------------------------------------------
def _words_from_args_var(environ: Mapping[str, str]) -> tuple[list[str], str]:
    line = environ.get("_TYPER_COMPLETE_ARGS", "")
    words = split_words(line)[1:]
    if words and not line.endswith(" "):
        return words[:-1], words[-1]
    return words, ""


def _zsh_quote(text: str) -> str:
    return "'" + text.replace("\n", " ").replace("'", "'\\''") + "'"


def respond(instruction: str, environ: Mapping[str, str], root: Any) -> tuple[str, int]:
    """The text to print and the exit status for one completion request."""
    if instruction == "complete_bash":
        words = split_words(environ.get("COMP_WORDS", ""))
        cword = int(environ.get("COMP_CWORD", "0") or 0)
        incomplete = words[cword] if cword < len(words) else ""
        found = candidates(root, words[1:cword], incomplete, environ)
        return "\n".join(c.value for c in found), 0
    if instruction == "complete_zsh":
        args, incomplete = _words_from_args_var(environ)
        found = candidates(root, args, incomplete, environ)
        if not found:
            return "_files", 0
        # compadd -V: an unsorted group, so ids stay newest first (_describe would merge and sort values that share a
        # description); -l -d shows one per line with its description. Every word is single-quoted for the eval.
        values = " ".join(_zsh_quote(c.value) for c in found)
        if not any(c.help for c in found):
            return f"local -a _rhone_values=({values}); compadd -V rhone -a _rhone_values", 0
        width = max(len(c.value) for c in found)
        shown = " ".join(_zsh_quote(f"{c.value.ljust(width)}  -- {c.help}" if c.help else c.value) for c in found)
        arrays = f"local -a _rhone_values=({values}) _rhone_shown=({shown})"
        return f"{arrays}; compadd -V rhone -l -d _rhone_shown -a _rhone_values", 0
    if instruction == "complete_fish":
        args, incomplete = _words_from_args_var(environ)
        found = candidates(root, args, incomplete, environ)
        if environ.get("_TYPER_COMPLETE_FISH_ACTION") == "is-args":
            return "", 0 if found else 1
        return "\n".join(f"{c.value}\t{' '.join(c.help.split())}" if c.help else c.value for c in found), 0
    if instruction.startswith("source_"):
        from rhone_cli.commands.completion import script

        return script(instruction.removeprefix("source_")).rstrip("\n"), 0
    return f"rhone: unsupported completion request {instruction!r}", 1

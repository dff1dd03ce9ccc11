"""`rhone completion SHELL`: print the shell completion script (nothing is installed or edited for you)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from rhone_cli.commands._common import invocation

INSTALL_HINTS = {
    "bash": 'eval "$(rhone completion bash)"   # add to ~/.bashrc',
    "zsh": 'eval "$(rhone completion zsh)"    # add to ~/.zshrc after compinit',
    "fish": "rhone completion fish > ~/.config/fish/completions/rhone.fish",
}


class Shell(StrEnum):
    bash = "bash"
    zsh = "zsh"
    fish = "fish"


def script(shell: str) -> str:
    from typer.completion import get_completion_script

    from rhone_cli.main import COMPLETE_VAR

    return get_completion_script(prog_name="rhone", complete_var=COMPLETE_VAR, shell=shell).rstrip("\n") + "\n"


def register(root: typer.Typer) -> None:
    @root.command("completion")
    def completion(
        ctx: typer.Context, shell: Annotated[Shell, typer.Argument(help="bash, zsh or fish.", metavar="SHELL")]
    ) -> None:
        """Print the shell completion script for bash, zsh or fish."""
        inv = invocation(ctx)
        if inv.env.options.json:
            inv.out.result({"shell": shell.value, "script": script(shell.value)})
            return
        inv.env.stdout.write(script(shell.value))
        if inv.env.stdout_isatty:
            inv.out.info(f"To enable: {INSTALL_HINTS[shell.value]}")

"""`rhone completion SHELL`: print the shell completion script (nothing is installed or edited for you)."""

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


# rhone's own scripts (typer's protocol, variables and all): they ask the shell to keep rhone's order — ids come newest
# first — and keep rhone's stderr out of the prompt.
SCRIPTS = {
    "bash": """\
_rhone_completion() {
    local IFS=$'\\n'
    COMPREPLY=( $( env COMP_WORDS="${COMP_WORDS[*]}" \\
                   COMP_CWORD=$COMP_CWORD \\
                   _RHONE_COMPLETE=complete_bash $1 2>/dev/null ) )
    return 0
}

complete -o default -o nosort -F _rhone_completion rhone 2>/dev/null || complete -o default -F _rhone_completion rhone
""",
    "zsh": """\
#compdef rhone

_rhone_completion() {
  eval "$(env _TYPER_COMPLETE_ARGS="${words[1,$CURRENT]}" _RHONE_COMPLETE=complete_zsh rhone 2>/dev/null)"
}

compdef _rhone_completion rhone
""",
    "fish": """\
complete --command rhone --no-files --keep-order --arguments "(env _RHONE_COMPLETE=complete_fish \\
_TYPER_COMPLETE_FISH_ACTION=get-args _TYPER_COMPLETE_ARGS=(commandline -cp) rhone 2>/dev/null)" --condition "env \\
_RHONE_COMPLETE=complete_fish _TYPER_COMPLETE_FISH_ACTION=is-args _TYPER_COMPLETE_ARGS=(commandline -cp) rhone \\
2>/dev/null"
""",
}


def script(shell: str) -> str:
    return SCRIPTS[shell]


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

"""`rhone config validate` of a valid file without the command tree or pydantic: the same output, minus their start-up.

A CI lint step runs `rhone config validate` on every push; importing typer, building the command tree and the
pydantic models costs several times the validation itself. `rhone_cli.entry` hands the arguments here first. Only
the plain forms (`[-C DIR] [--json] [-q] [--no-color] [--no-input] config validate [-f PATH]`, see
`rhone_cli.plain_invocation`) of a file that `rhone_cli.config.rules` plainly accepts are answered here: a missing or
unreadable file, a syntax error, any problem at all returns None, and the full CLI validates with the models and
reports every problem with its line, key and suggestion (the messages have one source).
"""

from __future__ import annotations

from rhone_cli import plain_invocation

# `typing` is for the type checker only: this module is on the start-up path of the commands answered without the
# command tree, where importing it costs ~2 ms (rhone_cli/plain_invocation.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

COMMAND = ["config", "validate"]
FILE_OPTION = {"-f": "--file", "--file": "--file"}


def run(argv: list[str]) -> int | None:
    """The exit code of `rhone config validate` answered here (0: valid), or None: the full CLI must answer."""
    parsed = plain_invocation.parse(argv, COMMAND, {}, FILE_OPTION)
    env = plain_invocation.environment(parsed) if parsed is not None else None
    if env is None:
        return None
    from pathlib import Path

    from rhone_cli.config.locate import find

    explicit = parsed.options.get("--file")
    if isinstance(explicit, str):
        path: Path | None = Path(explicit) if Path(explicit).is_absolute() else env.workdir / explicit
    else:
        path = find(env.workdir)
    from rhone_cli.config.rules import read_plainly_valid

    data = read_plainly_valid(path) if path is not None else None
    if data is None:
        return None
    return _answer(env, path, data["project"]["name"], data["app"]["name"])


def _answer(env, path: Path, project: str, app: str) -> int:
    from rhone_cli.errors import ExitCode, RhoneError
    from rhone_cli.output import Output

    out = Output(env)
    try:
        if env.options.json:
            out.json_document({"file": str(path), "valid": True, "problems": []})
        else:
            out.line(f"{path}: valid (project {project}, app {app})")
    except BrokenPipeError:  # the reader went away (`rhone config validate | head`), as the full CLI says
        return ExitCode.OK
    except KeyboardInterrupt:  # as the full CLI reports Ctrl-C: a message and exit 130, never a traceback
        return out.error(RhoneError("interrupted", code="interrupted", exit_code=ExitCode.INTERRUPTED))
    return ExitCode.OK

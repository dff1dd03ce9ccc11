"""`rhone artifact manifest` without the command tree: the same output, minus typer's start-up.

A warm manifest of thousands of files takes a few milliseconds once the stat cache answers; importing typer and
building the command tree takes ten times that. `rhone_cli.entry` hands the arguments here first. Only the plain
forms are answered (`[-C DIR] [--json] [-q] [--no-color] [--no-input] artifact manifest [--no-cache]`, see
`rhone_cli.plain_invocation`); anything else, and any failure, returns None and the full CLI runs instead.
"""

from __future__ import annotations

from rhone_cli import plain_invocation

COMMAND = ["artifact", "manifest"]


def run(argv: list[str]) -> int | None:
    """The exit code of `rhone artifact manifest` run here, or None: the full CLI must answer (and it computes
    everything again, so nothing this attempt did shows)."""
    parsed = plain_invocation.parse(argv, COMMAND, {"--no-cache": "--no-cache"}, {})
    env = plain_invocation.environment(parsed) if parsed is not None else None
    if env is None:
        return None
    return _answer(env, plain_invocation.workdir(parsed), use_cache="--no-cache" not in parsed.options)


def _answer(env, workdir: str, *, use_cache: bool) -> int | None:
    # `rhone_cli.errors` (an IntEnum: `enum` costs more CPU time than a warm walk of thousands of files) only when
    # something went wrong; ExitCode.OK is 0.
    from rhone_cli.output import Output
    from rhone_cli.services.artifacts import show_manifest

    out = Output(env)
    try:
        show_manifest(out, workdir, prebuilt=False, use_cache=use_cache)
    except BrokenPipeError:  # the reader went away (`rhone artifact manifest | head`), as the full CLI says
        return 0
    except KeyboardInterrupt:
        from rhone_cli.errors import ExitCode, RhoneError

        return out.error(RhoneError("interrupted", code="interrupted", exit_code=ExitCode.INTERRUPTED))
    except Exception:  # noqa: BLE001 - an invalid rhone.toml, an unreadable file: the full CLI says it its way
        from rhone_cli.errors import ExitCode

        # Once the document is out, only flushing stdout failed: there is nothing left to say on it.
        return ExitCode.FAILED if out.document_written else None
    return 0

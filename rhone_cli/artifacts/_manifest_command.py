"""`rhone artifact manifest` without the command tree: the same output, minus typer's start-up.

A warm manifest of thousands of files takes a few milliseconds once the stat cache answers; importing typer and
building the command tree takes ten times that. `rhone_cli.entry` hands the arguments here first. Only the plain
forms are answered (`[-C DIR] [--json] [-q] [--no-color] [--no-input] artifact manifest [--no-cache]`, global
options before or after the command, with no environment variable this path does not read); anything else, and any
failure, returns None and the full CLI runs instead, so every message, error and exit code stays the one place
(`rhone_cli.main`) that defines them.
"""

from __future__ import annotations

COMMAND = ["artifact", "manifest"]
GLOBAL_FLAGS = frozenset({"--json", "--quiet", "-q", "--no-color", "--no-input"})
PROGRESS_MODES = frozenset({"auto", "plain", "jsonl", "none"})
# Read by the full CLI's start-up (a completion request, a value it validates): their presence sends it there.
FULL_CLI_VARIABLES = ("_RHONE_COMPLETE", "RHONE_REQUEST_TIMEOUT")


def parse(argv: list[str]) -> tuple[set[str], str | None, bool] | None:
    """(global flags, -C DIR, --no-cache) for the plain forms of `rhone artifact manifest`; None for any other."""
    flags: set[str] = set()
    cwd: str | None = None
    words: list[str] = []
    no_cache = False
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg in ("-C", "--cwd"):
            if index + 1 == len(argv):
                return None
            cwd = argv[index + 1]
            index += 1
        elif arg.startswith("--cwd="):
            cwd = arg.removeprefix("--cwd=")
        elif arg in GLOBAL_FLAGS:
            flags.add(arg)
        elif arg == "--no-cache" and words == COMMAND:
            no_cache = True
        elif arg.startswith("-") or len(words) == len(COMMAND):
            return None
        else:
            words.append(arg)
        index += 1
    if words != COMMAND or cwd == "":
        return None
    return flags, cwd, no_cache


def run(argv: list[str]) -> int | None:
    """The exit code of `rhone artifact manifest` run here, or None: the full CLI must answer (and it computes
    everything again, so nothing this attempt did shows)."""
    parsed = parse(argv)
    if parsed is None:
        return None
    flags, cwd, no_cache = parsed
    from pathlib import Path

    from rhone_cli.environment import Environment, _truthy

    env = Environment()
    mode = env.environ.get("RHONE_PROGRESS", "auto")
    if mode not in PROGRESS_MODES or any(name in env.environ for name in FULL_CLI_VARIABLES):
        return None
    options = env.options
    options.json = "--json" in flags
    options.quiet = "--quiet" in flags or "-q" in flags
    options.no_color = "--no-color" in flags
    options.no_input = "--no-input" in flags or _truthy(env.environ.get("RHONE_NO_INPUT"))
    options.progress = "none" if (options.quiet and mode == "auto") else mode
    options.cwd = Path(cwd) if cwd is not None else None
    if options.cwd is not None and not env.workdir.is_dir():
        return None
    return _answer(env, use_cache=not no_cache)


def _answer(env, *, use_cache: bool) -> int | None:
    from rhone_cli.errors import ExitCode, RhoneError
    from rhone_cli.output import Output
    from rhone_cli.services.artifacts import show_manifest

    out = Output(env)
    try:
        show_manifest(out, env.workdir, prebuilt=False, use_cache=use_cache)
    except BrokenPipeError:  # the reader went away (`rhone artifact manifest | head`), as the full CLI says
        return ExitCode.OK
    except KeyboardInterrupt:
        return out.error(RhoneError("interrupted", code="interrupted", exit_code=ExitCode.INTERRUPTED))
    except Exception:  # noqa: BLE001 - an invalid rhone.toml, an unreadable file: the full CLI says it its way
        # Once the document is out, only flushing stdout failed: there is nothing left to say on it.
        return ExitCode.FAILED if out.document_written else None
    return ExitCode.OK

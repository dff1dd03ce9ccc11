"""The `rhone` entry point: the command tree, the global options, and the one place exceptions become exit codes.

Start-up budget: this module and every command module import only typer and the standard library at top level.
httpx, keyring, rich tables and pydantic models are imported inside the commands that use them (a test checks
`sys.modules` after `--help`, `--version` and a completion request).
"""

import contextlib
import math
import os
import sys
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from rhone_cli import __version__, command_tree
from rhone_cli.commands._common import REQUEST_TIMEOUT_RANGE, new_typer, seconds_problem
from rhone_cli.environment import Environment, _truthy
from rhone_cli.errors import ExitCode, Interrupted, RhoneError
from rhone_cli.invocation import ClientFactory, Invocation

COMPLETE_VAR = "_RHONE_COMPLETE"
HELP_TOPICS = frozenset({"exit-codes", "environment"})  # the pages of `rhone help`; any other word names a command

# Global options accepted before or after the command (`rhone --json app ls` == `rhone app ls --json`).
GLOBAL_FLAGS = frozenset({"--json", "--quiet", "-q", "--verbose", "-v", "--no-color", "--no-input"})
GLOBAL_VALUE_OPTIONS = frozenset(
    {"--profile", "--api-url", "--token", "-C", "--cwd", "--request-timeout", "--progress", "--ca-bundle", "--jq"}
)


class ProgressMode(StrEnum):
    auto = "auto"
    plain = "plain"
    jsonl = "jsonl"
    none = "none"


app = new_typer(
    name="rhone",
    help=(
        "rhone: deploy and operate Vango apps on Rhone Cloud, or on Rhone Local (`rhone local up`).\n\n"
        "Global options may be given before or after the command. Exit codes: `rhone help exit-codes`."
    ),
    no_args_is_help=True,
    add_completion=False,  # `rhone completion SHELL` prints scripts without guessing the shell or editing dotfiles
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"rhone {__version__}")
        raise typer.Exit(0)


@app.callback()
def root(
    ctx: typer.Context,
    json_output: Annotated[
        bool, typer.Option("--json", help="Write exactly one JSON document to stdout (results or the error).")
    ] = False,
    jq: Annotated[
        str | None,
        typer.Option(
            "--jq",
            help="Filter the --json result with a jq program; strings print raw, one result per line (implies "
            "--json; errors go to stderr).",
            metavar="EXPR",
        ),
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Only results and errors; no progress or hints.")
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log requests to stderr (tokens redacted); tracebacks on errors.")
    ] = False,
    no_color: Annotated[bool, typer.Option("--no-color", help="No colors (also NO_COLOR, TERM=dumb).")] = False,
    no_input: Annotated[
        bool,
        typer.Option("--no-input", help="Never prompt; fail naming the missing flag (implied by CI or no TTY)."),
    ] = False,
    profile: Annotated[
        str | None, typer.Option("--profile", help="Profile to use [env: RHONE_PROFILE].", metavar="NAME")
    ] = None,
    api_url: Annotated[
        str | None, typer.Option("--api-url", help="API base URL [env: RHONE_API_URL].", metavar="URL")
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token", help="API token; prefer the RHONE_TOKEN env var, which stays out of ps.", metavar="TOKEN"
        ),
    ] = None,
    cwd: Annotated[Path | None, typer.Option("--cwd", "-C", help="Run as if started in DIR.", metavar="DIR")] = None,
    request_timeout: Annotated[
        float | None,
        typer.Option(
            "--request-timeout",
            help="Seconds per HTTP request, 0.1 to 3600 [env: RHONE_REQUEST_TIMEOUT; default 30].",
            metavar="SECONDS",
        ),
    ] = None,
    ca_bundle: Annotated[
        str | None,
        typer.Option(
            "--ca-bundle",
            help="PEM file of CA certificates to trust besides the system's [env: RHONE_CA_BUNDLE, "
            "REQUESTS_CA_BUNDLE, SSL_CERT_FILE].",
            metavar="FILE",
        ),
    ] = None,
    progress: Annotated[
        ProgressMode | None,
        typer.Option(
            "--progress", help="Progress on stderr: auto, plain, jsonl or none [env: RHONE_PROGRESS].", metavar="MODE"
        ),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", help="Print the version and exit.", callback=_version_callback, is_eager=True)
    ] = False,
) -> None:
    invocation: Invocation = ctx.obj
    env = invocation.env
    options = env.options
    options.json = json_output or jq is not None
    options.filtered = jq is not None
    if jq is not None:
        from rhone_cli.output import compile_jq

        options.jq = compile_jq(jq)
    options.quiet = quiet
    options.verbose = verbose
    options.no_color = no_color
    options.no_input = no_input or _truthy(env.environ.get("RHONE_NO_INPUT"))
    options.profile = profile
    options.api_url = api_url
    options.token = token
    options.cwd = cwd
    options.ca_bundle = ca_bundle
    if token:
        env.secrets.add(token)
    options.request_timeout = _request_timeout(request_timeout, env.environ.get("RHONE_REQUEST_TIMEOUT"))
    mode = progress.value if progress else env.environ.get("RHONE_PROGRESS", "auto")
    if mode not in {m.value for m in ProgressMode}:
        raise RhoneError(
            f"RHONE_PROGRESS must be one of auto, plain, jsonl, none (not {mode!r})",
            code="usage_error",
            exit_code=ExitCode.USAGE,
        )
    options.progress = "none" if (quiet and mode == "auto") else mode
    if cwd is not None and not env.workdir.is_dir():
        raise RhoneError(f"-C {cwd}: no such directory", code="usage_error", exit_code=ExitCode.USAGE)


def _register_commands(root: typer.Typer) -> None:
    from rhone_cli.commands import (
        api,
        app_cmd,
        artifact,
        auth,
        completion,
        config,
        deploy,
        env_cmd,
        help_cmd,
        init,
        local,
        logs,
        op,
        project,
        promote,
        region,
        route,
        status,
        workspace,
    )

    auth.register(root)
    root.add_typer(auth.auth_app)
    init.register(root)
    for module in (workspace, project, app_cmd, env_cmd, deploy):
        root.add_typer(module.app)
    promote.register(root)
    logs.register(root)
    status.register(root)
    for module in (route, region, op, artifact, local, config, help_cmd):
        root.add_typer(module.app)
    api.register(root)
    completion.register(root)


_register_commands(app)


def _request_timeout(flag: float | None, variable: str | None) -> float:
    """--request-timeout, else RHONE_REQUEST_TIMEOUT, else 30: finite and within REQUEST_TIMEOUT_RANGE."""
    source, value = "--request-timeout", flag
    if flag is None:
        if not variable:
            return 30.0
        source = "RHONE_REQUEST_TIMEOUT"
        try:
            value = float(variable)
        except ValueError:
            value = math.nan
    problem = seconds_problem(value, REQUEST_TIMEOUT_RANGE)
    if problem:
        shown = variable if flag is None else f"{flag:g}"
        raise RhoneError(
            f"{source} {problem}, not {shown!r}",
            code="usage_error",
            exit_code=ExitCode.USAGE,
            hint="give the seconds one HTTP request may take, e.g. --request-timeout 30",
        )
    return value


def help_as_command(args: list[str]) -> list[str]:
    """`rhone help deploy [ls]` means `rhone deploy [ls] --help` (as in git); help's own topics stay topics."""
    index = 0
    while index < len(args) and args[index].startswith("-") and args[index] != "--":
        index += 2 if args[index] in GLOBAL_VALUE_OPTIONS else 1
    if args[index : index + 1] != ["help"] or len(args) <= index + 1:
        return args
    topic = args[index + 1]
    if topic.startswith("-") or topic in HELP_TOPICS:
        return args
    return [*args[:index], *args[index + 1 :], "--help"]


def hoist_global_options(argv: list[str]) -> list[str]:
    """Move global options found after the command to the front, so they work in either position."""
    hoisted: list[str] = []
    rest: list[str] = []
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg == "--":
            rest.extend(argv[index:])
            break
        name = arg.split("=", 1)[0]
        if arg in GLOBAL_FLAGS or (name in GLOBAL_VALUE_OPTIONS and "=" in arg and name.startswith("--")):
            hoisted.append(arg)
        elif arg in GLOBAL_VALUE_OPTIONS and index + 1 < len(argv):
            hoisted.extend(argv[index : index + 2])
            index += 1
        else:
            rest.append(arg)
        index += 1
    return hoisted + rest


@contextlib.contextmanager
def _interrupts_raise() -> Iterator[None]:
    """Ctrl-C and SIGTERM (a CI runner cancelling the job, `timeout`, `kill`) raise `Interrupted` wherever the main
    thread is, for the whole command: before, during and after any operation."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be installed from the main thread
        return

    def interrupt(signum: int, frame: object) -> None:
        raise Interrupted(signum)

    # Python runs a signal's handler at the next bytecode of the main thread, which may be inside a finalizer
    # (`__del__`, a weakref callback) during a garbage collection: an exception raised there is printed as "ignored"
    # and dropped, and the main thread goes back to the request it was blocked in, for as long as that request's
    # timeout. When an interruption is dropped that way, deliver the signal again: it lands outside the finalizer.
    previous_hook = sys.unraisablehook
    redeliveries: list[threading.Timer] = []

    def redeliver_lost_interruptions(unraisable: object) -> None:
        lost = getattr(unraisable, "exc_value", None)
        if isinstance(lost, Interrupted):
            # From another thread, a moment later: sent from here, the handler would run inside this hook and be
            # dropped again.
            main = threading.main_thread().ident or 0
            again = threading.Timer(0.01, signal.pthread_kill, (main, lost.signum))
            redeliveries.append(again)
            again.start()
            return
        previous_hook(unraisable)  # type: ignore[arg-type]

    previous = {signum: signal.signal(signum, interrupt) for signum in (signal.SIGINT, signal.SIGTERM)}
    sys.unraisablehook = redeliver_lost_interruptions
    try:
        yield
    finally:
        sys.unraisablehook = previous_hook
        for again in redeliveries:
            again.cancel()  # the interruption arrived: no signal may outlive rhone's handlers
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _interrupted_message(interrupted: Interrupted, operations: list[str]) -> RhoneError:
    """An interruption the operation waiter did not turn into a resume message: no operation was being waited for
    (those it started before had finished)."""
    import signal

    name = "Ctrl-C" if interrupted.signum == signal.SIGINT else signal.Signals(interrupted.signum).name
    when = f"after {', '.join(operations)} finished" if operations else "before rhone saw an operation start"
    return RhoneError(
        f"interrupted ({name}) {when}; no operation of this command is running on the server",
        code="interrupted",
        exit_code=ExitCode.INTERRUPTED,
        hint="nothing needs resuming; if a request was on its way, `rhone op ls` shows whatever it started",
    )


def main(
    argv: list[str] | None = None, env: Environment | None = None, *, client_factory: ClientFactory | None = None
) -> int:
    """Run rhone with `argv` in `env` and return the exit code (never raises, never calls sys.exit). Every API client
    of the run comes from `client_factory` (`rhone_cli.invocation.ClientFactory`; default: rhone's HTTP client), so
    a test can run any command against any transport, an in-process Rhone Local included."""
    env = env or Environment()
    invocation = Invocation(env, client_factory=client_factory)
    args = help_as_command(hoist_global_options(list(sys.argv[1:] if argv is None else argv)))
    before_command = args[: next((i for i, a in enumerate(args) if a == "--"), len(args))]
    env.options.filtered = any(a == "--jq" or a.startswith("--jq=") for a in before_command)
    env.options.json = "--json" in before_command or env.options.filtered
    env.options.verbose = "--verbose" in before_command or "-v" in before_command
    command = command_tree.build(app)
    if os.environ.get(COMPLETE_VAR):
        # A shell asking for completions (see rhone_cli/completion.py for why rhone answers these itself).
        from rhone_cli.completion import respond

        text, status = respond(os.environ[COMPLETE_VAR], os.environ, command)
        if text:
            env.stdout.write(text + "\n")
        return status
    try:
        with _interrupts_raise():
            result = command.main(
                args=args, prog_name="rhone", standalone_mode=False, obj=invocation, complete_var=COMPLETE_VAR
            )
        return result if isinstance(result, int) else 0
    except RhoneError as error:
        return invocation.out.error(error)
    except Interrupted as interrupted:
        return invocation.out.error(_interrupted_message(interrupted, invocation.operations))
    except typer.TyperException as error:  # typer's (vendored Click) usage errors: bad flags, missing args
        if env.options.json:
            return invocation.out.error(
                RhoneError(
                    error.format_message(),
                    code="usage_error",
                    exit_code=ExitCode.USAGE,
                    hint="see `rhone --help` or `rhone COMMAND --help`",
                )
            )
        error.show(file=env.stderr)
        return ExitCode.USAGE if error.exit_code == 2 else error.exit_code
    except (typer.Abort, KeyboardInterrupt):
        return invocation.out.error(RhoneError("interrupted", code="interrupted", exit_code=ExitCode.INTERRUPTED))
    except BrokenPipeError:
        # The reader went away (`rhone ... | head`): not our failure, and nothing more to say.
        return ExitCode.OK
    except Exception as error:  # noqa: BLE001 - the last line of defence: a message, never a traceback
        if env.options.verbose:
            import traceback

            traceback.print_exc(file=env.stderr)
        return invocation.out.error(
            RhoneError(
                f"unexpected error: {type(error).__name__}: {error}",
                code="internal_error",
                exit_code=ExitCode.FAILED,
                hint="rerun with --verbose for the traceback, and report it",
            )
        )
    finally:
        invocation.close()

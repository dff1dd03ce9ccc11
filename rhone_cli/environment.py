"""The `Environment`: everything a command may touch outside its own arguments.

Streams, process environment variables, the working directory and the global options travel together in one
object, so every command runs the same way under a terminal, in CI, or in a test that hands it `io.StringIO`
streams. Commands never reach for `sys.stdout` or `os.environ` themselves.
"""

from __future__ import annotations

import os
import sys

# `typing` is for the type checker only: this module is on the start-up path of the commands answered without the
# command tree, where importing it costs ~2 ms (rhone_cli/plain_invocation.py). `pathlib` (which imports `re`, `enum`,
# `urllib.parse` and `ipaddress`) costs more than a warm `artifact manifest`'s walk: it is imported when a `Path` is
# first asked for (`cwd`, `workdir`), which that command's fast path never does.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any, TextIO


def _truthy(value: str | None) -> bool:
    return value is not None and value.strip().lower() not in ("", "0", "false", "no", "off")


class GlobalOptions:
    """The options every command accepts (PRODUCT.md §4), after environment variables were applied."""

    # A plain class, not a dataclass: `dataclasses` imports `inspect` (and with it ast, dis, tokenize), a good part of
    # the start-up of the commands answered without the command tree (rhone_cli/plain_invocation.py).
    def __init__(self) -> None:
        self.json = False
        self.quiet = False
        self.verbose = False
        self.no_color = False
        self.no_input = False
        self.profile: str | None = None
        self.api_url: str | None = None
        self.token: str | None = None
        self.cwd: Path | str | None = None  # a str only where the plain-form fast path set it (plain_invocation.py)
        self.request_timeout = 30.0
        self.ca_bundle: str | None = None
        self.filtered = False  # --jq was given (it implies json; failures then go to stderr)
        self.jq: Any = None  # the compiled --jq program
        self.progress = "auto"  # auto | plain | jsonl | none


class Environment:
    def __init__(
        self,
        stdin: TextIO | None = None,
        stdout: TextIO | None = None,
        stderr: TextIO | None = None,
        environ: dict[str, str] | None = None,
        cwd: Path | None = None,
        options: GlobalOptions | None = None,
        http_transport: Any = None,
    ) -> None:
        self.stdin = sys.stdin if stdin is None else stdin
        self.stdout = sys.stdout if stdout is None else stdout
        self.stderr = sys.stderr if stderr is None else stderr
        self.environ = dict(os.environ) if environ is None else environ
        self._cwd = cwd
        self.options = GlobalOptions() if options is None else options
        # Warnings already shown in this process (some, like the credentials-file warning, must appear once).
        self.warned: set[str] = set()
        # Secret values seen in this process (tokens); the output module masks them in everything it writes.
        self.secrets: set[str] = set()
        # The network: None for real sockets; tests hand in an httpx transport (an in-process API, or a recorder).
        self.http_transport = http_transport

    @property
    def cwd(self) -> Path:
        """The process's working directory when this environment was first asked for it, unless one was given."""
        if self._cwd is None:
            from pathlib import Path

            self._cwd = Path.cwd()
        return self._cwd

    @staticmethod
    def _isatty(stream: TextIO) -> bool:
        try:
            return stream.isatty()
        except (AttributeError, ValueError):
            return False

    @property
    def stdin_isatty(self) -> bool:
        return self._isatty(self.stdin)

    @property
    def stdout_isatty(self) -> bool:
        return self._isatty(self.stdout)

    @property
    def stderr_isatty(self) -> bool:
        return self._isatty(self.stderr)

    @property
    def is_ci(self) -> bool:
        return _truthy(self.environ.get("CI"))

    @property
    def can_prompt(self) -> bool:
        """Prompting is allowed only for a person at a terminal who did not opt out."""
        return not (self.options.no_input or self.is_ci or not self.stdin_isatty or self.options.json)

    @property
    def color(self) -> bool:
        return not (self.options.no_color or "NO_COLOR" in self.environ or self.environ.get("TERM") == "dumb")

    @property
    def workdir(self) -> Path:
        """The directory project-relative things resolve against (`-C/--cwd`, else the process cwd)."""
        from pathlib import Path

        if self.options.cwd is None:
            return self.cwd
        path = Path(self.options.cwd).expanduser()
        return path if path.is_absolute() else self.cwd / path

"""The `Environment`: everything a command may touch outside its own arguments.

Streams, process environment variables, the working directory and the global options travel together in one
object, so every command runs the same way under a terminal, in CI, or in a test that hands it `io.StringIO`
streams. Commands never reach for `sys.stdout` or `os.environ` themselves.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO


def _truthy(value: str | None) -> bool:
    return value is not None and value.strip().lower() not in ("", "0", "false", "no", "off")


@dataclass
class GlobalOptions:
    """The options every command accepts (PRODUCT.md §4), after environment variables were applied."""

    json: bool = False
    quiet: bool = False
    verbose: bool = False
    no_color: bool = False
    no_input: bool = False
    profile: str | None = None
    api_url: str | None = None
    token: str | None = None
    cwd: Path | None = None
    request_timeout: float = 30.0
    ca_bundle: str | None = None
    filtered: bool = False  # --jq was given (it implies json; failures then go to stderr)
    jq: Any = None  # the compiled --jq program
    progress: str = "auto"  # auto | plain | jsonl | none


@dataclass
class Environment:
    stdin: TextIO = field(default_factory=lambda: sys.stdin)
    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    environ: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    cwd: Path = field(default_factory=Path.cwd)
    options: GlobalOptions = field(default_factory=GlobalOptions)
    # Warnings already shown in this process (some, like the credentials-file warning, must appear once).
    warned: set[str] = field(default_factory=set)
    # Secret values seen in this process (tokens); the output module masks them in everything it writes.
    secrets: set[str] = field(default_factory=set)
    # The network: None for real sockets; tests hand in an httpx transport (an in-process API, or a recorder).
    http_transport: Any = None

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
        if self.options.cwd is None:
            return self.cwd
        path = self.options.cwd.expanduser()
        return path if path.is_absolute() else self.cwd / path

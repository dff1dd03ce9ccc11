"""The shapes of every `--json` document rhone prints, as pydantic models.

`schemas/*.schema.json` are generated from these (`python -m rhone_cli.schemas`), and tests validate real command
output against the committed schemas. Commands build plain dicts (no pydantic on their start-up path); these
models are the contract those dicts are checked against. Field names are snake_case and stable.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorBody(_Doc):
    code: str = Field(description="Stable machine-readable error code, e.g. invalid_config, route_epoch_conflict.")
    message: str
    request_id: str | None = Field(description="The API request id, when a request was made.")
    operation_id: str | None
    retryable: bool
    hint: str | None
    exit_code: int = Field(description="The process exit code (see `rhone help exit-codes`).")
    details: dict[str, Any] | None = None


class ErrorDocument(_Doc):
    """Written to stdout instead of a result when a command fails under --json."""

    error: ErrorBody


class ConfigProblem(_Doc):
    file: str
    line: int | None
    column: int | None
    key: str | None = Field(description="Dotted key path, e.g. build.include[1].")
    message: str
    suggestion: str | None = Field(description="A close valid key or value ('did you mean').")
    text: str = Field(description="The whole problem as one human line: file:line: key: message.")


class ConfigValidate(_Doc):
    """`rhone config validate --json` (exit 0 when valid, 2 when not)."""

    file: str
    valid: bool
    problems: list[ConfigProblem]


class ConfigShow(_Doc):
    """`rhone config show --json`, and `rhone init --json`: the resolved rhone.toml with defaults filled in."""

    file: str
    config: dict[str, Any]


class Identity(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str | None = None
    kind: str | None = None
    name: str | None = None


class AuthStatus(_Doc):
    """`rhone whoami --json` and `rhone login --status --json`."""

    profile: str
    api_url: str
    workspace: str | None
    credential_source: Literal["flag", "env", "keyring", "file"]
    credentials_file: str | None
    identity: Identity | None


class Login(_Doc):
    """`rhone login --json`."""

    profile: str
    api_url: str
    credential_store: Literal["keyring", "file"]
    credentials_file: str | None
    verified: bool
    identity: Identity | None


class Logout(_Doc):
    """`rhone logout --json`."""

    profile: str
    removed_from: list[Literal["keyring", "file"]]


class ExitCodeRow(_Doc):
    code: int
    name: str
    meaning: str


class HelpExitCodes(_Doc):
    """`rhone help exit-codes --json`."""

    exit_codes: list[ExitCodeRow]


class EnvironmentVariable(_Doc):
    name: str
    meaning: str


class HelpEnvironment(_Doc):
    """`rhone help environment --json`."""

    environment: list[EnvironmentVariable]


# file name in schemas/ -> model
DOCUMENTS: dict[str, type[BaseModel]] = {
    "error.schema.json": ErrorDocument,
    "config-validate.schema.json": ConfigValidate,
    "config-show.schema.json": ConfigShow,
    "auth-status.schema.json": AuthStatus,
    "login.schema.json": Login,
    "logout.schema.json": Logout,
    "help-exit-codes.schema.json": HelpExitCodes,
    "help-environment.schema.json": HelpEnvironment,
}

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
    """`rhone config show --json`: the resolved rhone.toml with defaults filled in."""

    file: str
    config: dict[str, Any]


class InitLink(_Doc):
    api_url: str
    workspace_id: str
    project_id: str
    project: str
    app_id: str
    app: str
    created: list[Literal["project", "app"]] = Field(description="What `rhone init` had to create.")


class Init(_Doc):
    """`rhone init --json`: the file written (or linked) and, when linked, the ids in .rhone/link.json."""

    file: str
    config: dict[str, Any]
    link: InitLink | None


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
    expires_at: str | None = Field(
        None, description="When the stored token expires (a device login; rhone refreshes it), else null."
    )


class AuthToken(_Doc):
    """`rhone auth token --json`: the token commands would send now (refreshed if it was about to expire)."""

    token: str
    source: Literal["flag", "env", "keyring", "file"]
    expires_at: str | None


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


class LocalSandbox(_Doc):
    mode: Literal["bubblewrap", "none"]
    reason: str | None = Field(description="Why builds and apps run without a sandbox (mode none).")
    read_only_paths: list[str] = Field(description="Host paths exposed read-only (`--sandbox-ro`).")


class LocalStatus(_Doc):
    """`rhone local status --json` (and `rhone local up --json`, which adds `started` and `profile`)."""

    running: bool
    pid: int | None
    api_url: str | None
    edge_port: int | None
    version: str | None
    data_dir: str
    log_file: str
    stale_pid_file: bool
    sandbox: LocalSandbox | None = Field(None, description="How builds and apps run (null when not running).")
    node: str | None = Field(None, description="The running server's node name (`--node`; null when not running).")
    roles: list[str] | None = Field(None, description="The running server's roles (`--role`; null when not running).")
    disk: dict[str, int] | None = Field(
        None, description="Bytes per kind: builds, allocations, blobs, caches, database (null without a data dir)."
    )
    started: bool | None = None
    profile: str | None = None


class LocalDown(_Doc):
    """`rhone local down --json`."""

    stopped: bool
    was_running: bool
    pid: int | None
    forced: bool | None = None
    stale_pid_file: bool | None = Field(
        None, description="When not running: a pid file or server.json named a process that is not this server."
    )
    data_dir: str


class ManifestFile(_Doc):
    path: str = Field(
        min_length=1,
        max_length=1024,
        description="Normalized root-relative POSIX path (no '..', no leading '/', no empty segment, no backslash).",
    )
    size: int = Field(ge=0, description="Size in bytes.")
    mode: Literal["644", "755"] = Field(description="755 when the owner's exec bit is set; no other mode bits count.")
    sha256: str = Field(pattern="^[0-9a-f]{64}$", description="sha256 of the content, lowercase hex.")


class ArtifactManifest(_Doc):
    """The manifest itself: its canonical JSON (sorted keys, no whitespace, UTF-8) is what the digest hashes."""

    version: Literal[1]
    files: list[ManifestFile] = Field(max_length=100_000, description="Every file, sorted by path.")


class ManifestDocument(_Doc):
    """`rhone artifact manifest --json`: the manifest of the project directory (or build output) and its digest."""

    digest: str = Field(
        pattern="^sha256:[0-9a-f]{64}$", description="sha256 of the manifest's canonical JSON, as sha256:<hex>."
    )
    root: str = Field(description="The directory the manifest lists (absolute, symlinks resolved).")
    file_count: int = Field(ge=0)
    total_size: int = Field(ge=0, description="Sum of the file sizes in bytes.")
    hashed: int = Field(ge=0, description="Files read and hashed by this run; the others came from the stat cache.")
    manifest: ArtifactManifest


class DrainingAllocation(_Doc):
    id: str
    open_connections: int = Field(description="Connections the edge still relayed to it when the route moved.")
    timeout: float = Field(description="Seconds it keeps them (`[process] drain_timeout`) before it is cut.")
    deadline: str = Field(description="When it is cut if connections are still open.")


class ExplainRule(_Doc):
    pattern: str = Field(description="The rule as written.")
    source: str = Field(description="Where: <file>:<line> (.gitignore, .rhoneignore), build.exclude:<n>, <defaults>.")
    negated: bool = Field(description="A `!` rule, which re-includes.")


class ManifestExplain(_Doc):
    """`rhone artifact manifest --explain PATH --json`: why PATH is in the manifest or out of it."""

    root: str
    path: str = Field(description="PATH relative to the manifest's root.")
    included: bool
    reason: str
    rule: ExplainRule | None = Field(description="The rule that decided, when one did.")


class RouteMove(_Doc):
    """`rhone promote --json`, `rhone rollback --json` (waited): what the operation did to the route."""

    route_key: str
    environment: str
    epoch: int = Field(description="The route's new epoch (strictly increasing per route key).")
    deployment_id: str
    artifact_digest: str
    previous_owner: str | None
    draining: list[DrainingAllocation] = Field(
        default_factory=list,
        description="The previous owner's allocations as they started draining; the command does not wait for them.",
    )
    live_sessions: Literal["resume", "restart"] | None = Field(
        None,
        description="What the move means for sessions live on the previous owner: resume (from the environment's "
        "session store), restart (no session store: their state is lost), or null (no previous owner, or an app "
        "without server sessions).",
    )
    url: str | None
    operation_id: str = Field(description="The promotion or rollback operation.")
    state: Literal["healthy", "rolled_back"]
    changed: bool = Field(
        description="False when the deployment already served the environment: the route, its epoch and its "
        "history are unchanged."
    )


class InstanceCount(_Doc):
    ready: int = Field(ge=0)
    total: int = Field(ge=0, description="Live allocations: planned, pulling, starting, ready or draining.")


class DeploymentSummary(_Doc):
    id: str
    state: str
    created_at: str


class EnvironmentStatus(_Doc):
    environment: str
    frozen: bool
    approval_required: bool
    route_owner: str | None = Field(description="The deployment that owns the environment's route, if any.")
    epoch: int | None = Field(description="The route's epoch.")
    instances: InstanceCount
    latest_deployment: DeploymentSummary | None = Field(description="The environment's newest deployment.")
    url: str | None = Field(description="The route's URL, else the URL of the preview that is running.")


class AppRef(_Doc):
    id: str
    name: str
    project_id: str


class AppStatus(_Doc):
    """`rhone status --json`: an app at a glance."""

    app: AppRef
    environments: list[EnvironmentStatus]


# file name in schemas/ -> model
DOCUMENTS: dict[str, type[BaseModel]] = {
    "error.schema.json": ErrorDocument,
    "config-validate.schema.json": ConfigValidate,
    "config-show.schema.json": ConfigShow,
    "init.schema.json": Init,
    "auth-status.schema.json": AuthStatus,
    "login.schema.json": Login,
    "logout.schema.json": Logout,
    "help-exit-codes.schema.json": HelpExitCodes,
    "help-environment.schema.json": HelpEnvironment,
    "local-status.schema.json": LocalStatus,
    "local-down.schema.json": LocalDown,
    "artifact-manifest.schema.json": ManifestDocument,
    "artifact-manifest-explain.schema.json": ManifestExplain,
    "route-move.schema.json": RouteMove,
    "status.schema.json": AppStatus,
    "auth-token.schema.json": AuthToken,
}

# `--json` documents that are API resources, passed through unchanged: schema file -> (OpenAPI component, is a list).
API_DOCUMENTS: dict[str, tuple[str, bool]] = {
    "logs.schema.json": ("AppLogs", False),
    "workspace.schema.json": ("Workspace", False),
    "workspace-list.schema.json": ("Workspace", True),
    "member.schema.json": ("Member", False),
    "member-list.schema.json": ("Member", True),
    "audit-list.schema.json": ("AuditRecord", True),
    "project.schema.json": ("Project", False),
    "project-list.schema.json": ("Project", True),
    "app.schema.json": ("App", False),
    "app-list.schema.json": ("App", True),
    "environment.schema.json": ("Environment", False),
    "environment-list.schema.json": ("Environment", True),
    "operation.schema.json": ("Operation", False),
    "operation-list.schema.json": ("Operation", True),
    "whoami-identity.schema.json": ("Whoami", False),
    "deployment.schema.json": ("Deployment", False),
    "deployment-list.schema.json": ("Deployment", True),
    "deployment-logs.schema.json": ("DeploymentLogs", False),
    "route.schema.json": ("RouteOwner", False),
    "route-list.schema.json": ("RouteOwner", True),
    "route-history.schema.json": ("RouteEventView", True),
    "provider-binding.schema.json": ("ProviderBinding", False),
    "provider-binding-list.schema.json": ("ProviderBinding", True),
    "environment-services.schema.json": ("EnvironmentServices", False),
    "allocation-list.schema.json": ("Allocation", True),
    "region.schema.json": ("Region", False),
    "region-list.schema.json": ("Region", True),
    "environment-region-list.schema.json": ("EnvironmentRegion", True),
    "environment-config.schema.json": ("EnvironmentConfig", False),
    "local-gc.schema.json": ("GcResult", False),
}

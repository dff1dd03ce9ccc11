"""The wire contract: every request and response body of the Rhone API.

`schemas/openapi.json` is generated from the FastAPI app that uses these models (`python -m rhone_local.openapi`),
and the CLI's `--json` documents for resources are these shapes, passed through unchanged.
"""

from __future__ import annotations

from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from rhone_cli.config.project import DeploymentConfig

Role = Literal["owner", "admin", "developer", "viewer"]
NAME_PATTERN = r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorDetail(_Model):
    code: str = Field(description="Stable error code, e.g. not_found, insufficient_role, idempotency_key_reused.")
    message: str
    request_id: str
    details: dict[str, Any] = Field(default_factory=dict)


class ErrorResponse(_Model):
    error: ErrorDetail


class Health(_Model):
    status: Literal["ok"]
    version: str
    schema_version: int


class WorkspaceRef(_Model):
    id: str
    name: str
    role: Role | None = None


class Whoami(_Model):
    id: str
    kind: Literal["user", "runtime"]
    name: str
    token_id: str
    app_id: str | None = None
    workspaces: list[WorkspaceRef]


class Workspace(_Model):
    id: str
    name: str
    created_at: str
    role: Role | None = Field(None, description="The caller's role in this workspace.")


class Member(_Model):
    user_id: str
    name: str
    email: str | None
    role: Role
    created_at: str | None = None


class MemberInvite(_Model):
    # `\s` differs between the server's regex engine (Unicode White_Space: has U+0085, not U+FEFF) and the ECMA-262
    # dialect in which clients read the published pattern (the reverse); naming both makes them agree.
    email: str = Field(min_length=3, max_length=254, pattern=r"^[^@\s\x85\ufeff]+@[^@\s\x85\ufeff]+$")
    role: Role
    name: str | None = Field(None, max_length=100)


class TokenCreate(_Model):
    name: str = Field(min_length=1, max_length=100)
    expires_in_days: int | None = Field(None, ge=1, le=3650)
    # Bounded like every other string field; pydantic also checks a constrained string is valid Unicode, so a lone
    # surrogate (JSON's "\ud800") is a 422 here instead of a UnicodeEncodeError (500) in SQLite.
    user_id: str | None = Field(
        None,
        max_length=100,
        description="Issue the token for this member instead of yourself (owners and admins only).",
    )


class Token(_Model):
    id: str
    name: str
    subject_kind: Literal["user", "runtime"]
    subject_id: str
    workspace_id: str | None = Field(None, description="The workspace the token acts in; elsewhere it is refused.")
    role: Literal["owner", "admin", "developer", "viewer"] | None = Field(
        None, description="A user token's most powerful role there (never more than its member's current role)."
    )
    created_at: str
    expires_at: str | None = None
    revoked_at: str | None = None


class TokenCreated(Token):
    secret: str = Field(description="The token itself; shown once, never stored in clear.")


class Project(_Model):
    id: str
    workspace_id: str
    name: str
    created_at: str
    operation_id: str


class ProjectCreate(_Model):
    name: str = Field(min_length=1, max_length=40, pattern=NAME_PATTERN)


# Environment names follow the same rule whether created with the app or on their own.
EnvironmentName = Annotated[str, Field(min_length=1, max_length=40, pattern=NAME_PATTERN)]


def _names_as_property_names(schema: dict[str, Any]) -> None:
    """Pydantic documents a pattern-constrained dict key as `patternProperties`, which leaves every other key
    allowed; document what is validated instead: keys are names (`propertyNames`), values policies."""
    ((pattern, value),) = schema.pop("patternProperties").items()
    schema["additionalProperties"] = value
    schema["propertyNames"] = {**schema.get("propertyNames", {}), "pattern": pattern}


class EnvironmentPolicy(_Model):
    approval_required: bool = False
    frozen: bool = False


class App(_Model):
    id: str
    workspace_id: str
    project_id: str
    name: str
    created_at: str
    operation_id: str


class AppCreate(_Model):
    name: str = Field(min_length=1, max_length=40, pattern=NAME_PATTERN)
    environments: dict[EnvironmentName, EnvironmentPolicy] = Field(
        default_factory=dict,
        description="Policies for environments created with the app (preview and production always are).",
        json_schema_extra=_names_as_property_names,
    )


class Environment(_Model):
    id: str
    workspace_id: str
    app_id: str
    name: str
    approval_required: bool
    frozen: bool
    instances: int = Field(description="Instances the route owner runs here (set by scale operations).")
    created_at: str
    operation_id: str


class EnvironmentPolicyUpdate(_Model):
    approval_required: bool = Field(description="Promotions and rollbacks need an owner's or admin's approval.")


class EnvironmentCreate(_Model):
    name: str = Field(min_length=1, max_length=40, pattern=NAME_PATTERN)
    approval_required: bool = False
    frozen: bool = False


class RuntimeIdentityCreated(_Model):
    id: str
    app_id: str
    workspace_id: str
    created_at: str
    token: TokenCreated


class Stage(_Model):
    state: str
    entered_at: str
    evidence: dict[str, Any]
    error: dict[str, Any] | None


class OperationError(_Model):
    code: str
    message: str
    exit_category: Literal["failure", "usage", "auth", "not_found", "conflict", "gate"] | None = Field(
        None,
        description="When the outcome is failed or blocked: what kind of failure it is, for a client's exit code "
        "(failure 1, usage 2, auth 3, not_found 4, conflict 5, gate 6).",
    )


class Operation(_Model):
    id: str
    workspace_id: str
    kind: str
    state: str
    version: int = Field(description="Increases with every recorded stage; pass it as after_version to long-poll.")
    terminal: bool
    outcome: Literal["running", "succeeded", "failed", "blocked"] = Field(
        description="running (neither terminal nor parked), succeeded (this kind's success state), failed (any other "
        "terminal state), or blocked (parked until a person acts; `error` says at which gate)."
    )
    target_kind: str
    target_id: str
    params: dict[str, Any]
    stages: list[Stage]
    error: OperationError | None
    actor: dict[str, str]
    idempotency_key: str | None
    request_id: str
    created_at: str
    updated_at: str
    links: dict[str, str]


class AuditRecord(_Model):
    id: str
    workspace_id: str | None
    ts: str
    actor_kind: Literal["user", "runtime"]
    actor_id: str
    action: str
    target: str
    request_id: str
    result: Literal["allowed", "denied", "failed"]
    detail: dict[str, Any] | None


class Cell(_Model):
    id: str
    name: str
    region_id: str
    created_at: str


class Region(_Model):
    id: str
    name: str
    jurisdiction: str = Field(description="Where its data lives; residency policies allow or refuse it.")
    primary: bool = Field(description="Every environment serves here from its creation.")
    cells: list[Cell]
    created_at: str


class EnvironmentRegion(_Model):
    region: str
    region_id: str
    jurisdiction: str
    primary: bool
    state: Literal["eligible", "enabling", "disabled", "not_enabled"] = Field(
        description="eligible: may receive traffic. Only a Region Enablement operation makes a region eligible."
    )
    reason: str | None = Field(None, description="Why the last enablement stopped, with the gate's code.")
    operation_id: str | None


class ProviderBinding(_Model):
    id: str
    environment_id: str
    environment: str
    name: str = Field(description="The provider's name in rhone.toml.")
    kind: str
    resource: str
    mutable: bool
    shared_read_only: bool
    region: str
    state: Literal["binding", "ready", "unbinding", "removed", "failed"]
    secrets: list[str] = Field(description="Names of the secrets the binding holds. Values are never returned.")
    operation_id: str
    created_at: str
    updated_at: str


ProviderKind = Literal["postgres", "mysql", "redis", "s3", "smtp", "sqlite", "generic"]  # as rhone.toml's kinds
SecretName = Annotated[str, Field(pattern=r"^[A-Z_][A-Z0-9_]{0,63}$")]


class BindingCreate(_Model):
    name: str = Field(min_length=1, max_length=40, pattern=NAME_PATTERN, description="The provider's rhone.toml name.")
    kind: ProviderKind
    resource: str | None = Field(
        None,
        min_length=1,
        max_length=500,
        pattern=r"^[^\s@\x85\ufeff]+$",  # \s differs between engines: see MemberInvite
        description="The resource's identifier without credentials (e.g. pg://db-host/shop); secrets go in secrets. "
        "Required unless provision.",
    )
    provision: bool = Field(
        False,
        description="Rhone Local creates a durable database of this kind (sqlite, postgres) for the environment and "
        "hands its URL to allocations under each name of provision_secrets.",
    )
    provision_secrets: list[SecretName] = Field(
        default_factory=lambda: ["DATABASE_URL"],
        min_length=1,
        max_length=10,
        description="With provision: the variables the database's URL is handed under (the provider's secrets).",
    )
    mutable: bool = Field(True, description="Whether the app can write to it (databases, buckets: yes).")
    shared_read_only: bool = Field(
        False, description="Declared shared and read-only: may be bound to other environments that say the same."
    )
    region: str | None = Field(None, max_length=40, description="Default: the primary region.")
    secrets: dict[SecretName, Annotated[str, Field(max_length=8192)]] = Field(
        default_factory=dict,
        description="Secret values by variable name, stored server-side and handed to allocations; never returned.",
        json_schema_extra=_names_as_property_names,
    )


RuntimeService = Literal["session", "broadcast", "idempotency", "cache", "queue", "object_storage"]


class ServiceConnection(_Model):
    allocation_id: str
    connections: int = Field(description="Connections the allocation's own user holds on the engine now.")


class ServiceBinding(_Model):
    id: str
    service: RuntimeService
    region: str
    region_id: str
    provider: str = Field(
        description="redis or nats (an engine Rhone Local runs for the lane), sql (a provisioned database), local "
        "(Rhone Local's own implementation), or the external endpoint."
    )
    state: Literal["ready", "removed"]
    operation_id: str
    created_at: str
    engine_up: bool | None = Field(None, description="Whether its engine answers; null when Rhone Local runs none.")
    engine_restarts: int = Field(0, description="Times supervision restarted the engine since Rhone Local started.")
    engine_error: str | None = Field(None, description="Why the engine is down, when it is.")
    allocations: list[ServiceConnection] | None = Field(
        None,
        description="The lane's live allocations and their connections to the engine (0: bound but not "
        "connected); null when the engine cannot tell.",
    )


class ServiceRequirement(_Model):
    service: RuntimeService
    reason: str


class EnvironmentServices(_Model):
    environment: str
    items: list[ServiceBinding]
    required: list[ServiceRequirement] = Field(
        description="What the route owner needs to run more than one instance (empty when nothing is promoted)."
    )
    missing: list[ServiceRequirement] = Field(description="Required services not bound in the primary region.")


class ServicesUpdate(_Model):
    bind: list[RuntimeService] = Field(default_factory=list, max_length=6)
    unbind: list[RuntimeService] = Field(default_factory=list, max_length=6)
    region: str | None = Field(None, max_length=40, description="Default: the primary region.")
    provider: str = Field(
        "local",
        min_length=1,
        max_length=500,
        pattern=r"^(local|redis|nats|sql|[a-z][a-z0-9+.-]*://[^\s@]+)$",
        description="local (Redis for session, broadcast, cache and queue; Rhone Local's own implementation for the "
        "others), redis, nats (broadcast, queue), sql (session: a provisioned database), or the URL of an external "
        "service, without credentials.",
    )


# A setting's name: a C identifier, not one the platform sets (PORT, PATH, HOME, RHONE_*) nor rhone.toml's `required`.
SettingName = Annotated[
    str, Field(pattern=r"^(?!(PORT|PATH|HOME|required)$)(?![Rr][Hh][Oo][Nn][Ee]_)[A-Za-z_][A-Za-z0-9_]{0,127}$")
]
SettingValue = Annotated[str, Field(max_length=32 * 1024, pattern=r"^[^\x00]*$")]


class ConfigChange(_Model):
    """Set and unset an environment's settings in one change; an environment holds at most 200 settings and
    256 KiB of them (a change past that is refused with 409 `settings_limit`)."""

    model_config = ConfigDict(extra="forbid", regex_engine="python-re")  # the name pattern needs a look-ahead

    values: dict[SettingName, SettingValue] = Field(
        default_factory=dict,
        max_length=200,
        description="Plain settings (shown by `rhone env config`).",
        json_schema_extra=_names_as_property_names,
    )
    secrets: dict[SettingName, SettingValue] = Field(
        default_factory=dict,
        max_length=200,
        description="Secret settings: stored server-side, never returned.",
        json_schema_extra=_names_as_property_names,
    )
    unset: list[SettingName] = Field(default_factory=list, max_length=200)


class Setting(_Model):
    name: str
    value: str | None = Field(description="The value; null for a secret (never returned).")
    secret: bool
    source: Literal["environment", "rhone.toml"] = Field(
        description="environment: `rhone env set`; rhone.toml: a default from [env] of the newest deployment here."
    )
    operation_id: str | None = None
    updated_at: str | None = None


class EnvironmentConfig(_Model):
    environment: str
    items: list[Setting]
    required: list[str] = Field(description="rhone.toml's [env] required, as the newest deployment here declares it.")
    missing: list[str] = Field(description="Required settings this environment lacks: a deploy is refused.")


class GcRequest(_Model):
    dry_run: bool = Field(False, description="Say what would be removed; remove nothing.")


class GcCounts(_Model):
    builds: int = Field(description="Build work folders and folders of deployments no longer kept.")
    allocations: int = Field(description="Trees (or whole folders) of stopped and failed allocations.")
    blobs: int = Field(description="Blobs no kept deployment references.")


class GcResult(_Model):
    dry_run: bool
    kept_deployments: int
    removed: GcCounts
    bytes: GcCounts
    total_bytes: int


class ScaleRequest(_Model):
    instances: int = Field(ge=0, le=20, description="Instances of the route owner to run in the environment.")


class Allocation(_Model):
    id: str
    deployment_id: str
    environment: str
    state: str
    region: str
    cell: str
    region_id: str
    cell_id: str
    node: str | None = Field(
        None, description="The node whose runner runs it (`rhone local up --node`; null: from before nodes existed)."
    )
    artifact_digest: str
    route_owner: bool = Field(description="Its deployment owns the environment's route (it may still not be ready).")
    health: dict[str, Any] | None
    created_at: str
    updated_at: str


T = TypeVar("T")


class Page(_Model, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")


Digest = Annotated[str, Field(pattern=r"^sha256:[0-9a-f]{64}$")]


class BlobQuery(_Model):
    digests: list[Digest] = Field(max_length=10_000, description="sha256:<hex> digests the client could upload.")


class BlobMissing(_Model):
    missing: list[str] = Field(description="The digests the server does not have; upload exactly these.")


class BlobStored(_Model):
    digest: str
    size: int
    stored: bool = Field(description="False when the blob already existed (the upload was a no-op).")


class SourceFacts(_Model):
    git_commit: str | None = Field(None, max_length=64)
    git_dirty: bool | None = None


class ManifestEntry(_Model):
    path: str = Field(min_length=1, max_length=1024, description="Normalized relative POSIX path.")
    size: int = Field(ge=0, le=2 * 1024**3)
    mode: Literal["644", "755"] = Field(description="The exec bit: 755 executable, 644 not.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class ManifestDocument(_Model):
    """Files sorted by path, without duplicates, `..`, absolute paths or a file that is also a directory; its
    digest is `sha256:` + sha256 of the canonical JSON (sorted keys, no whitespace, UTF-8)."""

    version: Literal[1]
    files: list[ManifestEntry] = Field(max_length=100_000)


class DeploymentCreate(_Model):
    environment: str = Field("preview", min_length=1, max_length=40, pattern=NAME_PATTERN)
    manifest: ManifestDocument = Field(description="The source (or, with prebuilt, the built output) manifest.")
    manifest_digest: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    prebuilt: bool = False
    artifact_digest: str | None = Field(
        None, pattern=r"^sha256:[0-9a-f]{64}$", description="With prebuilt: the digest the client built."
    )
    config: DeploymentConfig = Field(description="The resolved rhone.toml, checked with the rules of rhone.toml.")
    source: SourceFacts = Field(default_factory=SourceFacts)
    force_build: bool = Field(
        False, description="Build even when an earlier build of the same source and build configuration exists."
    )


class DeploymentApprove(_Model):
    ack_cold: bool = Field(False, description="Acknowledge a cold deploy: live sessions will refresh.")


class DeploymentRoute(_Model):
    environment: str
    route_key: str
    epoch: int
    url: str
    operation_id: str = Field(description="The promotion or rollback that made this deployment the owner.")


class PolicyDrift(_Model):
    environment: str
    setting: Literal["approval_required"]
    declared: bool = Field(description="What the deployment's rhone.toml declares.")
    server: bool | None = Field(description="The environment's policy on the server; null: it does not exist there.")
    fix: str = Field(description="The command that aligns the server with rhone.toml.")


class Deployment(_Model):
    id: str
    workspace_id: str
    app_id: str
    environment_id: str
    environment: str
    state: str
    operation_id: str
    prebuilt: bool
    source_digest: str
    artifact_digest: str | None
    source: dict[str, Any]
    evidence: dict[str, Any]
    approval: dict[str, Any] | None
    url: str
    superseded_by: str | None = Field(
        None, description="A newer preview_ready deployment of the same environment that replaced this preview."
    )
    routes: list[DeploymentRoute] = Field(
        default_factory=list, description="The routes this deployment owns (it serves those environments)."
    )
    allocations: list[Allocation]
    policy_drift: list[PolicyDrift] = Field(
        default_factory=list,
        description="Where the deployment's rhone.toml [environments] differ from the server's environment policy.",
    )
    created_at: str
    updated_at: str


class DeploymentLogs(_Model):
    build: str
    allocations: dict[str, str]


class LogLine(_Model):
    allocation_id: str
    deployment_id: str
    environment: str
    text: str = Field(description="One line the app wrote (stdout and stderr), without its newline.")


class AppLogs(_Model):
    lines: list[LogLine]
    cursor: str = Field(description="Pass back as `cursor` to read what comes next (with `wait` to follow).")
    truncated: bool = Field(description="More output is already there: ask again with the cursor at once.")
    at: str


class PromoteRequest(_Model):
    environment: str = Field("production", min_length=1, max_length=40, pattern=NAME_PATTERN)
    expect_digest: Digest | None = Field(None, description="Default: the deployment's validated artifact digest.")
    expect_epoch: int | None = Field(None, ge=0, description="Default: the route's epoch when the request arrives.")
    approve: bool = Field(False, description="Record an owner's or admin's approval with the request.")
    allow_unsafe_db: bool = Field(
        False, description="Promote a deployment that lacks migrations already applied in the environment."
    )


class RollbackRequest(_Model):
    to_deployment: str | None = Field(None, max_length=64, description="Default: the previous route owner.")
    expect_epoch: int | None = Field(None, ge=0)
    allow_unsafe_db: bool = Field(
        False, description="Roll back to a deployment that lacks migrations already applied in the environment."
    )
    approve: bool = Field(
        False, description="Record an owner's or admin's approval (needed where the environment requires approval)."
    )


class RouteOwner(_Model):
    route_key: str
    app_id: str
    environment_id: str
    environment: str
    deployment_id: str
    artifact_digest: str
    epoch: int
    operation_id: str
    updated_at: str
    url: str


class RouteEventView(_Model):
    seq: int
    route_key: str
    epoch: int
    deployment_id: str
    artifact_digest: str
    previous_deployment_id: str | None
    operation_id: str
    kind: Literal["promote", "rollback"]
    created_at: str


# -- device login and refresh ------------------------------------------------------------------------------------------
class DeviceCodeRequest(_Model):
    client_name: str = Field(
        "rhone", min_length=1, max_length=100, pattern=r"^[\x20-\x7e]+$", description="Shown on the approval page."
    )


class DeviceCode(_Model):
    device_code: str = Field(description="Secret: the client polls with it and shows it to nobody.")
    user_code: str = Field(description="What the person confirms on the approval page, e.g. BCDF-GHJK.")
    verification_uri: str
    verification_uri_complete: str
    expires_in: int
    interval: int = Field(description="Seconds between polls of /v1/device/token.")


class DeviceTokenRequest(_Model):
    device_code: str = Field(min_length=1, max_length=200)


class RefreshRequest(_Model):
    refresh_token: str = Field(min_length=1, max_length=200)


class TokenPair(_Model):
    access_token: str
    token_type: Literal["bearer"]
    expires_in: int
    expires_at: str
    refresh_token: str = Field(description="Use once at /v1/token/refresh for a new pair.")


class DeviceApproval(_Model):
    user_code: str = Field(min_length=1, max_length=20)
    approve: bool


class DeviceDecision(_Model):
    user_code: str
    state: Literal["approved", "denied"]
    client_name: str

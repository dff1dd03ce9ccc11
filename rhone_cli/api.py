"""The Rhone API as rhone calls it: every `/v1` endpoint, one method each, over the HTTP client.

Services and commands never format a path: they hand ids and names to a method here, which checks each against its
format (`rhone_cli/api_paths.py`) and escapes it whole before it becomes a segment. A test keeps every `/v1` literal
in this module. Mutations that start an operation return the operation document; reads return the API's JSON.

The idempotency keys of mutations are decided here too (`idempotency_key`), because a key is tied to the endpoint it
is sent to.

Standard library only at import: completion builds its paths from here on every TAB (httpx stays unloaded); the HTTP
client (`rhone_cli/http.py`) is handed in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, unquote

from rhone_cli.api_paths import check_request_path, checked_digest, checked_id, checked_name, checked_ref
from rhone_cli.errors import ExitCode, RhoneError, usage_error

if TYPE_CHECKING:
    from rhone_cli.http import ApiClient, ApiResponse

V1 = "/v1"
PAGE_SIZE = 200
# CI systems' run identifiers: a rerun of the same job derives the same idempotency key.
CI_RUN_VARIABLES = ("GITHUB_RUN_ID", "CI_PIPELINE_ID", "BUILDKITE_BUILD_ID", "CIRCLE_WORKFLOW_ID", "BUILD_ID")


# -- paths -------------------------------------------------------------------------------------------------------------
def below(path: str, *segments: str) -> str:
    """`path` (itself built here) extended by `segments`, each percent-escaped whole: a `/`, `?` or `#` inside a
    segment stays inside it."""
    return path + "".join("/" + quote(segment, safe="") for segment in segments)


def v1(*segments: str) -> str:
    return below(V1, *segments)


def raw_path(raw: str) -> tuple[str, dict[str, str]]:
    """(escaped path, query parameters) of a `/v1/…` path typed by a person for `rhone api` (a `?query` may follow)."""
    path, _, query = raw.partition("?")
    if not path.startswith(V1 + "/") and path != V1:
        raise usage_error(
            f"{raw!r} is not an API path: rhone api sends requests to {V1}/… only",
            hint=f"for example `rhone api {V1}/workspaces` (the host comes from the profile or --api-url)",
        )
    escaped = "/".join(quote(unquote(segment), safe="") for segment in path.split("/"))
    try:
        check_request_path(escaped)
    except RhoneError:
        raise usage_error(f"{raw!r} is not an API path: no '.' or '..' segments, no empty segments") from None
    return escaped, dict(parse_qsl(query, keep_blank_values=True))


@dataclass
class Target:
    """The workspace, project and app a command acts on (names or ids; the project and app when it needs them)."""

    workspace: str
    project: str | None = None
    app: str | None = None

    @property
    def workspace_path(self) -> str:
        return v1("workspaces", checked_ref("workspace", self.workspace))

    @property
    def project_path(self) -> str:
        self.require("project")
        return below(self.workspace_path, "projects", checked_ref("project", self.project or ""))

    @property
    def app_path(self) -> str:
        self.require("project", "app")
        return below(self.project_path, "apps", checked_ref("app", self.app or ""))

    def require(self, *names: str) -> None:
        """Every missing one of `names` in one error, not one per run."""
        missing = [name for name in names if not getattr(self, name)]
        if missing:
            raise missing_target(missing)

    def environment_path(self, environment: str, *rest: str) -> str:
        """The path of one of the app's environments (a name or an id), and of what lies below it."""
        return below(self.app_path, "environments", checked_ref("environment", environment), *rest)

    # The lists completion offers values from (rhone_cli/completion_values.py).
    @property
    def projects_path(self) -> str:
        return below(self.workspace_path, "projects")

    @property
    def operations_path(self) -> str:
        return below(self.workspace_path, "operations")

    @property
    def apps_path(self) -> str:
        return below(self.project_path, "apps")

    @property
    def environments_path(self) -> str:
        return below(self.app_path, "environments")

    @property
    def deployments_path(self) -> str:
        return below(self.app_path, "deployments")


def missing_target(missing: list[str]) -> RhoneError:
    """Which of workspace, project and app a command lacks, all in one error (exit 2)."""
    flags = " and ".join(f"--{name} NAME" for name in missing)
    hint = f"pass {flags}, or run inside a directory with a rhone.toml"
    if "workspace" in missing:
        hint = (
            "to run everything on this machine, start Rhone Local with `rhone local up` (it makes a `local` profile "
            f"with its workspace); else pass {flags}, set [project] workspace in rhone.toml, or log in to a profile "
            "with a workspace"
        )
    return RhoneError(
        f"no {' and no '.join(missing)} given",
        code="input_required",
        exit_code=ExitCode.USAGE,
        hint=hint,
        details={"missing": missing},
    )


WORKSPACES = v1("workspaces")
REGIONS = v1("regions")


def region_path(ref: str) -> str:
    return below(REGIONS, checked_ref("region", ref))


def deployment_path(deployment_id: str, *rest: str) -> str:
    return v1("deployments", checked_id("deployment", deployment_id), *rest)


def operation_path(op_id: str) -> str:
    return v1("operations", checked_id("operation", op_id))


def blob_path(digest: str) -> str:
    return v1("blobs", checked_digest(digest))


# -- idempotency keys --------------------------------------------------------------------------------------------------
def idempotency_key(environ: Mapping[str, str], path: str, *identity: str, derive_in_ci: bool = True) -> str | None:
    """The Idempotency-Key for one mutating request to `path`.

    - `RHONE_IDEMPOTENCY_KEY` (a script that wants exact control): derived from that value and the path only, so
      the same key sent with a different request to the same endpoint is refused (409, exit 5), while a command
      that makes several requests (a project, then an app) still gets one key per endpoint;
    - in CI: derived from the run id, the path and the request's identity (`identity`: the manifest digest and
      target of a deploy, the name of a project…), so a re-run of the job — GitHub's "re-run jobs" keeps the run
      id — attaches to its first attempt, and two different requests of one job never collide;
    - otherwise None: the client makes a fresh key per request and reuses it across that request's retries.
    `derive_in_ci=False` for requests that converge on a state (scale to N, enable a region, unbind): one job may
    rightly send the same request twice with other changes in between (3 → 1 → 3), and a CI-derived key would replay
    the first answer instead of acting; running them again is safe anyway."""
    explicit = environ.get("RHONE_IDEMPOTENCY_KEY")
    if explicit:
        base, parts = explicit, (path,)
    else:
        run = next((environ[v] for v in CI_RUN_VARIABLES if environ.get(v)), None)
        if run is None or not derive_in_ci:
            return None
        base, parts = f"ci-{run}", (path, *identity)
    import hashlib

    digest = hashlib.sha256("\x1f".join((base, *parts)).encode()).hexdigest()[:32]
    return f"{base[:64]}-{digest}"


# -- the client --------------------------------------------------------------------------------------------------------
@dataclass
class Listing:
    """Items of a paginated list, and whether the server holds more than were asked for."""

    items: list[dict[str, Any]]
    more: bool = False


class Api:
    """Typed endpoints over an `ApiClient` (its base URL, token, retries and error mapping)."""

    def __init__(self, http: ApiClient, environ: Mapping[str, str] | None = None) -> None:
        self.http = http
        self._environ = environ or {}

    # -- plumbing ------------------------------------------------------------------------------------------------------
    def _key(self, path: str, *identity: str, converging: bool = False) -> str | None:
        return idempotency_key(self._environ, path, self.http.base_url, *identity, derive_in_ci=not converging)

    def _get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self.http.get(path, params=params).data

    def _post(self, path: str, body: Any, *identity: str, converging: bool = False) -> Any:
        return self.http.post(path, body, idempotency_key=self._key(path, *identity, converging=converging)).data

    def _pages(self, path: str, limit: int | None, params: dict[str, Any] | None = None) -> Listing:
        """Up to `limit` items (None: all) following next_cursor, and whether more exist."""
        found: list[dict[str, Any]] = []
        cursor = None
        while True:
            page_size = min(PAGE_SIZE, limit - len(found)) if limit else PAGE_SIZE
            query = {**(params or {}), "limit": page_size, **({"cursor": cursor} if cursor else {})}
            data = self._get(path, query)
            found.extend(data["items"])
            cursor = data.get("next_cursor")
            if not cursor:
                return Listing(found)
            if limit and len(found) >= limit:
                return Listing(found, more=True)

    def _newest(self, path: str, limit: int | None, params: dict[str, Any] | None = None) -> Listing:
        return self._pages(path, limit, {**(params or {}), "order": "newest"})

    def _items(self, path: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return self._pages(path, None, params).items

    # -- identity and login (on clients of their own: a token being checked, or none) ----------------------------------
    def whoami(self) -> ApiResponse:
        return self.http.get(v1("whoami"))

    def device_code(self, client_name: str) -> dict[str, Any]:
        return self.http.post(v1("device", "code"), {"client_name": client_name}).data

    def device_token(self, device_code: str) -> dict[str, Any]:
        # Polled until approved: each poll is a new question, never a replay of the first answer.
        return self.http.post(v1("device", "token"), {"device_code": device_code}, idempotent=False).data

    def refresh_token(self, refresh_token: str) -> dict[str, Any]:
        # A refresh token is used once: a retry with a replayed answer would hand back an already-rotated token.
        return self.http.post(v1("token", "refresh"), {"refresh_token": refresh_token}, idempotent=False).data

    def health(self) -> Any:
        return self._get(v1("health"))

    # -- workspaces ----------------------------------------------------------------------------------------------------
    def workspaces(self) -> list[dict[str, Any]]:
        return self._items(WORKSPACES)

    def workspace(self, target: Target) -> dict[str, Any]:
        return self._get(target.workspace_path)

    def members(self, target: Target) -> list[dict[str, Any]]:
        return self._items(below(target.workspace_path, "members"))

    def invite(self, target: Target, email: str, role: str, name: str | None) -> dict[str, Any]:
        path = below(target.workspace_path, "members")
        key = idempotency_key(self._environ, path, email)
        return self.http.post(path, {"email": email, "role": role, "name": name}, idempotency_key=key).data

    def audit(self, target: Target, *, limit: int | None, action: str | None = None) -> Listing:
        return self._newest(below(target.workspace_path, "audit"), limit, {"action": action} if action else None)

    def operations(self, target: Target, *, limit: int | None, state: str | None = None) -> Listing:
        return self._newest(target.operations_path, limit, {"state": state} if state else None)

    # -- projects, apps, environments ----------------------------------------------------------------------------------
    def projects(self, target: Target, *, limit: int | None) -> Listing:
        return self._newest(target.projects_path, limit)

    def project(self, target: Target) -> dict[str, Any]:
        return self._get(target.project_path)

    def create_project(self, target: Target, body: dict[str, Any]) -> dict[str, Any]:
        return self._post(target.projects_path, body, repr(sorted(body.items())))

    def apps(self, target: Target, *, limit: int | None) -> Listing:
        return self._newest(target.apps_path, limit)

    def app(self, target: Target) -> dict[str, Any]:
        return self._get(target.app_path)

    def create_app(self, target: Target, body: dict[str, Any]) -> dict[str, Any]:
        return self._post(target.apps_path, body, repr(sorted(body.items())))

    def environments(self, target: Target) -> list[dict[str, Any]]:
        return self._items(target.environments_path)

    def environment(self, target: Target, environment: str) -> dict[str, Any]:
        return self._get(target.environment_path(environment))

    def create_environment(self, target: Target, body: dict[str, Any]) -> dict[str, Any]:
        return self._post(target.environments_path, body, repr(sorted(body.items())))

    def set_approval_required(self, target: Target, environment: str, approval_required: bool) -> dict[str, Any]:
        path = target.environment_path(environment, "policy")
        return self.http.post(path, {"approval_required": approval_required}).data

    def set_frozen(self, target: Target, environment: str, frozen: bool) -> dict[str, Any]:
        path = target.environment_path(environment, "freeze" if frozen else "unfreeze")
        return self.http.post(path, {}).data

    # -- deployments ---------------------------------------------------------------------------------------------------
    def deployments(self, target: Target, *, limit: int | None) -> Listing:
        return self._newest(target.deployments_path, limit)

    def recent_deployments(self, target: Target, count: int) -> list[dict[str, Any]]:
        """The `count` newest deployments (one page)."""
        return self._get(target.deployments_path, {"order": "newest", "limit": count})["items"]

    def create_deployment(self, target: Target, body: dict[str, Any]) -> dict[str, Any]:
        """Start a deploy. In CI its key follows the manifest and the target, so a re-run of the job attaches to the
        deployment it already created."""
        identity = (body["environment"], body["manifest_digest"], str(body["prebuilt"]), str(body["force_build"]))
        return self._post(target.deployments_path, body, *identity)

    def deployment(self, deployment_id: str) -> dict[str, Any]:
        return self._get(deployment_path(deployment_id))

    def deployment_logs(self, deployment_id: str, *, lines: int) -> dict[str, Any]:
        return self._get(deployment_path(deployment_id, "logs"), {"lines": lines})

    def approve(self, deployment_id: str, *, ack_cold: bool) -> dict[str, Any]:
        path = deployment_path(deployment_id, "approve")
        key = idempotency_key(self._environ, path, str(ack_cold))
        return self.http.post(path, {"ack_cold": ack_cold}, idempotency_key=key).data

    def missing_blobs(self, digests: list[str]) -> list[str]:
        return self.http.post(v1("blobs", "missing"), {"digests": digests}).data["missing"]

    def upload_blob(self, digest: str, chunks: Callable[[], Iterator[bytes]], size: int) -> None:
        self.http.put_stream(blob_path(digest), chunks, size)

    # -- routes --------------------------------------------------------------------------------------------------------
    def promote(self, deployment_id: str, body: dict[str, Any]) -> dict[str, Any]:
        path = deployment_path(deployment_id, "promote")
        return self._post(path, body, deployment_id, body["environment"], str(body["expect_epoch"]))

    def rollback(self, target: Target, environment: str, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("to_deployment") is not None:
            checked_id("deployment", body["to_deployment"])
        path = target.environment_path(environment, "rollback")
        identity = (target.app_path, environment, str(body.get("to_deployment")), str(body.get("approve")))
        return self._post(path, body, *identity)

    def routes(self, target: Target) -> list[dict[str, Any]]:
        return self._items(below(target.app_path, "routes"))

    def route(self, target: Target, environment: str) -> dict[str, Any]:
        return self._get(below(target.app_path, "routes", checked_ref("environment", environment)))

    def route_history(self, target: Target, environment: str, *, limit: int | None) -> Listing:
        path = below(target.app_path, "routes", checked_ref("environment", environment), "history")
        return self._newest(path, limit)

    # -- bindings, services, scale, regions ----------------------------------------------------------------------------
    def bindings(self, target: Target, environment: str) -> list[dict[str, Any]]:
        return self._items(target.environment_path(environment, "bindings"))

    def bind(self, target: Target, environment: str, body: dict[str, Any]) -> dict[str, Any]:
        path = target.environment_path(environment, "bindings")
        return self._post(path, body, target.app_path, environment, body["name"], str(body["resource"]))

    def unbind(
        self, target: Target, environment: str, name: str, *, region: str | None, delete_data: bool
    ) -> dict[str, Any]:
        path = target.environment_path(environment, "bindings", checked_name("binding", name))
        params = {
            **({"region": checked_ref("region", region)} if region else {}),
            **({"delete_data": "true"} if delete_data else {}),
        }
        key = self._key(path, path, str(region), str(delete_data), converging=True)
        return self.http.request("DELETE", path, params=params or None, idempotency_key=key).data

    def services(self, target: Target, environment: str) -> dict[str, Any]:
        return self._get(target.environment_path(environment, "services"))

    def update_services(self, target: Target, environment: str, body: dict[str, Any]) -> dict[str, Any]:
        path = target.environment_path(environment, "services")
        identity = (path, ",".join(body["bind"]), ",".join(body["unbind"]), str(body["region"]))
        return self._post(path, body, *identity, converging=True)

    def scale(self, target: Target, environment: str, instances: int) -> dict[str, Any]:
        path = target.environment_path(environment, "scale")
        return self._post(path, {"instances": instances}, path, str(instances), converging=True)

    def allocations(
        self,
        target: Target,
        *,
        limit: int | None,
        every_state: bool,
        environment: str | None = None,
        deployment: str | None = None,
    ) -> Listing:
        params: dict[str, Any] = {"all": "true" if every_state else "false"}
        if environment:
            params["environment"] = checked_ref("environment", environment)
        if deployment:
            params["deployment"] = checked_id("deployment", deployment)
        return self._newest(below(target.app_path, "allocations"), limit, params)

    def live_allocations(self, target: Target) -> list[dict[str, Any]]:
        return self._items(below(target.app_path, "allocations"), {"all": "false"})

    def regions(self) -> list[dict[str, Any]]:
        return self._get(REGIONS)["items"]

    def region(self, ref: str) -> dict[str, Any]:
        return self._get(region_path(ref))

    def environment_regions(self, target: Target, environment: str) -> list[dict[str, Any]]:
        return self._get(target.environment_path(environment, "regions"))["items"]

    def enable_region(self, target: Target, environment: str, region: str) -> dict[str, Any]:
        path = target.environment_path(environment, "regions", checked_ref("region", region), "enable")
        return self._post(path, {}, path, converging=True)

    # -- settings and logs ---------------------------------------------------------------------------------------------
    def settings(self, target: Target, environment: str) -> dict[str, Any]:
        return self._get(target.environment_path(environment, "config"))

    def change_settings(self, target: Target, environment: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._post(target.environment_path(environment, "config"), body, converging=True)

    def app_logs(self, target: Target, params: dict[str, Any], *, timeout: float) -> dict[str, Any]:
        query = dict(params)
        if query.get("deployment"):
            query["deployment"] = checked_id("deployment", query["deployment"])
        if query.get("environment"):
            query["environment"] = checked_ref("environment", query["environment"])
        return self.http.get(below(target.app_path, "logs"), params=query, timeout=timeout).data

    # -- operations ----------------------------------------------------------------------------------------------------
    def operation(self, op_id: str) -> dict[str, Any]:
        return self._get(operation_path(op_id))

    def operation_after(self, op_id: str, version: int, *, wait: float, timeout: float) -> dict[str, Any]:
        """The operation once its version moves past `version`, or as it is after `wait` seconds (a long-poll)."""
        params = {"wait": f"{wait:.2f}", "after_version": version}
        return self.http.get(operation_path(op_id), params=params, timeout=timeout).data

    # -- Rhone Local ---------------------------------------------------------------------------------------------------
    def local_gc(self, *, dry_run: bool) -> dict[str, Any]:
        return self.http.post(v1("local", "gc"), {"dry_run": dry_run}).data

    # -- any path (`rhone api`) ----------------------------------------------------------------------------------------
    def raw(self, method: str, path: str, *, params: dict[str, Any] | None = None, body: Any = None) -> Any:
        """One request to a path `raw_path` checked; a POST carries an Idempotency-Key like every rhone POST."""
        from rhone_cli.http import new_idempotency_key

        key = new_idempotency_key() if method == "POST" else None
        return self.http.request(method, path, json=body, params=params or None, idempotency_key=key).data

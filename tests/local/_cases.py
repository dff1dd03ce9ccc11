"""The mutating endpoints of the Rhone API, one `Case` per distinct authorization rule.

`test_rbac` runs every case for every role (and for a non-member); `test_runtime_identity` runs every case with a
runtime identity's token. Expectations come from `access.MUTATIONS` (plus the handler rules a case names), so editing
the permission table changes what the tests expect, and adding a mutation to it without a case here fails
`test_rbac.test_every_mutation_has_a_case`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rhone_local.domain import access

from .conftest import BASE, Actor, LocalEnv

# Mutations in `access.MUTATIONS` that no HTTP route performs (yet). They are checked at the domain level only, and
# `test_rbac.test_unrouted_mutations_really_have_no_route` fails as soon as a route for one of them appears.
UNROUTED: frozenset[str] = frozenset()

# Mutating routes outside tenancy RBAC: blobs are content-addressed and belong to no workspace — any user may ask
# which are missing and upload them (a runtime identity may not; tests/local/test_blobs.py covers them). They are
# not audited: a blob changes nothing until a deployment, which is audited, refers to it.
# Device login and token refresh are outside tenancy RBAC too: they act on the caller's own login (approving one
# needs a user's token, asking for one needs none), belong to no workspace, and issue tokens only to the approver;
# tests/local/test_device_login.py covers them.
NOT_RBAC_ROUTES = frozenset(
    {
        ("POST", "/v1/blobs/missing"),
        ("PUT", "/v1/blobs/{digest}"),
        ("POST", "/v1/device/code"),
        ("POST", "/v1/device/token"),
        ("POST", "/v1/device/approve"),
        ("POST", "/v1/token/refresh"),
    }
)


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    json: dict[str, Any] | None = None


@dataclass
class Target:
    """The project and app a case acts on; created on demand when a test does not choose them."""

    project: dict[str, Any] | None = None
    app: dict[str, Any] | None = None

    def ensure(self, env: LocalEnv, *, app: bool) -> None:
        if self.project is None:
            self.project = env.create_project()
        if app and self.app is None:
            self.app = env.create_app(self.project)


@dataclass(frozen=True)
class Case:
    id: str
    action: str  # a key of access.MUTATIONS
    route: tuple[str, str]  # (method, path template) as registered in the FastAPI app
    success: int
    prepare: Callable[[LocalEnv, Actor, Target], Call]
    delta: dict[str, int] = field(default_factory=dict)  # state-table count changes when allowed
    handler_min_role: str | None = None  # a rule the handler adds on top of the permission table

    @property
    def min_role(self) -> str:
        needed = access.MUTATIONS[self.action]
        if self.handler_min_role and access.RANK[self.handler_min_role] > access.RANK[needed]:
            needed = self.handler_min_role
        return needed

    def allows(self, role: str) -> bool:
        return access.RANK[role] >= access.RANK[self.min_role]


def _invite(env: LocalEnv, actor: Actor, target: Target) -> Call:
    return Call("POST", f"{BASE}/members", {"email": f"{env.name('invitee')}@example.test", "role": "viewer"})


def _token_self(env: LocalEnv, actor: Actor, target: Target) -> Call:
    return Call("POST", f"{BASE}/tokens", {"name": env.name("tok")})


def _token_other(env: LocalEnv, actor: Actor, target: Target) -> Call:
    other = env.make_user("viewer")
    return Call("POST", f"{BASE}/tokens", {"name": env.name("tok"), "user_id": other.id})


def _revoke_self(env: LocalEnv, actor: Actor, target: Target) -> Call:
    # A user revokes a second token of their own; a runtime identity tries to revoke the token it is using.
    # (A non-member, for whom no token can be issued, tries to revoke the one it is using too.)
    token_id = env.issue_token(actor.id)["id"] if actor.role is not None else actor.token_id
    return Call("DELETE", f"{BASE}/tokens/{token_id}")


def _revoke_other(env: LocalEnv, actor: Actor, target: Target) -> Call:
    other = env.make_user("viewer")
    return Call("DELETE", f"{BASE}/tokens/{other.token_id}")


def _project(env: LocalEnv, actor: Actor, target: Target) -> Call:
    return Call("POST", f"{BASE}/projects", {"name": env.name("prj")})


def _app(env: LocalEnv, actor: Actor, target: Target) -> Call:
    target.ensure(env, app=False)
    assert target.project is not None
    return Call("POST", f"{BASE}/projects/{target.project['name']}/apps", {"name": env.name("app")})


def _app_path(env: LocalEnv, target: Target) -> str:
    target.ensure(env, app=True)
    assert target.project is not None and target.app is not None
    return f"{BASE}/projects/{target.project['name']}/apps/{target.app['name']}"


def _environment(env: LocalEnv, actor: Actor, target: Target) -> Call:
    return Call("POST", f"{_app_path(env, target)}/environments", {"name": env.name("stage")})


def _runtime_identity(env: LocalEnv, actor: Actor, target: Target) -> Call:
    return Call("POST", f"{_app_path(env, target)}/runtime-identities")


EMPTY_CONFIG = {"build": {"output": "."}, "process": {"start": "true", "health_path": "/healthz"}}
EMPTY_MANIFEST = {"version": 1, "files": []}


def _deployment_body() -> dict[str, Any]:
    from rhone_local.domain.manifest import digest_of

    return {"manifest": EMPTY_MANIFEST, "manifest_digest": digest_of(EMPTY_MANIFEST), "config": EMPTY_CONFIG}


def _deploy(env: LocalEnv, actor: Actor, target: Target) -> Call:
    return Call("POST", f"{_app_path(env, target)}/deployments", _deployment_body())


def _approve(env: LocalEnv, actor: Actor, target: Target) -> Call:
    """A deployment parked in `blocked` by a database gate (set directly: the gate itself is tested elsewhere)."""
    response = env.client.post(
        f"{_app_path(env, target)}/deployments", json=_deployment_body(), headers=env.owner.headers
    )
    assert response.status_code == 202, response.text
    op = response.json()
    deployment_id = op["target_id"]
    evidence = {"gates": [{"gate": "db_impact", "outcome": "block", "summary": "1 new migration", "facts": {}}]}
    with env.store.write() as c:
        c.execute("UPDATE operations SET state = 'blocked', version = version + 1 WHERE id = ?", (op["id"],))
        env.store.update_deployment(c, deployment_id, state="blocked", evidence=evidence)
    return Call("POST", f"/v1/deployments/{deployment_id}/approve", {})


def _preview_ready(env: LocalEnv, target: Target) -> str:
    """A deployment moved straight to preview_ready with its artifact (set directly: there is no edge or runner
    in-process, and the deploy pipeline is tested elsewhere). Promotion only needs the state and the digest."""
    from rhone_local.domain.manifest import digest_of

    response = env.client.post(
        f"{_app_path(env, target)}/deployments", json=_deployment_body(), headers=env.owner.headers
    )
    assert response.status_code == 202, response.text
    op = response.json()
    deployment_id = op["target_id"]
    with env.store.write() as c:
        c.execute("UPDATE operations SET state = 'preview_ready', version = version + 1 WHERE id = ?", (op["id"],))
        env.store.update_deployment(
            c, deployment_id, state="preview_ready", artifact_digest=digest_of(EMPTY_MANIFEST), evidence={}
        )
    return deployment_id


def live_allocation(env: LocalEnv, deployment_id: str) -> dict[str, Any]:
    """A ready allocation row of a deployment in its own environment (written directly: no process behind it)."""
    from rhone_local.domain.ids import new_id
    from rhone_local.store import now_iso

    deployment = env.store.deployment(deployment_id)
    region = env.store.primary_region()
    alloc = {
        "id": new_id("allocation"), "deployment_id": deployment_id, "environment_id": deployment["environment_id"],
        "artifact_digest": deployment["artifact_digest"], "region_id": region["id"],
        "cell_id": env.store.cells_of(region["id"])[0]["id"], "state": "ready", "version": 1, "pid": None,
        "port": None, "health": None, "created_at": now_iso(), "updated_at": now_iso(), "bindings_digest": None,
    }  # fmt: skip
    env.store.insert_allocation(alloc)
    return alloc


def _promote(env: LocalEnv, actor: Actor, target: Target) -> Call:
    deployment_id = _preview_ready(env, target)
    return Call("POST", f"/v1/deployments/{deployment_id}/promote", {"environment": "production"})


def _promote_approve(env: LocalEnv, actor: Actor, target: Target) -> Call:
    deployment_id = _preview_ready(env, target)
    return Call("POST", f"/v1/deployments/{deployment_id}/promote", {"environment": "production", "approve": True})


def _rollback(env: LocalEnv, actor: Actor, target: Target) -> Call:
    """Production owned by a second deployment (epoch 2) after a first (epoch 1): a rollback has a target."""
    _owned_production(env, target, owners=2)
    return Call("POST", f"{_app_path(env, target)}/environments/production/rollback", {})


def _freeze(env: LocalEnv, actor: Actor, target: Target) -> Call:
    return Call("POST", f"{_app_path(env, target)}/environments/production/freeze")


def _unfreeze(env: LocalEnv, actor: Actor, target: Target) -> Call:
    frozen = env.client.post(f"{_app_path(env, target)}/environments/production/freeze", headers=env.owner.headers)
    assert frozen.status_code == 200, frozen.text
    assert frozen.json()["frozen"] is True
    return Call("POST", f"{_app_path(env, target)}/environments/production/unfreeze")


def _policy(env: LocalEnv, actor: Actor, target: Target) -> Call:
    return Call("POST", f"{_app_path(env, target)}/environments/production/policy", {"approval_required": True})


def _owned_production(env: LocalEnv, target: Target, owners: int = 1) -> list[str]:
    """Production owned by the last of `owners` preview_ready deployments, one epoch each: the route moves written
    directly, the way finished promotions leave them."""
    deployments = [_preview_ready(env, target) for _ in range(owners)]
    assert target.app is not None
    environment = env.store.environment(target.app["id"], "production")
    assert environment is not None
    with env.store.write() as c:
        for epoch, deployment_id in enumerate(deployments):
            moved = env.store.move_route(
                c,
                app_id=target.app["id"],
                environment_id=environment["id"],
                route_key=f"{target.app['name']}--production",
                expect_epoch=epoch,
                deployment_id=deployment_id,
                artifact_digest=env.store.deployment(deployment_id)["artifact_digest"],
                operation_id=env.store.deployment(deployment_id)["operation_id"],
                kind="promote",
            )
            assert moved is not None
    return deployments


def _bind(env: LocalEnv, actor: Actor, target: Target) -> Call:
    body = {
        "name": "db",
        "kind": "postgres",
        "resource": f"pg://db-host/{env.name('db')}",
        "secrets": {"DATABASE_URL": "postgres://u:never-echoed@db-host/x"},
    }
    return Call("POST", f"{_app_path(env, target)}/environments/production/bindings", body)


def _unbind(env: LocalEnv, actor: Actor, target: Target) -> Call:
    path = f"{_app_path(env, target)}/environments/production/bindings"
    assert target.app is not None
    environment = env.store.environment(target.app["id"], "production")
    assert environment is not None
    with env.store.write() as c:  # a ready binding, as a finished binding operation leaves it
        c.execute(
            "INSERT INTO provider_bindings VALUES "
            "(?, ?, ?, ?, 'db', 'postgres', ?, 1, 0, ?, 'ready', 'op_x', 'now', 'now')",
            (
                f"pb_{env.name('x')}",
                environment["workspace_id"],
                target.app["id"],
                environment["id"],
                f"pg://db-host/{env.name('db')}",
                env.store.primary_region()["id"],
            ),
        )
    return Call("DELETE", f"{path}/db")


def _services(env: LocalEnv, actor: Actor, target: Target) -> Call:
    return Call("POST", f"{_app_path(env, target)}/environments/production/services", {"bind": ["session"]})


def _scale(env: LocalEnv, actor: Actor, target: Target) -> Call:
    _owned_production(env, target)
    return Call("POST", f"{_app_path(env, target)}/environments/production/scale", {"instances": 2})


def _enable_region(env: LocalEnv, actor: Actor, target: Target) -> Call:
    return Call("POST", f"{_app_path(env, target)}/environments/production/regions/local-2/enable")


def _config(env: LocalEnv, actor: Actor, target: Target) -> Call:
    return Call("POST", f"{_app_path(env, target)}/environments/production/config", {"values": {"FEATURE": "on"}})


def _gc(env: LocalEnv, actor: Actor, target: Target) -> Call:
    return Call("POST", "/v1/local/gc", {"dry_run": False})


WS_PATH = "/v1/workspaces/{ws}"
APP_PATH = WS_PATH + "/projects/{prj}/apps/{app}"
CASES: tuple[Case, ...] = (
    Case("member-invite", "member.invite", ("POST", WS_PATH + "/members"), 201, _invite, {"users": 1, "members": 1}),
    Case("token-create-self", "token.create", ("POST", WS_PATH + "/tokens"), 201, _token_self, {"tokens": 1}),
    Case(
        "token-create-other",
        "token.create",
        ("POST", WS_PATH + "/tokens"),
        201,
        _token_other,
        {"tokens": 1},
        handler_min_role="admin",  # "only owners and admins issue tokens for other members"
    ),
    Case("token-revoke-self", "token.revoke", ("DELETE", WS_PATH + "/tokens/{token_id}"), 200, _revoke_self),
    Case(
        "token-revoke-other",
        "token.revoke",
        ("DELETE", WS_PATH + "/tokens/{token_id}"),
        200,
        _revoke_other,
        handler_min_role="admin",  # "only owners and admins revoke other people's tokens"
    ),
    Case("project-create", "project.create", ("POST", WS_PATH + "/projects"), 202, _project, {"operations": 1}),
    Case("app-create", "app.create", ("POST", WS_PATH + "/projects/{prj}/apps"), 202, _app, {"operations": 1}),
    Case(
        "environment-create",
        "environment.create",
        ("POST", APP_PATH + "/environments"),
        202,
        _environment,
        {"operations": 1},
    ),
    Case(
        "runtime-identity-create",
        "runtime_identity.create",
        ("POST", APP_PATH + "/runtime-identities"),
        201,
        _runtime_identity,
        {"runtime_identities": 1, "tokens": 1},
    ),
    Case(
        "deployment-create",
        "deployment.create",
        ("POST", APP_PATH + "/deployments"),
        202,
        _deploy,
        {"operations": 1, "deployments": 1},
    ),
    Case(
        "deployment-approve", "deployment.approve", ("POST", "/v1/deployments/{deployment_id}/approve"), 202, _approve
    ),
    Case(
        "deployment-promote",
        "deployment.promote",
        ("POST", "/v1/deployments/{deployment_id}/promote"),
        202,
        _promote,
        {"operations": 1},
    ),
    Case(
        "deployment-promote-approve",
        "deployment.promote",
        ("POST", "/v1/deployments/{deployment_id}/promote"),
        202,
        _promote_approve,
        {"operations": 1},
        handler_min_role="admin",  # "only owners and admins can approve a promotion"
    ),
    Case(
        "route-rollback",
        "route.rollback",
        ("POST", APP_PATH + "/environments/{env}/rollback"),
        202,
        _rollback,
        {"operations": 1},
    ),
    Case("environment-freeze", "environment.freeze", ("POST", APP_PATH + "/environments/{env}/freeze"), 200, _freeze),
    Case(
        "environment-unfreeze",
        "environment.unfreeze",
        ("POST", APP_PATH + "/environments/{env}/unfreeze"),
        200,
        _unfreeze,
    ),
    Case(
        "environment-policy",
        "environment.policy",
        ("POST", APP_PATH + "/environments/{env}/policy"),
        200,
        _policy,
    ),
    Case(
        "binding-create",
        "binding.create",
        ("POST", APP_PATH + "/environments/{env}/bindings"),
        202,
        _bind,
        {"operations": 1, "provider_bindings": 1, "binding_secrets": 1},
    ),
    Case(
        "binding-remove",
        "binding.remove",
        ("DELETE", APP_PATH + "/environments/{env}/bindings/{name}"),
        202,
        _unbind,
        {"operations": 1},
    ),
    Case(
        "services-update",
        "services.update",
        ("POST", APP_PATH + "/environments/{env}/services"),
        202,
        _services,
        {"operations": 1},
    ),
    Case("app-scale", "app.scale", ("POST", APP_PATH + "/environments/{env}/scale"), 202, _scale, {"operations": 1}),
    Case(
        "region-enable",
        "region.enable",
        ("POST", APP_PATH + "/environments/{env}/regions/{region}/enable"),
        202,
        _enable_region,
        {"operations": 1, "environment_regions": 1},
    ),
    Case(
        "config-update",
        "config.update",
        ("POST", APP_PATH + "/environments/{env}/config"),
        202,
        _config,
        {"operations": 1, "environment_settings": 1},
    ),
    Case("local-gc", "local.gc", ("POST", "/v1/local/gc"), 200, _gc),
)

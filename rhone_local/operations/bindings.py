"""Provider bindings (kinds `binding.create`: requested → binding → bound; `binding.remove`: requested → unbinding →
unbound; either may end failed). A failed create leaves its binding `failed` and its secrets dropped, in the
failure's transaction.

At request time: what a binding may name (a resource of its own, or a database Rhone Local provisions, never one
provisioned for another environment; shared only read-only), and — in the request's transaction, so two racing
requests are serialized — one live binding per name and region, one value per secret variable. Secret values go
straight into `binding_secrets`; the operation's parameters hold their names only.
"""

from __future__ import annotations

from typing import Any, Protocol

from rhone_local.domain import topology as rules
from rhone_local.domain.errors import conflict, not_found
from rhone_local.domain.ids import new_id
from rhone_local.operations.kinds import Kind, onward, staged
from rhone_local.operations.placement import sharing_refusal
from rhone_local.operations.topology_stages import TopologyStages
from rhone_local.operations.unit_of_work import Origin, start_operation
from rhone_local.ports import DatabasePlanner
from rhone_local.store import Store, Tx


class BindingRequest(Protocol):
    """What a binding request asks for (the API's `BindingCreate`)."""

    name: str
    kind: str
    resource: str | None
    provision: bool
    provision_secrets: list[str]
    mutable: bool
    shared_read_only: bool
    secrets: dict[str, str]


def start_create(
    store: Store,
    c: Tx,
    origin: Origin,
    *,
    workspace_id: str,
    environment: dict[str, Any],
    region: dict[str, Any],
    body: BindingRequest,
    plan: Any,
) -> dict[str, Any]:
    """Record the binding (`requested`, with its secrets) and its `binding.create` operation, or the refusal."""
    resource = resource_of(body, plan)
    binding_id = new_id("provider_binding")
    secret_names = sorted(set(body.provision_secrets)) if plan else sorted(body.secrets)
    op = start_operation(
        store,
        c,
        origin,
        workspace_id=workspace_id,
        kind="binding.create",
        target_kind="provider_binding",
        target_id=binding_id,
        params={
            "binding_id": binding_id,
            "environment_id": environment["id"],
            "name": body.name,
            "region": region["name"],
            "secrets": secret_names,  # names only
            "provision": plan.kind if plan else None,
        },
    )
    live = store.live_binding_named(environment["id"], body.name, region["id"])
    if live is not None:
        raise conflict(
            "binding_exists",
            f"{body.name} is already bound in {environment['name']} ({region['name']}); unbind it first",
            binding_id=live["id"],
        )
    taken = store.secret_names_taken(c, environment["id"], region["id"], secret_names)
    if taken:
        raise conflict(
            "secret_name_taken",
            f"{taken[0]['name']} is already provided by binding {taken[0]['binding']} in "
            f"{environment['name']}: an allocation gets one value per variable",
            secret=taken[0]["name"],
        )
    clash = sharing_refusal(
        store, rules.BindingSpec(environment["name"], resource, body.mutable, body.shared_read_only)
    )
    if clash is not None:
        raise conflict("shared_mutable_resource", clash)
    store.insert_provider_binding(
        c,
        binding_id=binding_id,
        workspace_id=workspace_id,
        app_id=environment["app"]["id"],
        environment_id=environment["id"],
        name=body.name,
        kind=body.kind,
        resource=resource,
        mutable=body.mutable,
        shared_read_only=body.shared_read_only,
        region_id=region["id"],
        operation_id=op["id"],
        secrets=body.secrets,
    )
    return op


def check_create(store: Store, databases: DatabasePlanner, environment: dict[str, Any], body: BindingRequest) -> Any:
    """Refuse what a binding may not name, before anything is recorded; the provisioned database's plan, or None for
    a plain binding."""
    plan = provision_plan(databases, environment, body)
    _refuse_provisioned_elsewhere(store, databases, environment, resource_of(body, plan))
    if body.shared_read_only and body.mutable:
        raise conflict(
            "shared_mutable_resource",
            "a shared binding must be read-only: declare it --read-only too, or bind a resource of its own",
        )
    return plan


def resource_of(body: BindingRequest, plan: Any) -> str:
    return plan.resource if plan else rules.normalize_resource(body.resource)


def provision_plan(databases: DatabasePlanner, environment: dict[str, Any], body: BindingRequest) -> Any:
    """Where a provisioned database will live (its resource is Rhone Local's choice), or None for a plain binding."""
    # Rules across fields, beyond the body's schema: refused as conflicts, like contradictory service changes.
    if not body.provision:
        if body.resource is None:
            raise conflict("resource_required", "a binding names its resource (--resource), or is --provision")
        return None
    if body.resource is not None or body.secrets:
        raise conflict(
            "provision_conflict",
            "a provisioned database's location and credentials are Rhone Local's to choose: drop --resource and "
            "secret values (name the variables with provision_secrets)",
        )
    if not body.mutable or body.shared_read_only:
        raise conflict("shared_mutable_resource", "a provisioned database belongs to its environment alone")
    return databases.plan(environment["id"], body.name, body.kind)


def _refuse_provisioned_elsewhere(
    store: Store, databases: DatabasePlanner, environment: dict[str, Any], resource: str
) -> None:
    """A database Rhone Local provisioned for one environment is never bound to another, bound or not."""
    for row in store.all_provisioned():
        if row["environment_id"] == environment["id"]:
            continue
        if rules.normalize_resource(databases.plan(row["environment_id"], row["name"], row["kind"]).resource) == (
            resource
        ):
            owner = store.environment_by_id(row["environment_id"])
            raise conflict(
                "shared_mutable_resource",
                f"{resource} is the database provisioned for environment {owner['name']}: preview and production "
                "never share one. Provision one for this environment (--provision)",
            )


def removable_binding(
    store: Store, environment: dict[str, Any], region: dict[str, Any], name: str, env: str, *, delete_data: bool
) -> dict[str, Any]:
    """The ready binding `name` in the region, or the refusal (`env`: the environment as the request named it);
    `delete_data` needs a database Rhone Local provisioned."""
    binding = store.ready_binding_named(environment["id"], name, region["id"])
    if binding is None:
        raise not_found("binding", f"{name} in {env} ({region['name']})")
    if delete_data and store.provisioned(environment["id"], name) is None:
        raise conflict(
            "not_provisioned", f"{name} in {env} is not a database Rhone Local provisioned: it has no data to delete"
        )
    return binding


def start_remove(
    store: Store,
    c: Tx,
    origin: Origin,
    *,
    workspace_id: str,
    environment: dict[str, Any],
    binding: dict[str, Any],
    env: str,
    delete_data: bool,
) -> dict[str, Any]:
    """Record the `binding.remove` operation and mark the binding `unbinding`, or the refusal: its database's data is
    deleted only once no allocation uses it, and a binding is unbound once."""
    name = binding["name"]
    op = start_operation(
        store,
        c,
        origin,
        workspace_id=workspace_id,
        kind="binding.remove",
        target_kind="provider_binding",
        target_id=binding["id"],
        params={
            "binding_id": binding["id"],
            "environment_id": environment["id"],
            "name": name,
            "delete_data": delete_data,
        },
    )
    if delete_data:
        using = store.allocations_given(c, binding)
        if using:
            raise conflict(
                "data_in_use",
                f"{len(using)} allocation(s) of {env} still use {name}'s database ({', '.join(using[:3])}); "
                f"stop them first (`rhone app scale --env {env} --instances 0`), or unbind without --delete-data",
                allocations=using,
            )
    if not store.start_unbinding(c, binding["id"]):
        raise conflict("binding_busy", f"{name} is already being unbound")
    return op


def kinds(store: Store, topology: TopologyStages) -> dict[str, Kind]:
    def create_failed(op: dict[str, Any], failure: Any, c: Tx) -> None:
        store.fail_binding(c, op["params"]["binding_id"])

    return {
        "binding.create": Kind(
            "binding.create",
            {"requested": onward("binding.create"), "binding": staged("binding.create", topology.bind_provider)},
            on_failure=create_failed,
        ),
        "binding.remove": Kind(
            "binding.remove",
            {"requested": onward("binding.remove"), "unbinding": staged("binding.remove", topology.unbind_provider)},
        ),
    }

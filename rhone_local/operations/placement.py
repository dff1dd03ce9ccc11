"""Where an environment may run and what it lacks there: the checks the API makes at request time and the stages
make again when they run (region enablement, scale, promotion). They read the store and apply the domain's rules;
nothing here starts or probes a process.
"""

from __future__ import annotations

from typing import Any

from rhone_local.domain import topology as rules
from rhone_local.store import Store


def provisioning_failure(
    store: Store, environment: dict[str, Any], region: dict[str, Any], config: dict[str, Any]
) -> rules.GateFailure | None:
    """Residency, data topology and secrets of one region, for a deployment's config: the first that fails."""
    policy = (config.get("environments") or {}).get(environment["name"]) or {}
    providers = {n: p for n, p in (config.get("providers") or {}).items() if p.get("required", True)}
    present = {
        b["name"]: store.secret_names(b["id"])
        for b in store.provider_bindings(environment["id"])
        if b["region_id"] == region["id"] and b["state"] == "ready"
    }
    return (
        rules.residency_gate(region["name"], region["jurisdiction"], policy.get("residency") or [])
        or rules.data_topology_gate(
            region["name"], sorted(providers), store.ready_providers(environment["id"], region["id"])
        )
        or rules.secrets_gate(region["name"], {n: p.get("secrets") or [] for n, p in providers.items()}, present)
    )


def services_failure(
    store: Store, environment: dict[str, Any], region: dict[str, Any], config: dict[str, Any]
) -> rules.GateFailure | None:
    requirements = rules.scale_requirements(config)
    return rules.runtime_services_gate(
        region["name"], requirements, store.bound_services(environment["id"], region["id"])
    )


def sharing_refusal(store: Store, spec: rules.BindingSpec, *, exclude: str | None = None) -> str | None:
    """Why a binding like `spec` may not share its resource with the bindings still using it, or None."""
    others = [
        rules.BindingSpec(o["environment"], o["resource"], bool(o["mutable"]), bool(o["shared_read_only"]))
        for o in store.bindings_of_resource(spec.resource, exclude=exclude)
    ]
    found = rules.sharing_conflict(spec, others)
    if found is None:
        return None
    return (
        f"{spec.resource} is already bound to environment {found.environment}: a mutable resource serves one "
        "environment (preview and production must not share a database). Bind a separate resource, or declare "
        "both bindings --shared --read-only"
    )


def missing_for_scale(
    store: Store, environment: dict[str, Any], config: dict[str, Any], instances: int
) -> tuple[list[dict[str, str]], list[dict[str, Any]], list[dict[str, str]]]:
    """What stops `instances` of a deployment with `config` from running in the environment: each missing runtime
    service with its reason and region; also the regions it would run in, and the eligible ones it would not."""
    regions, skipped = serving_regions(store, environment, config)
    missing = [
        {**r.to_dict(), "region": region["name"]}
        for region in regions
        for r in rules.scale_refusal(instances, config, store.bound_services(environment["id"], region["id"]))
    ]
    return missing, regions, skipped


def listed(missing: list[dict[str, str]]) -> str:
    return "; ".join(f"{m['service']} in {m['region']} ({m['reason']})" for m in missing)


def serving_regions(
    store: Store, environment: dict[str, Any], config: dict[str, Any]
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """The environment's eligible regions where a deployment with `config` may run, and the others with why not.

    Eligibility was granted for the deployment that owned the route then; a newer one may need a provider, a
    residency or a service that region lacks. The primary region always serves (its bindings are checked by the
    deploy and promotion gates)."""
    serving, skipped = [], []
    for region in store.eligible_regions(environment["id"]):
        failure = None
        if not region["is_primary"]:
            failure = provisioning_failure(store, environment, region, config) or services_failure(
                store, environment, region, config
            )
        if failure is None:
            serving.append(region)
        else:
            skipped.append({"region": region["name"], "code": failure.code, "message": failure.message})
    return serving, skipped


def runner_nodes(
    store: Store, count: int, *, own: tuple[str, str] | None, lapse: float
) -> list[tuple[str, str] | None]:
    """The (node, address) of each of `count` new allocations: a live node with the runner role, the least loaded
    first (its live allocations plus those placed in this call; ties by name), never a lapsed one. With no node
    registered as a live runner, this process's own runner (`own`, None when it has no runner role) — a control
    plane that never joined a cluster (the in-process tests) places everything on itself; None: nowhere to run."""
    live = [(n["name"], n["address"]) for n in store.live_nodes("runner", lapse)]
    if not live:
        return [own] * count
    loads = store.node_loads()
    placed: list[tuple[str, str] | None] = []
    for _ in range(count):
        name, address = min(live, key=lambda node: (loads.get(node[0], 0), node[0]))
        loads[name] = loads.get(name, 0) + 1
        placed.append((name, address))
    return placed

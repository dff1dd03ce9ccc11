"""Bindings, scale and region rules, as pure functions over facts the caller gathered.

- A mutable resource (a database, a bucket) is bound to one environment name only: preview and production sharing
  a mutable database is the classic accident. Only bindings declared shared *and* read-only
  on every side may share a resource.
- More than one instance of an app needs the runtime services its contracts rely on: a durable session
  store and a broadcast backend when it keeps server-side sessions, an idempotency store when it declares routes that
  are unsafe to replay, plus whatever `[runtime] services` lists.
- A region serves an environment only once every correctness-bearing dependency is there: residency,
  data topology (providers bound in that region), secrets, runtime services, and the artifact.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

RUNTIME_SERVICES = ("session", "broadcast", "idempotency", "cache", "queue", "object_storage")
# What each kind of service provider can serve: Rhone Local's engines speak Redis and NATS, a SQL session store is a
# provisioned database; `local` picks Redis where it serves, Rhone Local's own implementation elsewhere.
ENGINE_SERVICES = {
    "redis": ("session", "broadcast", "cache", "queue"),
    "nats": ("broadcast", "queue"),
    "sql": ("session",),
}
# The providers that are servers Rhone Local runs itself, one per lane (rhone_local/engines.py).
ENGINE_PROVIDERS = ("redis", "nats")
# Services Rhone Local still implements itself (a SQLite file, a directory): `local` means these for them.
LOCAL_SERVICES = ("idempotency", "object_storage")


def service_engine(service: str, provider: str) -> str:
    """What serves a runtime service bound with `--provider`: an engine (`redis`, `nats`), a provisioned database
    (`sql`), Rhone Local's own implementation (`local`), or the external URL itself."""
    if "://" in provider:
        return provider
    if provider == "local":
        return "local" if service in LOCAL_SERVICES else "redis"
    return provider


def provider_refusal(services: Iterable[str], provider: str) -> str | None:
    """Why `provider` cannot serve one of `services`, or None (an external URL serves whatever it is bound to)."""
    allowed = ENGINE_SERVICES.get(provider)
    if allowed is None:
        return None
    wrong = [s for s in services if s not in allowed]
    if not wrong:
        return None
    return (
        f"{provider} does not serve {', '.join(wrong)}: it serves {', '.join(allowed)}. "
        "Bind those with the default provider (local) in a separate command"
    )


@dataclass(frozen=True)
class Requirement:
    service: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def runtime_of(config: dict[str, Any]) -> dict[str, Any]:
    """The [runtime] section of a deployment's resolved rhone.toml, with the defaults of older clients filled in."""
    runtime = dict(config.get("runtime") or {})
    runtime.setdefault("services", [])
    runtime.setdefault("server_sessions", True)
    runtime.setdefault("unsafe_replay_routes", [])
    return runtime


def scale_requirements(config: dict[str, Any]) -> list[Requirement]:
    """The runtime services an app needs before it may run more than one instance, each with its reason."""
    runtime = runtime_of(config)
    needed: dict[str, str] = {}
    if runtime["server_sessions"]:
        needed["session"] = "server sessions must resume on another instance: a durable session store"
        needed["broadcast"] = "live state must reach sessions on every instance: a broadcast backend"
    if runtime["unsafe_replay_routes"]:
        routes = ", ".join(runtime["unsafe_replay_routes"][:3])
        needed["idempotency"] = f"routes unsafe to replay ({routes}) need an idempotency store before retries"
    for service in runtime["services"]:
        needed.setdefault(service, "listed in [runtime] services")
    return [Requirement(service, needed[service]) for service in RUNTIME_SERVICES if service in needed]


def live_sessions(config: dict[str, Any], bound: Iterable[str]) -> str | None:
    """What a route move means for the sessions live on the previous owner: `resume` (the new owner reads them from the
    environment's session store), `restart` (no store: their state is lost), or None (the app keeps no server
    sessions)."""
    if not runtime_of(config)["server_sessions"]:
        return None
    return "resume" if "session" in set(bound) else "restart"


def missing_services(requirements: Iterable[Requirement], bound: Iterable[str]) -> list[Requirement]:
    have = set(bound)
    return [r for r in requirements if r.service not in have]


def scale_refusal(instances: int, config: dict[str, Any], bound: Iterable[str]) -> list[Requirement]:
    """What stops `instances` from running: nothing for one instance; the missing services above one."""
    if instances <= 1:
        return []
    return missing_services(scale_requirements(config), bound)


# -- provider bindings ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BindingSpec:
    environment: str  # the environment's name
    resource: str
    mutable: bool
    shared_read_only: bool


def normalize_resource(resource: str) -> str:
    """One spelling per resource, so `PG://Host/db/` and `pg://host/db` are recognised as the same database: the
    scheme and host are case-insensitive, and a trailing slash names nothing else."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(resource.strip())
    if parts.scheme and parts.netloc:
        return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path.rstrip("/"), parts.query, ""))
    return resource.strip().rstrip("/") or resource


def sharing_conflict(new: BindingSpec, existing: Sequence[BindingSpec]) -> BindingSpec | None:
    """The live binding `new` may not share its resource with, or None.

    The same resource in environments of the same name (the production of two apps, say) is one lane; across
    names it is shared between lanes, allowed only when both sides are declared shared and read-only."""
    for other in existing:
        if other.resource != new.resource or other.environment == new.environment:
            continue
        if new.shared_read_only and other.shared_read_only and not new.mutable and not other.mutable:
            continue
        return other
    return None


# -- region enablement ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GateFailure:
    code: str
    message: str
    facts: dict[str, Any]


def residency_gate(region: str, jurisdiction: str, allowed: Sequence[str]) -> GateFailure | None:
    if not allowed or jurisdiction in allowed:
        return None
    return GateFailure(
        "residency_violation",
        f"region {region} is in jurisdiction {jurisdiction!r}; the environment's residency allows only "
        f"{', '.join(allowed)}",
        {"region": region, "jurisdiction": jurisdiction, "allowed": list(allowed)},
    )


def data_topology_gate(region: str, required_providers: Sequence[str], bound_here: Iterable[str]) -> GateFailure | None:
    missing = sorted(set(required_providers) - set(bound_here))
    if not missing:
        return None
    return GateFailure(
        "data_topology_not_ready",
        f"no ready binding in region {region} for provider(s) {', '.join(missing)}: the data is not there "
        f"(`rhone env bind … --region {region}`)",
        {"region": region, "missing_providers": missing},
    )


def secrets_gate(
    region: str, declared: dict[str, Sequence[str]], present: dict[str, Iterable[str]]
) -> GateFailure | None:
    """`declared`: provider → secret names rhone.toml says it needs; `present`: provider → names its binding has."""
    missing = {
        provider: sorted(set(names) - set(present.get(provider, ())))
        for provider, names in declared.items()
        if set(names) - set(present.get(provider, ()))
    }
    if not missing:
        return None
    listed = "; ".join(f"{provider}: {', '.join(names)}" for provider, names in sorted(missing.items()))
    return GateFailure(
        "secret_missing",
        f"secrets missing from the bindings in region {region} ({listed})",
        {"region": region, "missing_secrets": missing},
    )


def runtime_services_gate(region: str, requirements: Sequence[Requirement], bound: Iterable[str]) -> GateFailure | None:
    missing = missing_services(requirements, bound)
    if not missing:
        return None
    return GateFailure(
        "runtime_services_missing",
        f"runtime services not bound in region {region}: " + "; ".join(f"{r.service} ({r.reason})" for r in missing),
        {"region": region, "missing": [r.to_dict() for r in missing]},
    )

"""Allocations, provider bindings and runtime services, for people."""

from __future__ import annotations

from typing import Any

from rhone_cli.output import Output
from rhone_cli.render import Human, table

ALLOCATION_COLUMNS = (
    ["id", "deployment", "env", "region", "cell", "node", "state", "owner", "health"],
    ["id", "deployment_id", "environment", "region", "cell", "node", "state", "route_owner", "health_summary"],
)
BINDING_COLUMNS = (
    ["name", "kind", "resource", "region", "state", "mutable", "shared", "secrets"],
    ["name", "kind", "resource", "region", "state", "mutable", "shared_read_only", "secrets"],
)


def allocations(rows: list[dict[str, Any]]) -> Human:
    shown = [{**row, "health_summary": health_summary(row.get("health"))} for row in rows]
    return table(*ALLOCATION_COLUMNS, shown, "no allocations")


def health_summary(health: dict | None) -> str:
    if not health:
        return "-"
    loop, drain = health.get("crash_loop"), health.get("drain") or {}
    if loop:
        return f"crash loop: {loop['failures']} quick failures in a row, next attempt in {loop['next_attempt_in']:g}s"
    if drain and not drain.get("ended_at"):
        return f"draining: {drain.get('open_connections', 0)} open connection(s), cut at {drain.get('deadline')}"
    if health.get("error"):
        return str(health["error"])
    if health.get("stopped_because"):
        outcome = drain.get("outcome")
        how = f" ({outcome}" + (f", {drain['cut_connections']} cut)" if outcome == "cut" else ")") if outcome else ""
        return f"stopped: {health['stopped_because']}{how}"
    return "ready" if health.get("ready") else str(health.get("last", "-"))


def bindings(rows: list[dict[str, Any]], environment: str) -> Human:
    return table(*BINDING_COLUMNS, rows, f"no provider bindings in {environment}")


def _engine_columns(row: dict) -> list[str]:
    """Whether the engine answers (and how often it was restarted), and how many of the lane's allocations hold a
    connection to it: bound but unused shows as 0/N."""
    if row.get("engine_up") is None:
        return ["-", "-"]
    restarts = row.get("engine_restarts") or 0
    state = ("up" if row["engine_up"] else "down") + (f" ({restarts} restart(s))" if restarts else "")
    allocations = row.get("allocations")
    if allocations is None:
        return [state, "?"]
    return [state, f"{sum(a['connections'] > 0 for a in allocations)}/{len(allocations)} allocation(s)"]


def services(doc: dict) -> Human:
    def human(out: Output) -> None:
        out.table(
            ["service", "region", "provider", "engine", "connected", "operation"],
            [[r["service"], r["region"], r["provider"], *_engine_columns(r), r["operation_id"]] for r in doc["items"]],
            empty=f"no runtime services bound in {doc['environment']}",
        )
        for r in doc["items"]:
            if r.get("engine_up") is False:
                out.warn(f"{r['service']} in {r['region']} is down: {r.get('engine_error')}")
        if doc["required"]:
            out.line()
            out.line("needed for more than one instance:")
            missing = {r["service"] for r in doc["missing"]}
            for requirement in doc["required"]:
                mark = "missing" if requirement["service"] in missing else "bound"
                out.line(f"  {requirement['service']:<14} {mark:<8} {requirement['reason']}")

    return human


def settings(doc: dict) -> Human:
    def human(out: Output) -> None:
        rows = [
            [i["name"], "********" if i["secret"] else i["value"], "yes" if i["secret"] else "", i["source"]]
            for i in doc["items"]
        ]
        out.table(["name", "value", "secret", "source"], rows, empty=f"no settings in {doc['environment']}")
        if doc["missing"]:
            out.line()
            out.line(f"required but missing (deploys are refused): {', '.join(doc['missing'])}")

    return human

"""Route moves (promotion, rollback), for people."""

from __future__ import annotations

from rhone_cli.output import Output
from rhone_cli.render import Human


def route_move(doc: dict) -> Human:
    """Where the environment's route points now, its epoch, the artifact, and what became of the previous owner."""

    def human(out: Output) -> None:
        if "route_key" not in doc:  # --no-wait: the operation
            out.line(f"{doc['id']}  {doc['kind']}  {doc['state']}")
            return
        label = "Production" if doc["environment"] == "production" else doc["environment"].capitalize()
        out.line(f"{label}: {doc['url']}" + ("" if doc.get("changed", True) else "  (unchanged)"))
        out.line(f"  {'route:':<10}{doc['route_key']} epoch {doc['epoch']} → {doc['deployment_id']}")
        out.line(f"  {'artifact:':<10}{doc['artifact_digest']}")
        if doc.get("previous_owner"):
            out.line(f"  {'previous:':<10}{doc['previous_owner']} {_drain_summary(doc)}")

    return human


def _drain_summary(doc: dict) -> str:
    """What happened to the previous owner's allocations when the route moved: they drain on their own (the command
    does not wait), so say that, with the connections they still hold, never that they are done."""
    draining = doc.get("draining") or []
    if not draining:
        return "(no allocation of it was running)"
    opened = sum(d.get("open_connections", 0) for d in draining)
    timeout = max(d.get("timeout", 0) for d in draining)
    return (
        f"(draining {len(draining)} allocation(s) with {opened} open connection(s); stopped when they close, "
        f"cut after {timeout:g}s; `rhone app allocations --env {doc['environment']} --all` shows how each ended)"
    )


def warn_sessions(out: Output, doc: dict) -> None:
    """Without a session store, a release restarts the sessions that live on the previous owner: say so plainly."""
    if doc.get("live_sessions") == "restart":
        env = doc["environment"]
        out.warn(
            f"{env} has no session store: sessions live on {doc['previous_owner']} restart on the new release when "
            f"their connections move (their state is lost); `rhone env services {env} --bind session` keeps them"
        )

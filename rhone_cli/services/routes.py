"""Promotion, rollback, freezing, and route ownership reads."""

from __future__ import annotations

from typing import Any

from rhone_cli.api import Target
from rhone_cli.invocation import Invocation
from rhone_cli.services import operations


def promote(
    inv: Invocation,
    deployment_id: str,
    *,
    environment: str,
    expect_digest: str | None,
    expect_epoch: int | None,
    approve: bool,
    no_wait: bool,
    timeout: float | None,
    allow_unsafe_db: bool = False,
) -> dict[str, Any]:
    body = {
        "environment": environment,
        "expect_digest": expect_digest,
        "expect_epoch": expect_epoch,
        "approve": approve,
        "allow_unsafe_db": allow_unsafe_db,
    }
    op = operations.follow(inv, inv.api().promote(deployment_id, body), no_wait=no_wait, timeout=timeout)
    return op if no_wait else route_after(inv, op)


def rollback(
    inv: Invocation,
    target: Target,
    environment: str,
    *,
    to: str | None,
    allow_unsafe_db: bool,
    expect_epoch: int | None,
    no_wait: bool,
    timeout: float | None,
    approve: bool = False,
) -> dict[str, Any]:
    body = {"to_deployment": to, "allow_unsafe_db": allow_unsafe_db, "expect_epoch": expect_epoch, "approve": approve}
    op = inv.api().rollback(target, environment, body)
    op = operations.follow(inv, op, no_wait=no_wait, timeout=timeout)
    return op if no_wait else route_after(inv, op)


def route_after(inv: Invocation, op: dict[str, Any]) -> dict[str, Any]:
    """What the finished operation did to the route: the key, the new epoch, the owner and its URL (`changed` is
    false when the deployment already owned it: the server then moves nothing)."""
    moved = next(s["evidence"] for s in op["stages"] if s["state"] == "edge_propagating")
    if moved.get("unchanged"):
        inv.out.info(f"{op['params']['deployment_id']} already served {op['params']['environment']}: nothing changed")
    final = op["stages"][-1]["evidence"]
    return {
        "route_key": op["params"]["route_key"],
        "environment": op["params"]["environment"],
        "epoch": moved["epoch"],
        "deployment_id": op["params"]["deployment_id"],
        "artifact_digest": op["params"]["expect_digest"],
        "previous_owner": moved.get("previous_owner"),
        # The previous owner's allocations as they started draining (each ends on its own; see its health).
        "draining": final.get("draining", []),
        # Whether sessions live on the previous owner resume on the new one (from the session store) or restart.
        "live_sessions": final.get("live_sessions"),
        "url": final.get("url"),
        "operation_id": op["id"],
        "state": op["state"],
        "changed": not moved.get("unchanged", False),
    }

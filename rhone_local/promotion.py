"""Promotion and rollback: move an environment's route to a validated deployment's exact artifact.

Stages: requested → policy_check → route_cas → edge_propagating → healthy (a rollback ends rolled_back), or failed.
- policy_check: the deployment is preview_ready and its artifact is the digest the caller expected (promotion never
  builds); the environment is not frozen; approval is present when required; declared providers are bound; then
  the target environment's allocation is started from the same artifact and must be ready before the route moves;
- route_cas: one compare-and-swap on the predecessor epoch, committed with its event and the operation's next
  state in a single transaction — losing the race fails with route_epoch_conflict and changes nothing;
- edge_propagating: wait until every live edge has applied that route event; then the previous owner's allocations
  start draining — the operation does not wait for them: each keeps its open connections until they close or its
  `[process] drain_timeout` passes, and records which it was (drained or cut) on its own health.
"""

from __future__ import annotations

from typing import Any

from rhone_local.domain import topology as topology_rules
from rhone_local.domain.errors import StageFailed
from rhone_local.domain.urls import route_key_taken
from rhone_local.edge_feed import EDGE_LEASE_SECONDS
from rhone_local.operations.placement import serving_regions
from rhone_local.operations.promote import check_policy
from rhone_local.pipeline import DeployPipeline, not_ready_message
from rhone_local.store import Store

# Longer than an edge's lease: an edge that stopped answering is waited for only until it has failed closed.
PROPAGATION_TIMEOUT_SECONDS = EDGE_LEASE_SECONDS + 5.0


class Promotions:
    def __init__(self, store: Store, pipeline: DeployPipeline, edge: Any = None) -> None:
        self.store = store
        self.pipeline = pipeline
        self.edge = edge  # the edges' feed (`EdgeFeed`; None when Rhone Local runs no edge: nothing to propagate to)

    def policy_check(self, op: dict[str, Any]) -> dict[str, Any]:
        evidence = check_policy(self.store, self.pipeline, op["params"], kind=op["kind"])
        return self.ensure_target_ready(op, evidence)

    def ensure_target_ready(self, op: dict[str, Any], evidence: dict[str, Any] | None = None) -> dict[str, Any]:
        """The target environment's allocation, started from the deployment's artifact unless one is ready and
        running; StageFailed if it does not become ready. Run by policy_check, and again just before the CAS
        (outside its transaction): a restart in between can lose the process policy_check readied (a crash that
        took the app down too), and the route must never move onto an allocation that is not ready."""
        params = op["params"]
        evidence = dict(evidence or {})
        deployment = self.store.deployment(params["deployment_id"])
        environment = self.store.environment_by_id(params["environment_id"])
        runner = self.pipeline.runner
        instances = max(environment.get("instances", 1), 1)
        # Only the eligible regions where this deployment's own needs (providers, residency, services) are met.
        regions, evidence["skipped_regions"] = serving_regions(self.store, environment, deployment["config"])
        allocations = runner.ensure_instances(deployment, environment, instances, regions=regions)
        evidence["allocations"] = [{"id": a["id"], "state": a["state"], "health": a["health"]} for a in allocations]
        evidence["allocation"] = evidence["allocations"][0]
        not_ready = [a for a in allocations if a["state"] != "ready"]
        if not_ready:
            raise StageFailed(
                "readiness_failed",
                f"{len(not_ready)} of {instances} {environment['name']} allocation(s) failed, the route did not move; "
                + not_ready_message(f"allocation {not_ready[0]['id']}", not_ready[0]),
                evidence,
            )
        return evidence

    def route_cas(self, op: dict[str, Any], c: Any) -> dict[str, Any]:
        """In the caller's transaction: the compare-and-swap and its event. Raises StageFailed on a lost race.
        Promoting the deployment that already owns the route, with the artifact it serves, at the epoch expected, is
        not a change: after the same policy check, nothing moves — no event, no new epoch, nothing drained."""
        params = op["params"]
        deployment = self.store.deployment(params["deployment_id"])
        current = self.store.route_owner(deployment["app_id"], params["environment_id"])
        if (
            op["kind"] == "promote"
            and current is not None
            and current["deployment_id"] == deployment["id"]
            and current["artifact_digest"] == deployment["artifact_digest"]
            and current["epoch"] == params["expect_epoch"]
        ):
            return {"epoch": current["epoch"], "seq": None, "previous_owner": None, "unchanged": True}
        # Route keys are hostnames on one edge: another app (of a project, or a workspace, that shares the name)
        # may have taken this one since the request was accepted. Read in the CAS's transaction, so of two such
        # promotions exactly one moves and the other fails cleanly (its target allocation is released).
        holder = self.store.route_key_holder(params["route_key"], deployment["app_id"], tx=c)
        if holder is not None:
            raise StageFailed(
                "route_key_taken",
                route_key_taken(holder, params["route_key"], deployment["workspace_id"]),
                {"route_key": params["route_key"]},
            )
        event = self.store.move_route(
            c,
            app_id=deployment["app_id"],
            environment_id=params["environment_id"],
            route_key=params["route_key"],
            expect_epoch=params["expect_epoch"],
            deployment_id=deployment["id"],
            artifact_digest=deployment["artifact_digest"],
            operation_id=op["id"],
            kind=op["kind"],
        )
        if event is None:
            current = self.store.route_owner(deployment["app_id"], params["environment_id"])
            raise StageFailed(
                "route_epoch_conflict",
                f"route {params['route_key']} moved: expected epoch {params['expect_epoch']}, it is now "
                f"{current['epoch'] if current else 0} (owner {current['deployment_id'] if current else 'none'})",
                {
                    "expected_epoch": params["expect_epoch"],
                    "current_epoch": current["epoch"] if current else 0,
                    "current_owner": current["deployment_id"] if current else None,
                },
            )
        self.pipeline.record_applied_migrations(c, params["environment_id"], deployment, op["id"])
        return {"epoch": event["epoch"], "seq": event["seq"], "previous_owner": event["previous_deployment_id"]}

    def propagate(self, op: dict[str, Any]) -> dict[str, Any]:
        """Wait for the edge to apply the committed epoch, then drain the previous owner."""
        params = op["params"]
        cas = next(s["evidence"] for s in reversed(op["stages"]) if s["state"] == "edge_propagating")
        evidence: dict[str, Any] = {"epoch": cas["epoch"]}
        if cas["seq"] is None:  # the route did not move (its owner was promoted again): nothing to propagate
            evidence["edge"] = "unchanged"
        elif self.edge is not None:
            applied = self.edge.wait_applied(cas["seq"], PROPAGATION_TIMEOUT_SECONDS)
            if applied is None:
                raise StageFailed(
                    "edge_propagation_timeout",
                    f"the edge did not apply epoch {cas['epoch']} (route sequence {cas['seq']}) within "
                    f"{PROPAGATION_TIMEOUT_SECONDS:g}s",
                    evidence,
                )
            evidence["edges"] = applied
            evidence["edge_seq"] = min(applied.values(), default=cas["seq"])
        else:
            evidence["edge"] = "not running"
        evidence["url"] = self.pipeline.urls.route(params["route_key"])
        if cas.get("previous_owner") and cas["previous_owner"] != params["deployment_id"]:
            draining = self.pipeline.runner.stop_environment(
                cas["previous_owner"], params["environment_id"], f"route moved to {params['deployment_id']}"
            )
            evidence["draining"] = [
                {"id": a["id"], **{k: a["health"]["drain"][k] for k in ("open_connections", "timeout", "deadline")}}
                for a in draining
            ]
            config = self.store.deployment(params["deployment_id"])["config"]
            bound = self.store.bound_services(params["environment_id"], self.store.primary_region()["id"])
            evidence["live_sessions"] = topology_rules.live_sessions(config, bound)
        return evidence

    def release(self, op: dict[str, Any]) -> int:
        """After a promotion failed (recorded first, so a stale worker never gets here): stop the target
        environment's allocation that policy_check started for it — a promotion that lost the race at route_cas
        would otherwise leave it running. Kept when the deployment owns the route (a failure after the move), when
        the environment is the deployment's own (its preview), or while another promotion of it there is live."""
        params = op["params"]
        deployment = self.store.deployment(params["deployment_id"])
        if deployment is None or deployment["environment_id"] == params["environment_id"]:
            return 0
        runner = self.pipeline.runner
        # ensure_running holds the same lock: no promotion picks the allocation up while it is being stopped.
        with runner._lock_for(deployment["id"], params["environment_id"]):
            owner = self.store.route_owner(deployment["app_id"], params["environment_id"])
            if owner is not None and owner["deployment_id"] == deployment["id"]:
                return 0
            live = self.store.promotion_under_way(deployment["id"], params["environment_id"], exclude=op["id"])
            if live:
                return 0
            return len(
                runner.stop_environment(deployment["id"], params["environment_id"], f"{op['kind']} {op['id']} failed")
            )

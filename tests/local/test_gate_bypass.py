"""The deploy gates compare a candidate with what production declared, persisted and applied — not only with the
candidate's own declarations (issue 12, items 2 and 3). Through the real API, pipeline, workers and runner.
"""

from __future__ import annotations

from typing import Any

import pytest

from ._stack import Stack, hello_config, hello_files, state_schema

pytestmark = pytest.mark.slow

SCHEMA = "vango_state_schema.json"
PERSISTED = {"app.Prefs#signal@0": "fp:1", "app.Cart#signal@0": "fp:2"}
HASH_1, HASH_2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64


def gate(op: dict[str, Any], name: str) -> dict[str, Any]:
    [found] = [g for g in op["stages"][-1]["evidence"]["gates"] if g["gate"] == name]
    return found


def blocked(stack: Stack, files: dict[str, bytes], config: dict[str, Any], code: str) -> dict[str, Any]:
    """Deploy a candidate that must stop at `blocked` with `code`, starting no allocation and moving no route."""
    before = (stack.owner_of(), stack.live_allocations("preview"), stack.live_allocations())
    op = stack.deploy(files, config)
    assert (op["state"], op["error"]["code"]) == ("blocked", code), (op["state"], op["error"])
    assert (stack.owner_of(), stack.live_allocations("preview"), stack.live_allocations()) == before
    return op


def promoted_with_state(stack: Stack) -> dict[str, Any]:
    """v1 declares its state schema, persisting two primitives, and serves production."""
    v1 = stack.preview_ready(
        hello_files("1.0.0", **{SCHEMA: state_schema(HASH_1, PERSISTED)}), hello_config(vango={"state_schema": SCHEMA})
    )
    assert stack.promote(v1["id"])[1]["state"] == "healthy"  # type: ignore[index]
    return v1


def test_dropping_or_moving_the_state_schema_is_cold(stack: Stack) -> None:
    promoted_with_state(stack)
    without_cart = {"app.Prefs#signal@0": "fp:1"}

    # The attack: the candidate removes its [vango] declaration (and the file) — it was "warm (no persisted state
    # schema declared)".
    dropped = blocked(stack, hello_files("2.0.0"), hello_config(), "cold_deploy_needs_approval")
    facts = gate(dropped, "state_impact")["facts"]
    assert (facts["impact"], facts["removed"], facts["serving_schema"]) == ("cold", sorted(PERSISTED), SCHEMA)

    # Moving the schema file elsewhere and dropping a persisted primitive, declaration removed: still cold.
    moved = blocked(
        stack,
        hello_files("2.0.0", **{"state/schema.json": state_schema(HASH_2, without_cart)}),
        hello_config(),
        "cold_deploy_needs_approval",
    )
    assert gate(moved, "state_impact")["facts"]["candidate_schema"] is None

    # Moved and declared at its new path: the two schemas are compared, and the removed primitive is cold.
    declared_moved = blocked(
        stack,
        hello_files("2.0.0", **{"state/schema.json": state_schema(HASH_2, without_cart)}),
        hello_config(vango={"state_schema": "state/schema.json"}),
        "cold_deploy_needs_approval",
    )
    facts = gate(declared_moved, "state_impact")["facts"]
    assert (facts["removed"], facts["candidate_schema"], facts["serving_schema"]) == (
        ["app.Cart#signal@0"],
        "state/schema.json",
        SCHEMA,
    )

    # `persistedPrimitives: null` persists nothing: every primitive production persists is removed.
    nulled = blocked(
        stack,
        hello_files("2.0.0", **{SCHEMA: state_schema(HASH_2, None)}),
        hello_config(vango={"state_schema": SCHEMA}),
        "cold_deploy_needs_approval",
    )
    assert gate(nulled, "state_impact")["facts"]["removed"] == sorted(PERSISTED)

    # The declaration dropped but the schema left where production declared it, unchanged: found there, warm.
    kept = stack.deploy(hello_files("2.0.0", **{SCHEMA: state_schema(HASH_1, PERSISTED)}), hello_config())
    assert kept["state"] == "preview_ready", kept["error"]
    facts = gate(kept, "state_impact")["facts"]
    assert (facts["impact"], facts["candidate_schema"]) == ("warm", SCHEMA)

    # A cold deploy goes through only with --ack-cold.
    refused = stack.local.client.post(
        f"/v1/deployments/{dropped['target_id']}/approve", json={"ack_cold": False}, headers=stack.local.owner.headers
    )
    assert (refused.status_code, refused.json()["error"]["code"]) == (409, "ack_cold_required")
    assert stack.approve(dropped["target_id"], ack_cold=True)["state"] == "preview_ready"


INIT = "CREATE TABLE greetings (id INTEGER PRIMARY KEY);\n"
NAMES = "ALTER TABLE greetings ADD COLUMN name TEXT;\n"


def test_migrations_are_tracked_by_what_artifacts_carry_and_production_applied(stack: Stack) -> None:
    local = stack.local
    with_migrations = hello_config(database={"migrations": "migrations"})
    v1_op = blocked(
        stack, hello_files("1.0.0", **{"migrations/0001_init.sql": INIT}), with_migrations, "migration_needs_approval"
    )
    v1 = stack.approve(v1_op["target_id"])
    assert stack.promote(v1["id"])[1]["state"] == "healthy"  # type: ignore[index]
    production = local.store.environment(stack.app["id"], "production")
    assert production is not None
    assert local.store.applied_migrations(production["id"]) == {"0001_init.sql": "migrations"}

    # The attack: a new migration file, and the [database] key dropped — it was "none (no migrations directory
    # declared)". The directory production declared is still where migrations are looked for.
    v2_files = hello_files("2.0.0", **{"migrations/0001_init.sql": INIT, "migrations/0002_names.sql": NAMES})
    v2_op = blocked(stack, v2_files, hello_config(), "migration_needs_approval")
    facts = gate(v2_op, "db_impact")["facts"]
    assert (facts["impact"], facts["new"], facts["directories"]) == (
        "new_migrations",
        ["0002_names.sql"],
        ["migrations"],
    )
    v2 = stack.approve(v2_op["target_id"])
    assert stack.promote(v2["id"])[1]["state"] == "healthy"  # type: ignore[index]
    applied = {"0001_init.sql": "migrations", "0002_names.sql": "migrations"}
    assert local.store.applied_migrations(production["id"]) == applied

    # A rollback past the applied migration is refused although v2 never declared its directory; so is promoting
    # the older build again.
    before = stack.world()
    response, _ = stack.rollback()
    assert (response.status_code, response.json()["error"]["code"]) == (409, "rollback_unsafe_db")
    assert response.json()["error"]["details"]["migrations"] == ["0002_names.sql"]
    response, _ = stack.promote(v1["id"])
    assert (response.status_code, response.json()["error"]["code"]) == (409, "rollback_unsafe_db")
    assert stack.world() == before and stack.owner_of() == (v2["id"], 2)

    # --allow-unsafe-db moves it (audited); the migration stays applied, so the next move back is refused again.
    _, op = stack.rollback(allow_unsafe_db=True)
    assert op is not None and op["state"] == "rolled_back" and stack.owner_of() == (v1["id"], 3)
    [record] = [r for r in local.audit_rows() if r["action"] == "route.rollback" and r["result"] == "allowed"]
    assert "allow-unsafe-db past 0002_names.sql" in record["target"]
    assert local.store.applied_migrations(production["id"]) == applied
    assert stack.rollback()[1]["state"] == "rolled_back"  # type: ignore[index]  # back to v2: it has them all
    response, _ = stack.rollback()
    assert response.json()["error"]["code"] == "rollback_unsafe_db"

    # A database from before schema 5 learns its applied set from the route history at the first start.
    with local.store.write() as c:
        c.execute("DELETE FROM environment_migrations")
    assert local.workers.pipeline.record_route_history_migrations() == 2
    assert local.store.applied_migrations(production["id"]) == applied


def _promotion_of(stack: Stack, deployment_id: str) -> str:
    response = stack.local.client.post(
        f"/v1/deployments/{deployment_id}/promote",
        json={"environment": "production"},
        headers=stack.local.owner.headers,
    )
    assert response.status_code == 202, response.text
    return response.json()["id"]


def test_production_moving_after_validation_is_decided_again_at_promotion(stack: Stack) -> None:
    """The attack: B (no state schema) is validated while nothing serves production — warm. Then A, which persists
    state, is promoted. Promoting B would drop A's persisted primitives, and nobody ever acknowledged that: it used to
    be promoted without --ack-cold. The gates are decided again against what serves production now."""
    b = stack.preview_ready(hello_files("0.9.0"), hello_config())
    [warm] = [g for g in b["evidence"]["gates"] if g["gate"] == "state_impact"]
    assert warm["summary"] == "warm (nothing serves production yet)"
    a = stack.preview_ready(
        hello_files("1.0.0", **{SCHEMA: state_schema(HASH_1, PERSISTED)}), hello_config(vango={"state_schema": SCHEMA})
    )

    # Both promotions are accepted while nothing serves production; A's moves the route first, so B's policy_check
    # decides B's gates against A and fails.
    first, second = _promotion_of(stack, a["id"]), _promotion_of(stack, b["id"])
    stack.local.run_operations()
    stack.settle()
    assert stack.local.operation(first)["state"] == "healthy"
    failed = stack.local.operation(second)
    assert (failed["state"], failed["error"]["code"]) == ("failed", "cold_deploy_needs_approval"), failed["error"]
    view = stack.local.client.get(f"/v1/operations/{second}", headers=stack.local.owner.headers).json()
    assert (view["outcome"], view["error"]["exit_category"]) == ("failed", "gate")
    owner = stack.owner_of()
    assert owner is not None and owner[0] == a["id"]
    operations = stack.local.store.count("operations")

    # Asked again now, it is refused at request time with the gate's code: nothing recorded, the route where it was.
    refused, _ = stack.promote(b["id"])
    error = refused.json()["error"]
    assert (refused.status_code, error["code"]) == (409, "cold_deploy_needs_approval"), refused.text
    assert "production changed since" in error["message"] and "persists 2 primitive(s)" in error["message"]
    assert (stack.owner_of(), stack.local.store.count("operations")) == (owner, operations)

    # The way through: deploy the same source again (gates against production as it is), acknowledge, promote.
    again = stack.deploy(hello_files("0.9.0"), hello_config())
    assert (again["state"], again["error"]["code"]) == ("blocked", "cold_deploy_needs_approval")
    assert stack.approve(again["target_id"], ack_cold=True)["state"] == "preview_ready"
    assert stack.promote(again["target_id"])[1]["state"] == "healthy"

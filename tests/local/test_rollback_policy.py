"""A rollback returns only to an earlier owner of the route, under the same policy as a promotion (issue 12, item 1).

The attack: production requires approval; the owner promotes v1 with --approve; a developer deploys v2 and runs
`rhone rollback --to <v2>` — exit 0, and production served the never-approved v2. Through the real API, workers and
runner (allocations are real processes).
"""

from __future__ import annotations

import pytest

from ._stack import Stack, hello_config, hello_files

pytestmark = pytest.mark.slow


def require_approval(stack: Stack, environment: str = "production") -> None:
    with stack.local.store.write() as c:
        c.execute(
            "UPDATE environments SET approval_required = 1 WHERE app_id = ? AND name = ?",
            (stack.app["id"], environment),
        )


def refused(stack: Stack, response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    return error


def test_a_developer_cannot_roll_production_onto_a_never_promoted_deployment(stack: Stack) -> None:
    local = stack.local
    require_approval(stack)
    developer = local.make_user("developer")
    v1 = stack.preview_ready(hello_files("1.0.0"), hello_config())
    response, op = stack.promote(v1["id"], approve=True)
    assert response.status_code == 202 and op is not None and op["state"] == "healthy"
    v2 = stack.preview_ready(hello_files("2.0.0"), hello_config(), headers=developer.headers)

    # The attack, exactly: a rollback naming the never-promoted v2.
    before = stack.world()
    response, _ = stack.rollback(developer.headers, to_deployment=v2["id"])
    error = refused(stack, response, 409, "rollback_target_not_previous_owner")
    assert v2["id"] in error["message"]
    assert error["details"]["valid_targets"] == []
    assert "rhone route history production" in error["details"]["hint"]
    assert stack.world() == before and stack.owner_of() == (v1["id"], 1)
    [record] = local.audit_for(response.headers["X-Request-Id"])
    assert (record["action"], record["result"], record["detail"]) == (
        "route.rollback",
        "failed",
        {"code": "rollback_target_not_previous_owner"},
    )
    # Not with --approve either: approval does not turn a preview into an earlier owner.
    response, _ = stack.rollback(to_deployment=v2["id"], approve=True)
    refused(stack, response, 409, "rollback_target_not_previous_owner")
    assert stack.world() == before

    # v2 promoted with the owner's approval; rolling back to v1 needs an approval as a promotion would.
    _, op = stack.promote(v2["id"], approve=True)
    assert op is not None and op["state"] == "healthy" and stack.owner_of() == (v2["id"], 2)
    before = stack.world()
    response, _ = stack.rollback(developer.headers)
    refused(stack, response, 409, "approval_required")
    assert stack.world() == before
    response, _ = stack.rollback(developer.headers, approve=True)
    refused(stack, response, 403, "insufficient_role")
    assert stack.world() == before

    # Frozen refuses it too, approval or not.
    assert local.client.post(f"{stack.app_path}/environments/production/freeze", headers=developer.headers).is_success
    before = stack.world()
    response, _ = stack.rollback(approve=True)
    refused(stack, response, 409, "environment_frozen")
    assert stack.world() == before
    assert local.client.post(f"{stack.app_path}/environments/production/unfreeze", headers=local.owner.headers)

    # The owner's approved rollback to the earlier owner goes through, and records who approved it.
    _, op = stack.rollback(approve=True)
    assert op is not None and (op["state"], op["params"]["approved_by"]) == ("rolled_back", local.owner.id)
    assert stack.owner_of() == (v1["id"], 3)
    assert [a["deployment_id"] for a in stack.live_allocations()] == [v1["id"]]

    # The earlier owners now: v2 only (v1 serves). A third, never-promoted deployment is not one of them.
    v3 = stack.preview_ready(hello_files("3.0.0"), hello_config())
    response, _ = stack.rollback(to_deployment=v3["id"], approve=True)
    assert refused(stack, response, 409, "rollback_target_not_previous_owner")["details"]["valid_targets"] == [v2["id"]]
    _, op = stack.rollback(to_deployment=v2["id"], approve=True)
    assert op is not None and op["state"] == "rolled_back" and stack.owner_of() == (v2["id"], 4)


def test_without_an_approval_policy_a_developer_rolls_back_to_an_earlier_owner(stack: Stack) -> None:
    developer = stack.local.make_user("developer")
    v1 = stack.preview_ready(hello_files("1.0.0"), hello_config())
    v2 = stack.preview_ready(hello_files("2.0.0"), hello_config())
    for deployment in (v1, v2):
        assert stack.promote(deployment["id"])[1]["state"] == "healthy"  # type: ignore[index]
    _, op = stack.rollback(developer.headers)
    assert op is not None and (op["state"], op["params"]["approved_by"]) == ("rolled_back", None)
    assert stack.owner_of() == (v1["id"], 3)

"""Environment policy is changed by an audited mutation, and drift from rhone.toml is reported (issue 12, item 4).

The attack: `approval_required = true` added to rhone.toml after the app existed was silently ignored — production
kept accepting unapproved promotions — and no command could change it.
"""

from __future__ import annotations

from pathlib import Path

from ._cases import EMPTY_CONFIG, Target, _preview_ready
from .conftest import BASE, LocalEnv

DRIFT = {
    "environment": "production",
    "setting": "approval_required",
    "declared": True,
    "server": False,
    "fix": "rhone env policy production --approval-required",
}


def policy(local: LocalEnv, app_path: str, approval_required: bool, headers: dict[str, str] | None = None):
    return local.client.post(
        f"{app_path}/environments/production/policy",
        json={"approval_required": approval_required},
        headers=headers or local.owner.headers,
    )


def test_a_policy_added_to_rhone_toml_is_reported_until_the_server_is_aligned(local: LocalEnv) -> None:
    target = Target()
    deployment_id = _preview_ready(local, target)
    assert target.project is not None and target.app is not None
    app_path = f"{BASE}/projects/{target.project['name']}/apps/{target.app['name']}"
    # The deployment's rhone.toml now says production needs approval, and declares a staging that does not exist.
    declared = {
        "preview": {"approval_required": False},
        "production": {"approval_required": True},
        "staging": {"approval_required": True},
    }
    with local.store.write() as c:
        local.store.update_deployment(c, deployment_id, config={**EMPTY_CONFIG, "environments": declared})
    shown = local.client.get(f"/v1/deployments/{deployment_id}", headers=local.owner.headers).json()
    assert shown["policy_drift"] == [
        DRIFT,
        {
            "environment": "staging",
            "setting": "approval_required",
            "declared": True,
            "server": None,
            "fix": "rhone env create staging --approval-required",
        },
    ]

    # Only owners and admins change who must approve; a refusal changes nothing and is audited.
    developer = local.make_user("developer")
    before = local.snapshot()
    refused = policy(local, app_path, True, developer.headers)
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "insufficient_role")
    assert local.snapshot() == before
    [record] = local.audit_for(refused.headers["X-Request-Id"])
    assert (record["action"], record["result"]) == ("environment.policy", "denied")

    admin = local.make_user("admin")
    changed = policy(local, app_path, True, admin.headers)
    assert changed.status_code == 200, changed.text
    assert (changed.json()["name"], changed.json()["approval_required"], changed.json()["frozen"]) == (
        "production",
        True,
        False,
    )
    [record] = local.audit_for(changed.headers["X-Request-Id"])
    assert (record["action"], record["result"], record["actor_id"]) == ("environment.policy", "allowed", admin.id)
    assert record["target"].endswith("production approval_required false -> true")
    shown = local.client.get(f"/v1/deployments/{deployment_id}", headers=local.owner.headers).json()
    assert [d["environment"] for d in shown["policy_drift"]] == ["staging"]

    # And the policy applies: an unapproved promotion is refused, changing nothing.
    before = local.snapshot()
    promoted = local.client.post(
        f"/v1/deployments/{deployment_id}/promote", json={"environment": "production"}, headers=developer.headers
    )
    assert (promoted.status_code, promoted.json()["error"]["code"]) == (409, "approval_required")
    assert local.snapshot() == before


def test_rhone_env_policy_and_the_drift_warnings(local: LocalEnv, live_url: str, rhone, tmp_path: Path) -> None:
    project = local.create_project("shop")
    local.create_app(project, "web")
    work = tmp_path / "web"
    work.mkdir()
    (work / "app.py").write_text("print('hi')\n")
    (work / "rhone.toml").write_text(
        '[project]\nname = "shop"\nworkspace = "local"\n\n[app]\nname = "web"\n\n[process]\nstart = "python3 app.py"\n'
        "\n[environments.production]\napproval_required = true\n"
    )
    environ = {"RHONE_API_URL": live_url, "RHONE_TOKEN": local.owner.token}
    fix = "`rhone env policy production --approval-required`"

    shown = rhone("env", "show", "production", "--json", cwd=work, environ=environ)
    assert shown.exit_code == 0, shown.stderr
    assert shown.json()["approval_required"] is False  # the server's policy
    assert fix in shown.stderr and "approval_required = true" in shown.stderr

    # `rhone deploy` reports it too, on stderr and in its document (here --no-wait: nothing drives the operation).
    deployed = rhone("deploy", "--no-wait", cwd=work, environ=environ)
    assert deployed.exit_code == 0, deployed.stderr
    assert fix in deployed.stderr
    [deployment] = local.store.all("SELECT id FROM deployments")
    doc = local.client.get(f"/v1/deployments/{deployment['id']}", headers=local.owner.headers).json()
    assert doc["policy_drift"] == [DRIFT]

    # Without a flag, `env policy` shows; with one, it changes the server's policy, and the drift is gone.
    assert fix in rhone("env", "policy", "production", cwd=work, environ=environ).stderr
    changed = rhone("env", "policy", "production", "--approval-required", "--json", cwd=work, environ=environ)
    assert changed.exit_code == 0, changed.stderr
    assert changed.json()["approval_required"] is True and "warning" not in changed.stderr
    assert rhone("env", "show", "production", cwd=work, environ=environ).stderr == ""
    # Drift the other way is reported as well.
    reverted = rhone("env", "policy", "production", "--no-approval-required", cwd=work, environ=environ)
    assert reverted.exit_code == 0 and fix in reverted.stderr

"""Bindings, runtime services, settings, policy, scale, allocations and regions through the CLI, in process against
the real API app and workers: each command's success, and its refusals with their exit codes and nothing changed.
Nothing here deploys, so nothing starts a process."""

from __future__ import annotations

from rhone_cli.errors import ExitCode
from tests.conftest import assert_matches_schema

from .conftest import TARGET, rows

SECRET = "postgres://app:preview-pw-7f3a91c2@db-preview/shop"
BIND = ("env", "bind", "preview", "db", "--kind", "postgres", "--resource", "pg://db-preview/shop")


def changed_tables(before: dict, after: dict) -> set[str]:
    return {table for table in after if after[table] != before.get(table)}


def test_provider_bindings_never_echo_a_secret_and_a_shared_mutable_resource_is_refused(shop_web, api_app):
    cli = shop_web
    bound = cli("--json", *BIND, "--secret", "DATABASE_URL", *TARGET, environ={"DATABASE_URL": SECRET})
    assert bound.exit_code == 0, bound.stderr
    assert_matches_schema(bound.json(), "provider-binding.schema.json")
    assert bound.json()["secrets"] == ["DATABASE_URL"]
    listed = cli.json("env", "bindings", "preview", *TARGET)
    assert_matches_schema(listed, "provider-binding-list.schema.json")
    assert [(b["name"], b["state"]) for b in listed] == [("db", "ready")]
    human = cli("env", "bindings", "preview", *TARGET)
    assert SECRET not in bound.stdout + bound.stderr + human.stdout + human.stderr
    everything = rows(api_app, with_audit=True)
    assert all(SECRET not in repr(found) for table, found in everything.items() if table != "binding_secrets")

    before = rows(api_app)
    shared = cli.fails(
        ExitCode.CONFLICT, *BIND[:2], "production", *BIND[3:], "--secret", "DATABASE_URL", *TARGET,
        environ={"DATABASE_URL": SECRET},
    )  # fmt: skip
    assert shared["code"] == "shared_mutable_resource"
    assert changed_tables(before, rows(api_app)) <= {"operations", "idempotency"}

    literal = cli("--json", *BIND, "--secret", f"DATABASE_URL={SECRET}", *TARGET)
    assert literal.exit_code == ExitCode.USAGE and SECRET not in literal.stdout + literal.stderr

    cli.json("env", "unbind", "preview", "db", *TARGET)
    assert cli.json("env", "bindings", "preview", *TARGET) == []


def test_runtime_services_settings_and_policy(shop_web):
    cli = shop_web
    services = cli.json("env", "services", "production", "--bind", "idempotency", *TARGET)
    assert_matches_schema(services, "environment-services.schema.json")
    assert [s["service"] for s in services["items"]] == ["idempotency"]
    assert [s["service"] for s in cli.json("env", "services", "production", *TARGET)["items"]] == ["idempotency"]

    cli.json("env", "set", "preview", "GREETING=hi", "--secret", "API_KEY", *TARGET, environ={"API_KEY": "k-9f1e"})
    config = cli.json("env", "config", "preview", *TARGET)
    assert_matches_schema(config, "environment-config.schema.json")
    assert {i["name"]: i["secret"] for i in config["items"]} == {"GREETING": False, "API_KEY": True}
    assert "k-9f1e" not in cli("env", "config", "preview", *TARGET).stdout
    cli.json("env", "unset", "preview", "GREETING", *TARGET)
    assert [i["name"] for i in cli.json("env", "config", "preview", *TARGET)["items"]] == ["API_KEY"]
    sent = len(cli.transport.requests)
    assert cli.fails(ExitCode.USAGE, "env", "set", "preview", *TARGET)["code"] == "usage_error"
    assert len(cli.transport.requests) == sent

    policy = cli.json("env", "policy", "production", "--approval-required", *TARGET)
    assert (policy["name"], policy["approval_required"]) == ("production", True)
    assert cli.json("env", "policy", "production", *TARGET)["approval_required"] is True
    assert cli.json("env", "freeze", "production", *TARGET)["frozen"] is True
    assert cli.json("env", "show", "production", *TARGET)["frozen"] is True
    assert cli.json("env", "unfreeze", "production", *TARGET)["frozen"] is False


def test_scale_of_an_environment_nothing_serves_is_refused_and_allocations_are_empty(shop_web, api_app):
    cli = shop_web
    before = rows(api_app)
    assert cli.fails(ExitCode.CONFLICT, "app", "scale", "--env", "production", "-n", "2", *TARGET)["code"] == (
        "no_route_owner"
    )
    assert cli.fails(ExitCode.NOT_FOUND, "app", "scale", "--env", "nowhere", "-n", "2", *TARGET)["code"] == "not_found"
    assert cli("app", "scale", "--env", "production", "-n", "21", *TARGET).exit_code == ExitCode.USAGE
    no_env = cli("app", "scale", "-n", "2", *TARGET)
    assert no_env.exit_code == ExitCode.USAGE and "--env" in no_env.stderr
    assert rows(api_app) == before  # refused with the request: not even an operation
    allocations = cli.json("app", "allocations", *TARGET)
    assert_matches_schema(allocations, "allocation-list.schema.json")
    assert allocations == []


def test_regions_and_an_enablement_without_an_artifact(shop_web, api_app):
    cli = shop_web
    regions = cli.json("region", "ls")
    assert_matches_schema(regions, "region-list.schema.json")
    assert [(r["name"], r["primary"]) for r in regions] == [("local-1", True), ("local-2", False)]
    shown = cli.json("region", "show", "local-2")
    assert_matches_schema(shown, "region.schema.json")
    assert shown["cells"][0]["name"] == "local-2a"
    with_env = cli.json("region", "show", "local-2", "--env", "production", *TARGET)
    assert_matches_schema(with_env, "region.schema.json")  # the published schema said no such fields
    assert (with_env["environment"], with_env["eligibility"]["region"]) == ("production", "local-2")
    assert cli.fails(ExitCode.NOT_FOUND, "region", "show", "mars-1")["code"] == "not_found"
    status = cli.json("region", "status", "--env", "production", *TARGET)
    assert_matches_schema(status, "environment-region-list.schema.json")
    eligible_before = {r["region"]: r["state"] for r in status}

    refused = cli.fails(ExitCode.BLOCKED, "region", "enable", "local-2", "--env", "production", *TARGET)
    assert refused["code"] == "artifact_absent"
    after = {r["region"]: r["state"] for r in cli.json("region", "status", "--env", "production", *TARGET)}
    assert after["local-1"] == eligible_before["local-1"] and after["local-2"] != "eligible"


def test_whoami_auth_token_and_api(cli, api_app):
    status = cli.json("whoami")
    assert_matches_schema(status, "auth-status.schema.json")
    token = cli("auth", "token")
    assert (token.exit_code, token.stdout.strip()) == (0, api_app.owner_token)
    assert cli.json("api", "/v1/workspaces")["items"][0]["name"] == "local"
    assert cli.fails(ExitCode.NOT_FOUND, "api", "/v1/workspaces/nope")["code"] == "not_found"

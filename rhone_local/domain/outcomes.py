"""What an operation's state means to whoever waits for it: its outcome, and the exit category of its error.

Every operation document the API returns carries `outcome` — `running` (neither terminal nor parked), `succeeded`
(its machine's success state), `failed` (any other terminal state), or `blocked` (parked until a person acts) — and,
when failed or blocked, `error.exit_category`, which the CLI turns into its exit code (docs/state-machines.md,
"Outcomes"). The CLI keeps no copy of the server's states or error codes: this module is the one table.

A code's category is the same wherever it is produced: a request refused with it and a stage that fails with it
exit alike. Codes a request can produce take the category of the HTTP status they are refused with (409 conflict,
404 not_found, 401/403 auth, 400/422 usage), except the gates, which wait for a person or a binding (`gate`). Codes
only a stage produces are `failure` unless they are gates or lost races.
"""

from __future__ import annotations

from typing import Literal

from rhone_local.domain.operations import MACHINES, PARKED_STATES, TERMINAL_STATES

Outcome = Literal["running", "succeeded", "failed", "blocked"]
ExitCategory = Literal["failure", "usage", "auth", "not_found", "conflict", "gate"]

# The CLI's exit code for each category (README, "Exit codes"; `rhone help exit-codes`).
EXIT_CODES: dict[str, int] = {"failure": 1, "usage": 2, "auth": 3, "not_found": 4, "conflict": 5, "gate": 6}

_GATES = (
    # a person must approve, acknowledge or unfreeze
    "approval_required",
    "environment_frozen",
    "cold_deploy_needs_approval",
    "migration_needs_approval",
    "ack_cold_required",
    "rollback_unsafe_db",
    "blocked",
    # the environment lacks what the deployment needs: a binding, a setting, a runtime service, a region's facts
    "binding_missing",
    "setting_missing",
    "runtime_services_missing",
    "runtime_services_required",
    "runtime_service_down",
    "residency_violation",
    "data_topology_not_ready",
    "secret_missing",
    "artifact_absent",
    "scale_gate_failed",
    "gate_blocked",
)
_CONFLICTS = (
    # lost races and compare-and-swaps
    "route_epoch_conflict",
    "route_key_taken",
    "environment_busy",
    "binding_busy",
    "not_blocked",
    # digests that do not match what was declared
    "digest_mismatch",
    "build_digest_mismatch",
    "size_mismatch",
    "blobs_missing",
    "blob_corrupt",
    # names and resources already taken, states that refuse the change
    "name_taken",
    "app_name_taken",
    "already_a_member",
    "already_owner",
    "binding_exists",
    "secret_name_taken",
    "shared_mutable_resource",
    "data_in_use",
    "not_provisioned",
    "not_provisionable",
    "provision_conflict",
    "resource_required",
    "region_primary",
    "no_route_owner",
    "no_previous_owner",
    "deployment_not_ready",
    "rollback_target_not_previous_owner",
    "last_owner_token",
    "idempotency_key_reused",
    "secret_shown_once",
    "setting_not_found",
    "settings_contradict",
    "settings_limit",
    "services_contradict",
    "nothing_to_do",
    "invalid_cursor",
    "app_databases_unavailable",
    "device_code_closed",
    "no_live_worker",  # a cluster with no live worker node: nothing would advance the operation
)
_USAGE = (
    "bad_request",
    "malformed_json",
    "invalid_request",
    "invalid_manifest",
    "invalid_setting",
    "invalid_digest",
    "provider_cannot_serve",
    "blob_too_large",
    "client_disconnected",
    "authorization_pending",
    "slow_down",
    "access_denied",
    "expired_token",
    "invalid_grant",
)
_AUTH = (
    "unauthenticated",
    "invalid_token",
    "token_expired",
    "forbidden",
    "insufficient_role",
    "not_a_member",
    "cannot_grant_role",
    "runtime_identity_forbidden",
    "edge_identity_required",
)
_FAILURES = (
    # the work itself failed: the build, the app, the edge, the machine
    "build_failed",
    "build_timeout",
    "build_output_missing",
    # Raised on the server only for what a build produced (a link leaving its output): the build failed. The CLI's
    # own `unsafe_path`, for a project tree it reads, stays a usage error.
    "unsafe_path",
    "config_modified",
    "stale_artifacts",
    "state_impact_failed",
    "db_impact_failed",
    "providers_bound_failed",
    "readiness_failed",
    "edge_propagation_timeout",
    "binding_gone",
    "parent_missing",
    "app_databases_unreachable",
    "disk_full",
    "internal_error",
)

# Every error code a request or a stage produces → its exit category (tests/local/test_outcomes.py finds every code
# raised in rhone_local and checks that it is here).
EXIT_CATEGORIES: dict[str, ExitCategory] = {
    **dict.fromkeys(_FAILURES, "failure"),
    **dict.fromkeys(_USAGE, "usage"),
    **dict.fromkeys(_AUTH, "auth"),
    "not_found": "not_found",
    **dict.fromkeys(_CONFLICTS, "conflict"),
    **dict.fromkeys(_GATES, "gate"),
}


def outcome(kind: str, state: str) -> Outcome:
    """`succeeded` only in the kind's own success state: `rolled_back` is a rollback's success and no other kind's."""
    if state in PARKED_STATES:
        return "blocked"
    if state not in TERMINAL_STATES:
        return "running"
    machine = MACHINES.get(kind)
    return "succeeded" if machine is not None and state == machine.success else "failed"


def exit_category(code: str | None, *, parked: bool = False) -> ExitCategory:
    """A parked operation waits at a gate; a failure's category is its code's (an unknown code is a `failure`)."""
    if parked:
        return "gate"
    return EXIT_CATEGORIES.get(code or "", "failure")

"""Settings changes (kind `config.update`): recorded with the request, then the environment's running allocations
roll onto the new values (requested → rolling → succeeded, or failed). At request time: a change that names nothing
or one name twice is refused; in the request's transaction, one that unsets what is not set, breaks a setting's
rules, or arrives while another change of the environment's allocations is live."""

from __future__ import annotations

from typing import Any

from rhone_local.domain import settings as rules
from rhone_local.domain.errors import conflict
from rhone_local.operations.kinds import ENVIRONMENT_CHANGES, Kind, onward, refuse_while_changing, staged
from rhone_local.operations.topology_stages import TopologyStages
from rhone_local.operations.unit_of_work import Origin, start_operation
from rhone_local.store import Store, Tx

KIND = "config.update"


def check_change(values: dict[str, str], secrets: dict[str, str], unset: list[str]) -> None:
    twice = sorted(set(values) & set(secrets))
    if twice:
        raise conflict("settings_contradict", f"{twice[0]} is given both as a value and as a secret", name=twice[0])
    if not values and not secrets and not unset:
        raise conflict("nothing_to_do", "name settings to set (NAME=VALUE, --secret NAME) or to unset")


def start_change(
    store: Store,
    c: Tx,
    origin: Origin,
    *,
    workspace_id: str,
    environment: dict[str, Any],
    app: str,
    env: str,
    values: dict[str, str],
    secrets: dict[str, str],
    unset: list[str],
) -> dict[str, Any]:
    """Record the operation and the new settings (`app`, `env`: as the request named them)."""
    refuse_while_changing(
        store, c, environment["id"], ENVIRONMENT_CHANGES, subject=f"{app}--{env}", retry="change the settings"
    )
    current = {s["name"]: s["value"] for s in store.settings(environment["id"])}
    rules.check_change(current, {**values, **secrets}, unset)
    absent = sorted(set(unset) - set(current))
    if absent:
        raise conflict("setting_not_found", f"{env} has no setting {absent[0]}", name=absent[0])
    op = start_operation(
        store,
        c,
        origin,
        workspace_id=workspace_id,
        kind=KIND,
        target_kind="environment",
        target_id=environment["id"],
        params={
            "environment_id": environment["id"],
            "environment": environment["name"],
            "set": sorted(values),
            "secrets": sorted(secrets),  # names only
            "unset": sorted(unset),
        },
    )
    store.change_settings(c, environment["id"], op["id"], values=values, secret=False, unset=unset)
    store.change_settings(c, environment["id"], op["id"], values=secrets, secret=True, unset=[])
    return op


def kinds(topology: TopologyStages) -> dict[str, Kind]:
    return {KIND: Kind(KIND, {"requested": onward(KIND), "rolling": staged(KIND, topology.roll_settings)})}

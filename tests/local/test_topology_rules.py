"""The pure rules of bindings, scale, regions and allocation choice (`rhone_local/domain/topology.py`)."""

from __future__ import annotations

import itertools
import random

import pytest

from rhone_local.domain import topology as rules
from rhone_local.domain.topology import BindingSpec, Requirement


# -- scale ----------------------------------------------------------------------------------------------------------
def services(config: dict) -> list[str]:
    return [r.service for r in rules.scale_requirements(config)]


def test_a_vango_app_needs_a_session_store_and_broadcast_by_default() -> None:
    assert services({}) == ["session", "broadcast"]  # an older client's config: server sessions assumed
    assert services({"runtime": {"server_sessions": False}}) == []
    assert services({"runtime": {"unsafe_replay_routes": ["/pay"]}}) == ["session", "broadcast", "idempotency"]
    config = {"runtime": {"server_sessions": False, "services": ["queue", "cache"]}}
    assert services(config) == ["cache", "queue"]  # in the published order, each once
    reasons = {r.service: r.reason for r in rules.scale_requirements({"runtime": {"unsafe_replay_routes": ["/pay"]}})}
    assert "durable session store" in reasons["session"] and "/pay" in reasons["idempotency"]


@pytest.mark.parametrize("bound", [set(s) for n in range(4) for s in itertools.combinations(
    ["session", "broadcast", "idempotency"], n)])  # fmt: skip
def test_scale_refusal_lists_exactly_what_is_missing(bound: set[str]) -> None:
    config = {"runtime": {"unsafe_replay_routes": ["/webhook"]}}
    missing = [r.service for r in rules.scale_refusal(3, config, bound)]
    assert missing == [s for s in ("session", "broadcast", "idempotency") if s not in bound]
    assert rules.scale_refusal(1, config, set()) == []  # one instance needs nothing
    assert rules.scale_refusal(0, config, set()) == []


# -- sharing --------------------------------------------------------------------------------------------------------
def spec(env: str, resource: str = "pg://db/x", *, mutable: bool = True, shared: bool = False) -> BindingSpec:
    return BindingSpec(env, resource, mutable, shared)


def test_a_mutable_resource_serves_one_environment_name() -> None:
    assert rules.sharing_conflict(spec("production"), [spec("preview")]) == spec("preview")
    assert rules.sharing_conflict(spec("production"), [spec("production")]) is None  # two apps' production lanes
    assert rules.sharing_conflict(spec("production"), [spec("preview", "pg://db/other")]) is None
    assert rules.sharing_conflict(spec("production", mutable=False), [spec("preview")]) == spec("preview")


def test_only_shared_read_only_on_both_sides_may_cross_lanes() -> None:
    ro = {"mutable": False, "shared": True}
    assert rules.sharing_conflict(spec("production", **ro), [spec("preview", **ro)]) is None
    assert rules.sharing_conflict(spec("production", **ro), [spec("preview")]) is not None
    assert rules.sharing_conflict(spec("production"), [spec("preview", **ro)]) is not None
    assert rules.sharing_conflict(spec("production", mutable=True, shared=True), [spec("preview", **ro)]) is not None


def test_sharing_is_symmetric_over_random_bindings() -> None:
    rng = random.Random(6)
    for _ in range(500):
        a = spec(rng.choice(["preview", "production"]), rng.choice(["r1", "r2"]), mutable=rng.random() < 0.5,
                 shared=rng.random() < 0.5)  # fmt: skip
        b = spec(rng.choice(["preview", "production"]), rng.choice(["r1", "r2"]), mutable=rng.random() < 0.5,
                 shared=rng.random() < 0.5)  # fmt: skip
        assert (rules.sharing_conflict(a, [b]) is None) == (rules.sharing_conflict(b, [a]) is None), (a, b)


# -- region gates ---------------------------------------------------------------------------------------------------
def test_region_gates_name_what_is_missing() -> None:
    assert rules.residency_gate("local-2", "us", []) is None
    assert rules.residency_gate("local-2", "us", ["eu", "us"]) is None
    refused = rules.residency_gate("local-2", "us", ["eu"])
    assert refused is not None and refused.code == "residency_violation" and refused.facts["allowed"] == ["eu"]

    assert rules.data_topology_gate("local-2", ["db"], ["db", "cache"]) is None
    refused = rules.data_topology_gate("local-2", ["db", "cache"], ["cache"])
    assert refused is not None and refused.facts["missing_providers"] == ["db"]

    assert rules.secrets_gate("local-2", {"db": ["DATABASE_URL"]}, {"db": ["DATABASE_URL", "X"]}) is None
    refused = rules.secrets_gate("local-2", {"db": ["DATABASE_URL"], "s3": []}, {"db": []})
    assert refused is not None and refused.facts["missing_secrets"] == {"db": ["DATABASE_URL"]}

    requirements = [Requirement("session", "why"), Requirement("broadcast", "why")]
    refused = rules.runtime_services_gate("local-2", requirements, ["session"])
    assert refused is not None and [m["service"] for m in refused.facts["missing"]] == ["broadcast"]
    assert rules.runtime_services_gate("local-2", requirements, ["broadcast", "session"]) is None

"""The deploy gates as pure functions: each classification, and how approvals may (and may not) clear them."""

from __future__ import annotations

from rhone_local.domain import gates

SCHEMA_V1 = {
    "schemaHash": "sha256:" + "1" * 64,
    "buildSchema": "bs:v1:aaa",
    "persistedPrimitives": {
        "app.Prefs#setup0.shared.signal@0": {"codecFingerprint": "fp:v1:111"},
        "app.Cart#setup0.shared.signal@0": {"codecFingerprint": "fp:v1:222"},
    },
}


def schema(**changes) -> dict:
    primitives = {**SCHEMA_V1["persistedPrimitives"], **changes.pop("primitives", {})}
    for key in changes.pop("remove", []):
        primitives.pop(key)
    return {**SCHEMA_V1, "persistedPrimitives": primitives, **changes}


def test_nothing_serving_production_is_warm() -> None:
    result = gates.state_impact(SCHEMA_V1, None, serving_digest=None)
    assert (result.outcome, result.facts["impact"]) == ("pass", "warm")
    assert "nothing serves production" in result.summary


def test_same_schema_hash_is_warm() -> None:
    result = gates.state_impact(SCHEMA_V1, SCHEMA_V1, serving_digest="sha256:" + "f" * 64)
    assert (result.outcome, result.facts["impact"]) == ("pass", "warm")


def test_added_persisted_state_is_warm() -> None:
    candidate = schema(
        schemaHash="sha256:" + "2" * 64,
        primitives={"app.New#setup0.shared.signal@0": {"codecFingerprint": "fp:v1:333"}},
    )
    result = gates.state_impact(candidate, SCHEMA_V1, serving_digest="sha256:" + "f" * 64)
    assert (result.outcome, result.facts["impact"]) == ("pass", "warm")
    assert result.facts["added"] == ["app.New#setup0.shared.signal@0"]


def test_removed_persisted_state_is_cold() -> None:
    candidate = schema(schemaHash="sha256:" + "3" * 64, remove=["app.Cart#setup0.shared.signal@0"])
    result = gates.state_impact(candidate, SCHEMA_V1, serving_digest="sha256:" + "f" * 64)
    assert (result.outcome, result.facts["impact"]) == ("block", "cold")
    assert result.facts["removed"] == ["app.Cart#setup0.shared.signal@0"]
    assert "--ack-cold" in result.summary


def test_changed_codec_fingerprint_is_cold() -> None:
    candidate = schema(
        schemaHash="sha256:" + "4" * 64,
        primitives={"app.Prefs#setup0.shared.signal@0": {"codecFingerprint": "fp:v1:999"}},
    )
    result = gates.state_impact(candidate, SCHEMA_V1, serving_digest="sha256:" + "f" * 64)
    assert (result.outcome, result.facts["changed"]) == ("block", ["app.Prefs#setup0.shared.signal@0"])


def test_db_impact_is_classified_separately_from_state_impact() -> None:
    assert gates.db_impact([], None, declared=False).facts["impact"] == "none"
    assert gates.db_impact(["001.sql"], ["001.sql"], declared=True).outcome == "pass"
    new = gates.db_impact(["001.sql", "002.sql"], ["001.sql"], declared=True)
    assert (new.outcome, new.facts["new"]) == ("block", ["002.sql"])
    # A warm deploy can still carry a new migration: the two answers are independent.
    warm = gates.state_impact(SCHEMA_V1, SCHEMA_V1, serving_digest="sha256:" + "f" * 64)
    verdict, reasons = gates.decide([warm, new], ack_cold=False, approved=False)
    assert (verdict, [r.gate for r in reasons]) == ("block", ["db_impact"])


def test_generated_artifacts_must_agree() -> None:
    declared = {"state_manifest": "m.json", "state_schema": "s.json", "routes": None}
    good = {"m.json": {"buildSchema": "bs:v1:aaa"}, "s.json": SCHEMA_V1}
    assert gates.generated_artifacts(declared, good).outcome == "pass"
    stale = {"m.json": {"buildSchema": "bs:v1:old"}, "s.json": SCHEMA_V1}
    assert gates.generated_artifacts(declared, stale).outcome == "fail"
    assert gates.generated_artifacts(declared, {"m.json": good["m.json"]}).facts["missing"] == ["s.json"]
    no_hash = {"m.json": good["m.json"], "s.json": {"buildSchema": "bs:v1:aaa"}}
    assert gates.generated_artifacts(declared, no_hash).outcome == "fail"


def test_approvals_clear_only_what_they_may() -> None:
    cold = gates.GateResult("state_impact", "block", "cold")
    migrations = gates.GateResult("db_impact", "block", "new")
    unbound = gates.GateResult("providers_bound", "block", "missing db")
    stale = gates.GateResult("generated_artifacts", "fail", "stale")
    assert gates.decide([cold], ack_cold=False, approved=True)[0] == "block"  # approval alone is not --ack-cold
    assert gates.decide([cold], ack_cold=True, approved=True)[0] == "pass"
    assert gates.decide([migrations], ack_cold=False, approved=True)[0] == "pass"
    assert gates.decide([unbound], ack_cold=True, approved=True)[0] == "block"  # bindings are never approved away
    assert gates.decide([stale, migrations], ack_cold=True, approved=True) == ("fail", [stale])
    assert gates.providers_bound(["db"], ["db"]).outcome == "pass"
    assert gates.providers_bound(["db", "cache"], ["db"]).facts["missing"] == ["cache"]


SERVING = "sha256:" + "f" * 64


def test_a_candidate_without_the_state_schema_production_persists_is_cold() -> None:
    """Dropping the [vango] declaration (or the file) does not make a deploy warm: production persists state."""
    result = gates.state_impact(None, SCHEMA_V1, serving_digest=SERVING, serving_path="vango_state_schema.json")
    assert (result.outcome, result.facts["impact"]) == ("block", "cold")
    assert result.facts["removed"] == sorted(SCHEMA_V1["persistedPrimitives"])
    assert result.facts["serving_schema"] == "vango_state_schema.json" and result.facts["candidate_schema"] is None
    assert "--ack-cold" in result.summary and "carries no state schema" in result.summary
    # Nothing persisted in production and nothing in the candidate: still warm.
    assert gates.state_impact(None, None, serving_digest=SERVING).facts["impact"] == "warm"


def test_null_persisted_primitives_persist_nothing() -> None:
    emptied = {**SCHEMA_V1, "schemaHash": "sha256:" + "5" * 64, "persistedPrimitives": None}
    cold = gates.state_impact(emptied, SCHEMA_V1, serving_digest=SERVING)
    assert (cold.outcome, cold.facts["removed"]) == ("block", sorted(SCHEMA_V1["persistedPrimitives"]))
    warm = gates.state_impact(SCHEMA_V1, emptied, serving_digest=SERVING)
    assert (warm.outcome, warm.facts["added"]) == ("pass", sorted(SCHEMA_V1["persistedPrimitives"]))
    for malformed in ("x", 3, True):  # not a list or an object: nothing persisted, and never a crash
        shaped = {**SCHEMA_V1, "persistedPrimitives": malformed}
        assert gates.state_impact(shaped, SCHEMA_V1, serving_digest=SERVING).facts["impact"] == "cold"
        outcome = gates.generated_artifacts({"state_schema": "s.json"}, {"s.json": shaped}).outcome
        assert outcome == "fail"


def test_the_same_schema_hash_does_not_hide_a_removed_primitive() -> None:
    """The hash is a label the build wrote; the primitives are what persists."""
    relabelled = schema(remove=["app.Cart#setup0.shared.signal@0"])  # schemaHash left as production's
    result = gates.state_impact(relabelled, SCHEMA_V1, serving_digest=SERVING)
    assert (result.outcome, result.facts["removed"]) == ("block", ["app.Cart#setup0.shared.signal@0"])

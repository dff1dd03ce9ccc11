"""The deploy gates, as pure functions over facts the pipeline has gathered.

1. generated Vango artifacts current — the declared files exist, parse, and agree with each other;
2. Vango state impact — warm or cold, against the artifact serving production;
3. database impact — none, or new migrations, against the same artifact;
4. secrets and providers bound — every required provider has a ready binding in the environment.

State impact and database impact are separate questions with separate answers (a warm deploy can still carry a
dangerous migration). Each gate returns a `GateResult`; the pipeline records every result as evidence before it
decides anything.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

_SCHEMA_HASH = re.compile(r"^sha256:[0-9a-f]{6,64}$")


@dataclass
class GateResult:
    gate: str
    outcome: str  # "pass" | "block" | "fail"
    summary: str
    facts: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def generated_artifacts(declared: dict[str, str | None], files: dict[str, Any]) -> GateResult:
    """`declared`: rhone.toml [vango] paths; `files`: path -> parsed JSON (or None when absent / not JSON).

    Missing or inconsistent generated files mean the build is stale: they were not regenerated with the code.
    """
    present = {k: v for k, v in declared.items() if v}
    if not present:
        return GateResult("generated_artifacts", "pass", "no Vango generated files declared", {"declared": []})
    missing = [path for path in present.values() if path not in files]
    if missing:
        return GateResult(
            "generated_artifacts",
            "fail",
            f"declared generated files are missing: {', '.join(missing)}",
            {"missing": missing},
        )
    unreadable = [path for key, path in present.items() if key != "routes" and not isinstance(files[path], dict)]
    if unreadable:
        return GateResult(
            "generated_artifacts", "fail", f"not valid JSON: {', '.join(unreadable)}", {"unreadable": unreadable}
        )
    manifest = files.get(present.get("state_manifest", "")) if present.get("state_manifest") else None
    schema = files.get(present.get("state_schema", "")) if present.get("state_schema") else None
    facts: dict[str, Any] = {"declared": sorted(present.values())}
    if schema is not None:
        schema_hash = schema.get("schemaHash")
        if not isinstance(schema_hash, str) or not _SCHEMA_HASH.match(schema_hash):
            return GateResult("generated_artifacts", "fail", "state schema has no valid schemaHash", facts)
        if not isinstance(schema.get("persistedPrimitives"), dict | list | None):
            return GateResult(
                "generated_artifacts",
                "fail",
                "state schema's persistedPrimitives is not a list, an object or null",
                facts,
            )
        facts["schema_hash"] = schema_hash
    if manifest is not None and schema is not None and manifest.get("buildSchema") != schema.get("buildSchema"):
        return GateResult(
            "generated_artifacts",
            "fail",
            "stale generated artifacts: state manifest and state schema come from different builds "
            f"({manifest.get('buildSchema')!r} vs {schema.get('buildSchema')!r}); rerun `vango state plan`/`apply`",
            {**facts, "manifest_build": manifest.get("buildSchema"), "schema_build": schema.get("buildSchema")},
        )
    return GateResult("generated_artifacts", "pass", "generated files present and consistent", facts)


def _persisted(schema: dict | None) -> dict[str, str]:
    """Persisted primitive id -> codec fingerprint. `persistedPrimitives: null` (or anything that is not a list or an
    object) persists nothing."""
    primitives = (schema or {}).get("persistedPrimitives") or {}
    if isinstance(primitives, list):
        return {str(p.get("id")): str(p.get("codecFingerprint")) for p in primitives if isinstance(p, dict)}
    if not isinstance(primitives, dict):
        return {}
    return {str(k): str((v or {}).get("codecFingerprint")) for k, v in primitives.items() if isinstance(v, dict)}


def state_impact(
    candidate: dict | None,
    serving: dict | None,
    *,
    serving_digest: str | None,
    candidate_path: str | None = None,
    serving_path: str | None = None,
) -> GateResult:
    """Warm when persisted state stays compatible with the artifact serving production, cold otherwise.

    `serving` is the state schema production's artifact carries (where production declared it), `candidate` the one
    the candidate carries (where it declares it, else where production declared it). Cold: production has a state
    schema and the candidate has none (its declaration dropped, or the file moved or removed), or a persisted
    primitive was removed, or its codec fingerprint changed (sessions refresh instead of resuming). Warm: only
    additions. The primitives themselves are compared, never just the schema hashes. Nothing serving production,
    or no state schema in production: warm.
    """
    paths = {"serving_schema": serving_path if serving is not None else None, "candidate_schema": candidate_path}
    if serving is None:
        reason = "nothing serves production yet" if serving_digest is None else "no persisted state schema declared"
        return GateResult(
            "state_impact", "pass", f"warm ({reason})", {"impact": "warm", "against": serving_digest, **paths}
        )
    before = _persisted(serving)
    after = _persisted(candidate) if candidate is not None else {}
    removed = sorted(set(before) - set(after))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    added = sorted(set(after) - set(before))
    facts = {
        "impact": "cold" if candidate is None or removed or changed else "warm",
        "against": serving_digest,
        "removed": removed,
        "changed": changed,
        "added": added,
        **paths,
    }
    if candidate is None:
        return GateResult(
            "state_impact",
            "block",
            f"cold: production's state schema ({serving_path}) persists {len(before)} primitive(s) and the candidate "
            "carries no state schema; live sessions will refresh instead of resuming (approve with --ack-cold)",
            facts,
        )
    if removed or changed:
        return GateResult(
            "state_impact",
            "block",
            f"cold: {len(removed)} persisted primitive(s) removed, {len(changed)} changed; live "
            "sessions will refresh instead of resuming (approve with --ack-cold)",
            facts,
        )
    if candidate.get("schemaHash") == serving.get("schemaHash") and not added:
        return GateResult(
            "state_impact",
            "pass",
            "warm (state schema unchanged)",
            {**facts, "schema_hash": candidate.get("schemaHash")},
        )
    return GateResult("state_impact", "pass", f"warm ({len(added)} persisted primitive(s) added)", facts)


def migrations_in(paths: list[str], directories: set[str]) -> dict[str, str]:
    """Migration files among an artifact's `paths`: name inside its directory -> that directory."""
    found: dict[str, str] = {}
    for directory in sorted(directories):
        prefix = directory.strip("/").removeprefix("./") + "/"
        for path in paths:
            if path.startswith(prefix):
                found.setdefault(path[len(prefix) :], directory)
    return found


def db_impact(
    candidate: list[str], serving: list[str] | None, *, declared: bool, directories: list[str] | None = None
) -> GateResult:
    """New migration files relative to what production applied. New migrations block preview until approved.

    `directories` are every migrations directory in play — the candidate's, production's, and any an applied
    migration was found in — so a candidate that keeps migration files there but drops its `[database]` key is
    still measured."""
    if not declared:
        return GateResult("db_impact", "pass", "none (no migrations directory declared)", {"impact": "none"})
    new = sorted(set(candidate) - set(serving or []))
    removed = sorted(set(serving or []) - set(candidate))
    facts = {"impact": "new_migrations" if new else "none", "new": new, "removed": removed}
    if directories is not None:
        facts["directories"] = directories
    if new:
        return GateResult(
            "db_impact",
            "block",
            f"{len(new)} new migration(s): {', '.join(new[:5])}{' …' if len(new) > 5 else ''}; "
            "approve with `rhone deploy approve`",
            facts,
        )
    return GateResult("db_impact", "pass", "none (no new migrations)", facts)


def providers_bound(required: list[str], bound: list[str]) -> GateResult:
    missing = sorted(set(required) - set(bound))
    facts = {"required": sorted(required), "bound": sorted(bound), "missing": missing}
    if missing:
        return GateResult(
            "providers_bound",
            "block",
            f"no ready binding for provider(s): {', '.join(missing)} (`rhone env bind`)",
            facts,
        )
    return GateResult(
        "providers_bound", "pass", "all declared providers bound" if required else "no providers declared", facts
    )


def decide(results: list[GateResult], *, ack_cold: bool, approved: bool) -> tuple[str, list[GateResult]]:
    """'fail', 'block' or 'pass' for the gates as a whole, and the results that caused it.

    An approval (`rhone deploy approve`) clears only the database gate; a cold state impact additionally needs the
    explicit --ack-cold acknowledgement. Missing bindings can never be approved away.
    """
    failed = [r for r in results if r.outcome == "fail"]
    if failed:
        return "fail", failed
    blocking = []
    for result in results:
        if result.outcome != "block":
            continue
        if result.gate == "state_impact" and ack_cold:
            continue
        if result.gate == "db_impact" and approved:
            continue
        blocking.append(result)
    return ("block", blocking) if blocking else ("pass", [])

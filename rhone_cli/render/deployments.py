"""Deployments, for people: the preview and its gate evidence, a deployment's details and logs, the list."""

from __future__ import annotations

from typing import Any

from rhone_cli.output import Output
from rhone_cli.render import Human, table

GATES = (
    ("state_impact", "state impact"),
    ("db_impact", "db impact"),
    ("generated_artifacts", "generated files"),
    ("providers_bound", "providers"),
)


def deployment(doc: dict) -> Human:
    """The preview URL (or the state), then the verdict of each gate."""

    def human(out: Output) -> None:
        if doc.get("state") == "preview_ready":
            out.line(f"Preview: {doc['url']}")
        else:
            out.line(f"{doc['id']}  {doc.get('state')}  {doc.get('url', '')}")
        for line in evidence_lines(doc):
            out.line(line)

    return human


def evidence_lines(doc: dict) -> list[str]:
    """The verdict in words: state impact and database impact are two separate lines, always."""
    gates = {g["gate"]: g for g in (doc.get("evidence") or {}).get("gates", [])}
    lines = [f"  {label + ':':<17}{gates[gate]['summary']}" for gate, label in GATES if gate in gates]
    if doc.get("artifact_digest"):
        lines.append(f"  {'artifact:':<17}{doc['artifact_digest']}")
    return lines


def details(doc: dict) -> Human:
    """`rhone deploy show`: the deployment, its operation and its allocations."""

    def human(out: Output) -> None:
        deployment(doc)(out)
        out.line(f"  {'operation:':<17}{doc['operation_id']}")
        for alloc in doc["allocations"]:
            health = alloc.get("health") or {}
            owner = "  (route owner)" if alloc.get("route_owner") else ""
            out.line(
                f"  allocation {alloc['id']}  {alloc['environment']}  {alloc['state']}  region {alloc['region']}  "
                f"cell {alloc['cell']}  {health.get('error') or health.get('last', '')}{owner}"
            )

    return human


def listing(rows: list[dict[str, Any]]) -> Human:
    """`rhone deploy ls`: which deployment serves each environment's route, and which previews were superseded."""
    shown = [
        {
            **row,
            "state": "superseded" if row.get("superseded_by") else row["state"],
            "serves": ", ".join(route["environment"] for route in row.get("routes") or []),
            "artifact": (row.get("artifact_digest") or "")[:19],
        }
        for row in rows
    ]
    return table(
        ["id", "env", "state", "serves", "artifact", "created"],
        ["id", "environment", "state", "serves", "artifact", "created_at"],
        shown,
        "no deployments",
    )


def logs(doc: dict) -> Human:
    def human(out: Output) -> None:
        out.line("== build ==")
        out.line(doc["build"] or "(no build log)")
        for alloc_id, text in doc["allocations"].items():
            out.line(f"== allocation {alloc_id} ==")
            out.line(text or "(empty)")

    return human

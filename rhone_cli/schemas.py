"""Generate `schemas/`: `python -m rhone_cli.schemas [--check]`.

Every schema comes from a model (rhone.toml from `config.project.RhoneToml`, `--json` outputs from
`documents.py`), so the committed files cannot silently drift: `--check` (and a test) fails when they differ.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
BASE_URL = "https://rhone.dev/schemas/"


def _from_openapi(openapi: dict, component: str, is_list: bool) -> dict:
    """A standalone schema for one OpenAPI component (and what it references), optionally as a list of it."""
    components = openapi["components"]["schemas"]
    needed: dict[str, dict] = {}
    pending = [component]
    while pending:
        name = pending.pop()
        if name in needed:
            continue
        needed[name] = components[name]
        text = json.dumps(components[name])
        pending.extend(ref.split("/")[-1] for ref in _refs(text))
    rewritten = json.loads(json.dumps(needed).replace("#/components/schemas/", "#/$defs/"))
    root = {"type": "array", "items": {"$ref": f"#/$defs/{component}"}} if is_list else {"$ref": f"#/$defs/{component}"}
    return {**root, "$defs": rewritten}


def _refs(text: str) -> list[str]:
    import re

    return re.findall(r'"#/components/schemas/([A-Za-z0-9_]+)"', text)


def generate() -> dict[str, str]:
    """Every schema, keyed by file name. API resource documents come from the committed schemas/openapi.json
    (the wire contract; regenerate it first with `python -m rhone_local.openapi`)."""
    from rhone_cli.config.project import json_schema
    from rhone_cli.documents import API_DOCUMENTS, DOCUMENTS

    schemas = {"rhone.toml.schema.json": json_schema()}
    for name, model in DOCUMENTS.items():
        schemas[name] = {"$schema": SCHEMA_DIALECT, "$id": BASE_URL + name, **model.model_json_schema()}
    openapi = json.loads((Path(__file__).resolve().parent.parent / "schemas" / "openapi.json").read_text())
    # `rhone deploy --promote --json`: the deployment (an API resource) and what the promotion did to the route.
    from rhone_cli.documents import RouteMove

    deployment = _from_openapi(openapi, "Deployment", False)
    move = RouteMove.model_json_schema()
    schemas["deploy-promote.schema.json"] = {
        "$schema": SCHEMA_DIALECT,
        "$id": BASE_URL + "deploy-promote.schema.json",
        "type": "object",
        "additionalProperties": False,
        "required": ["deployment", "promotion"],
        "properties": {"deployment": {"$ref": "#/$defs/Deployment"}, "promotion": {"$ref": "#/$defs/RouteMove"}},
        "$defs": {**deployment["$defs"], **move.pop("$defs", {}), "RouteMove": move},
    }
    for name, (component, is_list) in API_DOCUMENTS.items():
        schemas[name] = {
            "$schema": SCHEMA_DIALECT,
            "$id": BASE_URL + name,
            **_from_openapi(openapi, component, is_list),
        }
    schemas["region.schema.json"] = _region_shown(openapi)
    return {name: json.dumps(schema, indent=2, sort_keys=True) + "\n" for name, schema in schemas.items()}


def _region_shown(openapi: dict) -> dict:
    """`rhone region show --json`: the region; with --env, also the environment and its eligibility there (null when
    the environment has no record for the region)."""
    region = _from_openapi(openapi, "Region", False)
    defs = {**region["$defs"], **_from_openapi(openapi, "EnvironmentRegion", False)["$defs"]}
    shown = dict(defs.pop("Region"))
    shown["properties"] = {
        **shown["properties"],
        "environment": {"type": "string", "description": "With --env: the environment asked about."},
        "eligibility": {"anyOf": [{"$ref": "#/$defs/EnvironmentRegion"}, {"type": "null"}]},
    }
    return {"$schema": SCHEMA_DIALECT, "$id": BASE_URL + "region.schema.json", **shown, "$defs": defs}


def main(argv: list[str]) -> int:
    directory = Path(__file__).resolve().parent.parent / "schemas"
    generated = generate()
    if "--check" in argv:
        stale = [
            n for n, text in generated.items() if not (directory / n).exists() or (directory / n).read_text() != text
        ]
        for name in stale:
            print(f"schemas/{name} is out of date; run `python -m rhone_cli.schemas`", file=sys.stderr)
        return 1 if stale else 0
    directory.mkdir(exist_ok=True)
    for name, text in generated.items():
        (directory / name).write_text(text)
    print(f"wrote {len(generated)} schemas to {directory}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

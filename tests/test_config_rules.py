"""rhone.toml's pydantic-free acceptor (rhone_cli/config/rules.py) against the models (rhone_cli/config/project.py).

`rules.TOML` may only ever accept what the models accept (it answers `rhone config validate` on its own for a valid
file), and should accept all of it (else the fast path is lost). Three ways to catch a drift: its shape rendered as a
JSON schema equals the models' own schema; every field runs the same check functions; and a corpus (the malformed
fixtures, the examples, and thousands of one-value mutations of a file that sets every key) gets the same verdict.
"""

from __future__ import annotations

import contextlib
import copy
import tomllib
import typing
from pathlib import Path
from typing import Any

import pytest
from pydantic import AfterValidator, BaseModel, ValidationError

from rhone_cli.config import project, rules
from rhone_cli.config.settings import NAME_PATTERN
from tests.conftest import REPO, VALID_TOML

BAD_CONFIGS = Path(__file__).resolve().parent / "fixtures" / "bad_configs"

FULL = {
    "project": {"name": "shop", "workspace": "acme"},
    "app": {"name": "web"},
    "build": {
        "command": "make",
        "output": "dist",
        "timeout": 600,
        "include": ["**", "src/*.py"],
        "exclude": ["!keep", "a/**/b"],
    },
    "process": {
        "start": "python app.py",
        "health_path": "/healthz",
        "readiness_timeout": 60,
        "readiness": "tcp",
        "drain_timeout": 0,
    },
    "vango": {"state_manifest": "vango_state_manifest.json", "state_schema": "s.json", "routes": "app/routes.go"},
    "database": {"migrations": "migrations"},
    "environments": {"production": {"approval_required": True, "frozen": False, "residency": ["eu"]}},
    "runtime": {
        "server_sessions": False,
        "unsafe_replay_routes": ["/pay"],
        "session_cookie": "sid",
        "services": ["cache", "queue"],
    },
    "providers": {"db": {"kind": "postgres", "required": False, "secrets": ["DATABASE_URL"]}},
    "env": {"required": ["API_KEY"], "LOG_LEVEL": "debug", "_X": ""},
}
# Values tried in place of every value of FULL: other types, bounds, and each check's edge cases (no None: TOML has
# no null).
CANDIDATES: list[Any] = [
    *("", " ", "x", "web", "Web", "a--b", "1a", "a" * 40, "a" * 41, "/abs", "~/x", "C:\\x", "../x", "a/../b"),
    *("a\x00b", "a/**b", "[a", "[[a]]", "!", "/healthz", "/a b", "http", "tcp", "redis", "nope", "cache"),
    *("PORT", "RHONE_X", "required", "API_KEY", "sid\n", "DATABASE_URL\n", "x" * 32769, "é" * 20000, "a/" + "b" * 256),
    *(0, 1, -1, 60, 600, 3600, 3601, 7200, 7201, 2**70, 1.5, True, False),
    *([], ["x"], [1], {}, {"name": "x"}),
]


def verdicts(data: dict[str, Any]) -> tuple[bool, bool]:
    """(the acceptor's verdict, the models')."""
    try:
        project.RhoneToml.model_validate(data)
        models = True
    except ValidationError:
        models = False
    return rules.plainly_valid(data), models


def leaves(value: Any, path: tuple = ()) -> list[tuple]:
    if isinstance(value, dict):
        return [path] + [leaf for key, item in value.items() for leaf in leaves(item, (*path, key))]
    if isinstance(value, list):
        return [path] + [leaf for index, item in enumerate(value) for leaf in leaves(item, (*path, index))]
    return [path]


def replaced(data: Any, path: tuple, value: Any) -> Any:
    data = copy.deepcopy(data)
    target = data
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return data


def test_the_full_file_is_valid_both_ways():
    assert verdicts(FULL) == (True, True)


@pytest.mark.parametrize("path", [p for p in leaves(FULL) if p], ids=lambda p: ".".join(map(str, p)))
def test_every_one_value_mutation_gets_the_same_verdict(path):
    disagreements = []
    for value in CANDIDATES:
        data = replaced(FULL, path, value)
        if len(set(verdicts(data))) != 1:
            disagreements.append((value if len(repr(value)) < 60 else f"{repr(value)[:60]}…", verdicts(data)))
    assert disagreements == []


@pytest.mark.parametrize("path", [p for p in leaves(FULL) if p and isinstance(p[-1], str)])
def test_a_missing_key_or_an_unknown_one_gets_the_same_verdict(path):
    parent = FULL
    for part in path[:-1]:
        parent = parent[part]
    without = copy.deepcopy(FULL)
    target = without
    for part in path[:-1]:
        target = target[part]
    del target[path[-1]]
    assert len(set(verdicts(without))) == 1
    for unknown in ("colour", "PORT", "Extra_Key", "a-b"):
        with_unknown = replaced(FULL, (*path[:-1], unknown), "x")
        assert len(set(verdicts(with_unknown))) == 1, unknown


def corpus() -> list[tuple[str, str]]:
    """The bad-config corpus and the examples that parse as TOML: a file that does not is never handed to either
    validator (the fast path leaves it to the full CLI, whose TOML error tests/test_config_corpus.py checks)."""
    files = sorted(BAD_CONFIGS.glob("*.toml")) + sorted((REPO / "examples").glob("*/rhone.toml"))
    sources = [("VALID_TOML", VALID_TOML)] + [(p.name, p.read_bytes().decode("utf-8", "replace")) for p in files]
    parsed = []
    for name, source in sources:
        with contextlib.suppress(tomllib.TOMLDecodeError):
            tomllib.loads(source)
            parsed.append((name, source))
    return parsed


@pytest.mark.parametrize(("name", "source"), corpus(), ids=[name for name, _ in corpus()])
def test_the_config_corpus_gets_the_same_verdict(name, source):
    assert len(set(verdicts(tomllib.loads(source)))) == 1


def test_the_corpus_has_both_verdicts():
    # Control: the agreement above is not all-invalid or all-valid.
    seen = set()
    for _, source in corpus():
        seen.add(rules.plainly_valid(tomllib.loads(source)))
    assert seen == {True, False}


# -- the shape: rules.TOML rendered as a JSON schema equals the models' schema -------------------------------------
# Patterns the models add to a check's field in their JSON schema only (json_schema_extra), by check.
SCHEMA_PATTERN_OF_CHECK = {rules.setting_name: NAME_PATTERN}


def render(rule: rules.Rule) -> dict[str, Any]:
    if isinstance(rule, rules.Text):
        schema: dict[str, Any] = {"type": "string"}
        pattern = rule.pattern or SCHEMA_PATTERN_OF_CHECK.get(rule.check)
        if pattern:
            schema["pattern"] = pattern
        if rule.max_length is not None:
            schema["maxLength"] = rule.max_length
        return schema
    if isinstance(rule, rules.Integer):
        return {"type": "integer", "minimum": rule.minimum, "maximum": rule.maximum}
    if isinstance(rule, rules.Boolean):
        return {"type": "boolean"}
    if isinstance(rule, rules.OneOf):
        return {"type": "string", "enum": list(rule.choices)}
    if isinstance(rule, rules.ListOf):
        return {"type": "array", "items": render(rule.item)}
    if isinstance(rule, rules.MapOf):
        return {"type": "object", "additionalProperties": render(rule.value)}
    assert isinstance(rule, rules.Table)
    schema = {"type": "object", "properties": {key: render(item) for key, item in rule.fields.items()}}
    schema["additionalProperties"] = render(rule.other_values) if rule.other_values else False
    if rule.other_keys:
        schema["propertyNames"] = {"pattern": NAME_PATTERN.replace("|required)", ")")}
    if rule.required:
        schema["required"] = sorted(rule.required)
    return schema


def normalized(schema: Any, defs: dict[str, Any]) -> Any:
    """The models' schema with references resolved and what does not validate (titles, texts, defaults) left out;
    an optional field (`X | None`: TOML has no null) is its X."""
    if isinstance(schema, list):
        return [normalized(item, defs) for item in schema]
    if not isinstance(schema, dict):
        return schema
    if "$ref" in schema:
        return normalized(defs[schema["$ref"].rsplit("/", 1)[1]], defs)
    if "anyOf" in schema:
        options = [option for option in schema["anyOf"] if option != {"type": "null"}]
        assert len(options) == 1, schema
        return normalized(options[0], defs)
    out = {
        key: normalized(value, defs) if key != "properties" else {k: normalized(v, defs) for k, v in value.items()}
        for key, value in schema.items()
        if key not in {"title", "description", "default", "$defs", "$schema", "$id"}
    }
    if "required" in out:
        out["required"] = sorted(out["required"])
    if out.get("type") == "object" and "properties" in out:
        out.setdefault("additionalProperties", True)
    return out


def test_the_rules_render_the_models_json_schema():
    schema = project.json_schema()
    assert render(rules.TOML) == normalized(schema, schema["$defs"])


# -- the checks: each field runs the same functions ------------------------------------------------------------------
def checks_of_annotation(annotation: Any) -> set:
    found = set()
    for meta in getattr(annotation, "__metadata__", ()):
        if isinstance(meta, AfterValidator):
            found.add(meta.func)
    for arg in typing.get_args(annotation):
        found |= checks_of_annotation(arg)
    return found


def checks_of_rule(rule: rules.Rule) -> set:
    if isinstance(rule, rules.Text):
        return {rule.check} if rule.check else set()
    if isinstance(rule, rules.ListOf):
        return checks_of_rule(rule.item)
    if isinstance(rule, rules.MapOf):
        return {rule.key}
    return set()


def model_of(annotation: Any) -> type[BaseModel] | None:
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def pairs(model: type[BaseModel], table: rules.Table, where: str = ""):
    """(where, the model field's annotation, the rule) for every field, through nested sections and maps."""
    assert set(model.model_fields) == set(table.fields), where
    for name, info in model.model_fields.items():
        rule = table.fields[name]
        inner = model_of(info.annotation)
        if typing.get_origin(info.annotation) is dict:
            key, inner = typing.get_args(info.annotation)
            yield f"{where}{name} (keys)", key, rules.MapOf(rule.key)
            rule = rule.value
        if inner is not None:
            assert isinstance(rule, rules.Table), f"{where}{name}"
            yield from pairs(inner, rule, f"{where}{name}.")
        else:  # pydantic keeps a field's own Annotated metadata beside its annotation
            yield (
                f"{where}{name}",
                typing.Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation,
                rule,
            )


def test_every_field_runs_the_models_checks():
    found = [
        (where, checks_of_annotation(annotation), checks_of_rule(rule))
        for where, annotation, rule in pairs(project.RhoneToml, rules.TOML)
    ]
    assert [(where, ours) for where, theirs, ours in found if theirs != ours] == []
    assert sum(bool(theirs) for _, theirs, _ in found) >= 15  # control: the walk saw the checks
    # The [env] table's other keys are setting names on both sides (the mutations above add "PORT" and "a-b").
    assert rules.TOML.fields["env"].other_keys is rules.setting_name


def test_the_build_defaults_are_the_models():
    # A manifest of a file the rules accept reads [build] with rules.BUILD_DEFAULTS filled in; the models fill the same.
    assert {key: project.BuildSection().model_dump()[key] for key in rules.BUILD_DEFAULTS} == rules.BUILD_DEFAULTS

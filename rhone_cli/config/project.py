"""`rhone.toml`: the human-authored project configuration.

Loaded with `tomllib`, validated with pydantic, written (only by `rhone init`) with `tomli-w`. Every problem is
reported with the file, the line, the dotted key path and, where one is close, a "did you mean" suggestion; all
problems of a file are collected, not just the first. `schemas/rhone.toml.schema.json` is generated from
`RhoneToml` (see `rhone_cli.schemas`).
"""

from __future__ import annotations

import difflib
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from rhone_cli.config import rules
from rhone_cli.config.locate import FILENAME, find
from rhone_cli.config.rules import (
    BUILD_DEFAULTS,
    BUILD_TIMEOUT_DEFAULT,
    BUILD_TIMEOUT_MAX,
    DRAIN_TIMEOUT_DEFAULT,
    DRAIN_TIMEOUT_MAX,
    PROVIDER_KINDS,
    READINESS_PROBES,
    READINESS_TIMEOUT_DEFAULT,
    READINESS_TIMEOUT_MAX,
    RUNTIME_SERVICES,
    SECRET_NAME_PATTERN,
    SESSION_COOKIE_PATTERN,
    SETTING_VALUE_PATTERN,
)
from rhone_cli.config.settings import MAX_VALUE_BYTES, NAME_PATTERN
from rhone_cli.config.toml_lines import key_lines, line_of
from rhone_cli.errors import ExitCode, RhoneError

SCHEMA_URL = "https://rhone.dev/schemas/rhone.toml.schema.json"  # also the $id of the generated schema
DEFAULT_ENVIRONMENTS = ("preview", "production")


# rhone.toml's own keys nest 4 levels (environments.production.residency[0]); anything far deeper is not a config.
MAX_NESTING = 16


# -- field types: the checks live in rhone_cli/config/rules.py (shared with its pydantic-free acceptor) -------------
Slug = Annotated[str, AfterValidator(rules.slug)]
RelativePath = Annotated[str, AfterValidator(rules.relative_path)]
Glob = Annotated[str, AfterValidator(rules.glob)]
Command = Annotated[str, AfterValidator(rules.command)]
HttpPath = Annotated[str, AfterValidator(rules.http_path)]


class _Section(BaseModel):
    # strict: TOML has real types, so "60" is not an integer and "yes" is not a boolean.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class ProjectSection(_Section):
    name: Slug = Field(description="Project name within the workspace.")
    workspace: Slug | None = Field(None, description="Workspace; defaults to the profile's workspace.")


class AppSection(_Section):
    name: Slug = Field(description="App name; stable identity that exists before any deployment.")


class BuildSection(_Section):
    command: Command | None = Field(
        None, description="Build command run by the build worker; omit when the source is the artifact."
    )
    output: RelativePath = Field(
        BUILD_DEFAULTS["output"], description="Directory (relative) that holds the built artifact."
    )
    include: list[Glob] = Field(
        default_factory=lambda: list(BUILD_DEFAULTS["include"]), description="Globs of files to include."
    )
    exclude: list[Glob] = Field(
        default_factory=lambda: list(BUILD_DEFAULTS["exclude"]),
        description="Globs to exclude (in addition to .rhoneignore).",
    )
    timeout: int = Field(BUILD_TIMEOUT_DEFAULT, ge=1, le=BUILD_TIMEOUT_MAX, description="Build timeout in seconds.")


class ProcessSection(_Section):
    start: Command = Field(description="Start command; the process receives PORT and must listen on it.")
    health_path: HttpPath = Field("/healthz", description="Readiness probe path.")
    readiness_timeout: int = Field(
        READINESS_TIMEOUT_DEFAULT, ge=1, le=READINESS_TIMEOUT_MAX, description="Seconds to wait for readiness."
    )
    readiness: Literal[READINESS_PROBES] = Field(  # type: ignore[valid-type]
        "http",
        description="How readiness and liveness are probed: http (GET health_path answers 200) or tcp (the port "
        "accepts a connection; for servers that answer plain GETs with an error, such as WebSocket-only ones).",
    )
    drain_timeout: int = Field(
        DRAIN_TIMEOUT_DEFAULT,
        ge=0,
        le=DRAIN_TIMEOUT_MAX,
        description="Seconds a previous route owner keeps its open connections (requests, streams, WebSockets) "
        "after the route moves, before it is stopped.",
    )


class VangoSection(_Section):
    state_manifest: RelativePath | None = Field(None, description="vango_state_manifest.json, when the app has one.")
    state_schema: RelativePath | None = Field(None, description="vango_state_schema.json, when the app has one.")
    routes: RelativePath | None = Field(None, description="Generated routes file (app/routes/routes_gen.go).")


class DatabaseSection(_Section):
    migrations: RelativePath | None = Field(None, description="Directory of database migrations.")


class EnvironmentPolicy(_Section):
    approval_required: bool = Field(False, description="Promotions need an owner/admin approval.")
    frozen: bool = Field(False, description="Promotions are refused while frozen.")
    residency: list[Slug] = Field(
        default_factory=list,
        description="Jurisdictions whose regions may serve this environment (empty: any). Checked by region enable.",
    )


class RuntimeSection(_Section):
    server_sessions: bool = Field(
        True,
        description="The app keeps live server-side sessions (Vango's model): more than one instance needs a "
        "durable session store and a broadcast backend.",
    )
    unsafe_replay_routes: list[HttpPath] = Field(
        default_factory=list,
        description="Routes that must not run twice (payments, webhooks): more than one instance needs an "
        "idempotency store.",
    )
    session_cookie: Annotated[str, Field(pattern=SESSION_COOKIE_PATTERN)] | None = Field(
        None,
        description="Ignored (kept so older files stay valid): the edge keeps each client on the instance that "
        "first served it with its own affinity cookie, whatever cookies the app sets.",
    )
    services: list[Literal[RUNTIME_SERVICES]] = Field(  # type: ignore[valid-type]
        default_factory=list, description="Further runtime services the app requires to run more than one instance."
    )


class Provider(_Section):
    kind: Literal[PROVIDER_KINDS] = Field(description="Kind of external resource.")  # type: ignore[valid-type]
    required: bool = Field(True, description="Deploys are gated until a ready binding exists.")
    secrets: list[Annotated[str, Field(pattern=SECRET_NAME_PATTERN)]] = Field(
        default_factory=list, description="Secret names its binding must provide (checked when a region is enabled)."
    )


SettingName = Annotated[str, AfterValidator(rules.setting_name), Field(json_schema_extra={"pattern": NAME_PATTERN})]


class EnvSection(_Section):
    """Defaults for non-secret settings (`NAME = "value"`; an environment's own value, `rhone env set`, wins) and
    the settings every environment must have before a deploy is accepted (`required`)."""

    model_config = ConfigDict(
        extra="allow",
        frozen=True,
        strict=True,
        # Every key is a setting's name, but for `required` itself.
        json_schema_extra={"propertyNames": {"pattern": NAME_PATTERN.replace("|required)", ")")}},
    )
    __pydantic_extra__: dict[
        SettingName, Annotated[str, Field(max_length=MAX_VALUE_BYTES, pattern=SETTING_VALUE_PATTERN)]
    ] = Field(init=False)

    required: list[SettingName] = Field(
        default_factory=list,
        description="Settings each environment must have (`rhone env set ENV NAME=…` or --secret NAME): deploys "
        "and promotions to an environment without them are refused before anything is built.",
    )


class RhoneToml(_Section):
    """The schema of rhone.toml."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, title="rhone.toml")

    project: ProjectSection
    app: AppSection
    build: BuildSection = Field(default_factory=BuildSection)
    process: ProcessSection
    vango: VangoSection = Field(default_factory=VangoSection)
    database: DatabaseSection = Field(default_factory=DatabaseSection)
    environments: dict[Slug, EnvironmentPolicy] = Field(
        default_factory=dict, description="Environment policies; preview and production always exist."
    )
    runtime: RuntimeSection = Field(default_factory=RuntimeSection)
    providers: dict[Slug, Provider] = Field(default_factory=dict, description="Declared providers by name.")
    env: EnvSection = Field(default_factory=EnvSection)

    def resolved(self) -> dict[str, Any]:
        """The configuration with every default filled in, as `rhone config show` prints it."""
        data = self.model_dump(mode="json")
        environments = {name: EnvironmentPolicy().model_dump(mode="json") for name in DEFAULT_ENVIRONMENTS}
        environments.update(data["environments"])
        data["environments"] = environments
        return data


class DeploymentConfig(RhoneToml):
    """The configuration a deployment carries to the server: the resolved rhone.toml. The server validates it with
    this very model, so a raw API request meets the same rules and bounds as `rhone config validate`; project and app
    may be left out (the request's URL names them), build and process may not."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, title="DeploymentConfig")

    project: ProjectSection | None = None
    app: AppSection | None = None
    build: BuildSection


# -- problems -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Problem:
    file: str
    line: int | None
    column: int | None
    key: str | None
    message: str
    suggestion: str | None = None

    @property
    def text(self) -> str:
        where = self.file + (f":{self.line}" if self.line else "") + (f":{self.column}" if self.column else "")
        key = f" {self.key}:" if self.key else ""
        hint = f" (did you mean {self.suggestion!r}?)" if self.suggestion else ""
        return f"{where}:{key} {self.message}{hint}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "key": self.key,
            "message": self.message,
            "suggestion": self.suggestion,
            "text": self.text,
        }


def _dotted(path: tuple[str | int, ...]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + (part if re.fullmatch(r"[A-Za-z0-9_-]+", part) else f'"{part}"')
    return out


def _model_at(path: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The model whose fields are valid at `path` (for suggesting a key name)."""
    model: Any = RhoneToml
    for part in path:
        if isinstance(part, int) or model is None:
            return None
        if model in (RhoneToml,) and part in ("environments", "providers"):
            # dict[Slug, Model]: the next part is a user-chosen name.
            model = {"environments": EnvironmentPolicy, "providers": Provider}[part]
            continue
        if model in (EnvironmentPolicy, Provider) and part not in model.model_fields:
            continue  # the user-chosen name itself
        field = model.model_fields.get(part)
        if field is None:
            return None
        annotation = field.annotation
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    return model


def _close(word: str, choices: list[str]) -> str | None:
    matches = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return matches[0] if matches else None


def _problems_from_validation(error: ValidationError, file: str, lines: dict) -> list[Problem]:
    problems = []
    for item in error.errors(include_url=False):
        loc = tuple(part for part in item["loc"] if part != "[key]")
        kind = item["type"]
        suggestion = None
        message = item["msg"]
        if kind == "extra_forbidden":
            parent = _model_at(loc[:-1])
            choices = list(parent.model_fields) if parent else []
            suggestion = _close(str(loc[-1]), choices)
            message = "unknown key"
            if choices and not suggestion:
                message += f" (allowed here: {', '.join(choices)})"
        elif kind == "missing":
            message = "required key is missing"
        elif kind == "literal_error":
            expected = item.get("ctx", {}).get("expected", "")
            choices = re.findall(r"'([^']+)'", expected)
            suggestion = _close(str(item.get("input")), choices)
            message = f"{item.get('input')!r} is not one of {', '.join(choices)}"
        elif kind == "value_error":
            message = message.removeprefix("Value error, ")
        elif kind.endswith("_type") or kind.endswith("_parsing"):
            message = f"{message} (got {type(item.get('input')).__name__} {item.get('input')!r})"
        line = line_of(lines, loc)
        if line is None and kind == "missing":
            line = 1  # a missing top-level table: reported at its table, the root, which starts on line 1
        problems.append(Problem(file, line, None, _dotted(loc) or None, message, suggestion))
    problems.sort(key=lambda p: (p.line or 0, p.key or ""))
    return problems


_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_TOML_EOF = re.compile(r"\s*\(at end of document\)$")


def _problem_from_syntax(error: tomllib.TOMLDecodeError, file: str, source: str) -> Problem:
    message = str(error)
    line = column = None
    match = _TOML_POSITION.search(message)
    if match:
        line, column = int(match.group(1)), int(match.group(2))
        message = message[: match.start()]
    elif _TOML_EOF.search(message):
        line = max(1, len(source.removesuffix("\n").split("\n")))  # tomllib counts "\n" only
        message = _TOML_EOF.sub("", message) + " at end of file"
    return Problem(file, line, column, None, f"TOML syntax error: {message}")


# -- loading ------------------------------------------------------------------------------------------------------
@dataclass
class LoadResult:
    path: Path
    config: RhoneToml | None
    problems: list[Problem]


def _too_deep(data: Any, limit: int) -> bool:
    """Whether tables and arrays nest more than `limit` levels (measured without recursion)."""
    stack = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return True
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def parse(source: str, file: str) -> tuple[RhoneToml | None, list[Problem]]:
    too_deep = Problem(
        file, None, None, None, f"too deeply nested: tables and arrays may nest at most {MAX_NESTING} levels"
    )
    try:
        data = tomllib.loads(source)
    except tomllib.TOMLDecodeError as error:
        return None, [_problem_from_syntax(error, file, source)]
    except RecursionError:  # the parser itself recurses once per level of nesting
        return None, [too_deep]
    if _too_deep(data, MAX_NESTING):
        return None, [too_deep]
    try:
        return RhoneToml.model_validate(data), []
    except ValidationError as error:
        return None, _problems_from_validation(error, file, key_lines(source))


def load_file(path: Path) -> LoadResult:
    display = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return LoadResult(path, None, [Problem(display, None, None, None, "file not found")])
    except OSError as error:
        return LoadResult(path, None, [Problem(display, None, None, None, f"cannot read: {error.strerror}")])
    # Editors on Windows may save a byte-order mark; TOML has no use for it and tomllib would reject it.
    raw = raw.removeprefix(b"\xef\xbb\xbf")
    try:
        source = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line_start = raw.rfind(b"\n", 0, error.start) + 1
        line = raw.count(b"\n", 0, error.start) + 1
        column = len(raw[line_start : error.start].decode("utf-8")) + 1  # everything before error.start decodes
        message = f"not valid UTF-8 (byte {error.start})"
        return LoadResult(path, None, [Problem(display, line, column, None, message)])
    config, problems = parse(source, display)
    return LoadResult(path, config, problems)


def config_error(result: LoadResult) -> RhoneError:
    count = len(result.problems)
    if result.problems and result.problems[0].message == "file not found":
        return RhoneError(
            f"{result.path}: file not found",
            code="config_not_found",
            exit_code=ExitCode.USAGE,
            hint="check the path given to -f/--file, or run `rhone init` to create rhone.toml",
            details={"file": str(result.path), "problems": [p.to_dict() for p in result.problems]},
        )
    return RhoneError(
        f"{result.path} is not valid: {count} problem{'s' if count != 1 else ''}",
        code="invalid_config",
        exit_code=ExitCode.USAGE,
        hint="run `rhone config validate` after fixing; the schema is schemas/rhone.toml.schema.json",
        details={"file": str(result.path), "problems": [p.to_dict() for p in result.problems]},
    )


def locate(workdir: Path, explicit: Path | None = None) -> Path:
    if explicit is not None:
        return explicit if explicit.is_absolute() else workdir / explicit
    found = find(workdir)
    if found is None:
        raise RhoneError(
            f"no {FILENAME} in {workdir} or any parent directory",
            code="config_not_found",
            exit_code=ExitCode.USAGE,
            hint="run `rhone init` to create one, or use -C DIR to point at the project",
        )
    return found


def load(workdir: Path, explicit: Path | None = None) -> RhoneToml:
    """Load and validate the project's rhone.toml, or raise a usage error listing every problem."""
    result = load_file(locate(workdir, explicit))
    if result.config is None:
        raise config_error(result)
    return result.config


def json_schema() -> dict[str, Any]:
    schema = RhoneToml.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_URL, **schema}


def render_new(project: str, app: str, start: str) -> str:
    """The text `rhone init` writes: a minimal valid file with the common keys shown."""
    import tomli_w

    document = {
        "project": {"name": project},
        "app": {"name": app},
        "process": {"start": start, "health_path": "/healthz", "readiness_timeout": 60},
        "environments": {"production": {"approval_required": False}},
    }
    header = (
        f"# rhone.toml: project configuration for rhone (human-authored; builds never write it).\n"
        f"# Schema: {SCHEMA_URL}\n"
        f"# Check it offline with `rhone config validate`.\n\n"
    )
    return header + tomli_w.dumps(document)

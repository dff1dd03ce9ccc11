"""rhone.toml's rules without pydantic: the field checks the models use, and a plain acceptor built from the same rules.

The pydantic models in `rhone_cli.config.project` are the definition of rhone.toml (its JSON schema, every message and
problem location come from them), but importing pydantic and building them costs most of `rhone config validate`'s
start-up. The field checks live here, in the standard library, and the models wrap them (`AfterValidator`), so each
rule has one implementation. `TOML` states the file's shape (keys, types, bounds) as data; it only ever says "valid"
or "not sure": a file it does not accept goes through the models, which then report every problem. A test
(tests/test_config_rules.py) renders `TOML` as a JSON schema and compares it with the models' own, checks that each
field runs the same checks, and runs the config corpus through both, so the two cannot drift apart.

Standard library only (start-up budget: `tests/test_startup_imports.py`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import PurePosixPath, PureWindowsPath

from rhone_cli.config.locate import slug_problem
from rhone_cli.config.settings import MAX_VALUE_BYTES, name_problem

# `typing` is for the type checker only: this module is on the start-up path of the commands answered without the
# command tree, where importing it costs ~2 ms (rhone_cli/plain_invocation.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# How long a build and a readiness probe may hold a server worker. The server enforces the same bounds (it validates
# a deployment's configuration with the models, and clamps older stored ones: rhone_local/domain/limits.py).
BUILD_TIMEOUT_DEFAULT, BUILD_TIMEOUT_MAX = 600, 7200
READINESS_TIMEOUT_DEFAULT, READINESS_TIMEOUT_MAX = 60, 3600
DRAIN_TIMEOUT_DEFAULT, DRAIN_TIMEOUT_MAX = 30, 3600
READINESS_PROBES = ("http", "tcp")
RUNTIME_SERVICES = ("session", "broadcast", "cache", "queue", "idempotency", "object_storage")
PROVIDER_KINDS = ("postgres", "mysql", "redis", "s3", "smtp", "sqlite", "generic")
SESSION_COOKIE_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
SECRET_NAME_PATTERN = r"^[A-Z_][A-Z0-9_]*$"
SETTING_VALUE_PATTERN = r"^[^\x00]*$"
MAX_PATH_BYTES, MAX_COMPONENT_BYTES = 1024, 255
# [build]'s defaults for the keys a manifest reads (the models use them too; tests/test_config_rules.py compares).
BUILD_DEFAULTS = {"output": ".", "include": ["**"], "exclude": []}


# -- field checks (each raises ValueError with the message a problem shows) ----------------------------------------
def slug(value: str) -> str:
    problem = slug_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def relative_path(value: str) -> str:
    """A project-relative path: not empty, not absolute (POSIX or Windows), no `..` segment."""
    if not value.strip():
        raise ValueError("must not be empty")
    if "\x00" in value:
        raise ValueError("must not contain a NUL character")
    if value.startswith(("/", "\\", "~")) or PureWindowsPath(value).drive:
        raise ValueError("must be relative to the project directory, not an absolute path")
    parts = PurePosixPath(value.replace("\\", "/")).parts
    if ".." in parts:
        raise ValueError("must stay inside the project directory (no '..' segments)")
    # The limits an artifact's paths have (docs/security.md, "Files from clients"): a longer name cannot be made on the
    # server's file system, so refuse it here rather than fail a build later.
    if len(value.encode()) > MAX_PATH_BYTES:
        raise ValueError(f"must be at most {MAX_PATH_BYTES} bytes long (UTF-8)")
    if any(len(part.encode()) > MAX_COMPONENT_BYTES for part in parts):
        raise ValueError(f"must not have a path component longer than {MAX_COMPONENT_BYTES} bytes (UTF-8)")
    return value


def glob(value: str) -> str:
    """A gitignore-style, project-relative glob."""
    if not value.strip():
        raise ValueError("glob must not be empty")
    relative_path(value.lstrip("!"))
    depth = 0
    for char in value:
        if char == "[":
            if depth:
                raise ValueError(f"glob {value!r} nests '[' inside a character class")
            depth = 1
        elif char == "]" and depth:
            depth = 0
    if depth:
        raise ValueError(f"glob {value!r} has an unclosed '['")
    for segment in value.replace("\\", "/").split("/"):
        if "**" in segment and segment != "**":
            raise ValueError(f"glob {value!r}: '**' must be a whole path segment (like 'a/**/b')")
    return value


def command(value: str) -> str:
    if not value.strip():
        raise ValueError("command must not be empty")
    return value


def http_path(value: str) -> str:
    if not value.startswith("/") or any(c.isspace() for c in value):
        raise ValueError("must be an absolute URL path such as '/healthz'")
    return value


def setting_name(value: str) -> str:
    problem = name_problem(value)
    if problem:
        raise ValueError(problem)
    return value


# -- the file's shape ----------------------------------------------------------------------------------------------
# TOML has real types (the models are strict: "60" is not an integer, 1 is not a boolean) and no null, so every rule
# below is a plain isinstance test plus the checks above.
# Plain classes, not dataclasses: `dataclasses` imports `inspect` (and ast, dis, tokenize), start-up this module is
# here to save.
class Rule:
    __slots__ = ()

    def accepts(self, value: Any) -> bool:
        raise NotImplementedError


class Text(Rule):
    __slots__ = ("check", "max_length", "pattern")

    def __init__(
        self, check: Callable[[str], str] | None = None, pattern: str | None = None, max_length: int | None = None
    ) -> None:
        self.check = check
        self.pattern = pattern  # a JSON-schema pattern, anchored with ^…$
        self.max_length = max_length

    def accepts(self, value: Any) -> bool:
        if type(value) is not str or (self.max_length is not None and len(value) > self.max_length):
            return False
        # The models' patterns are anchored and run on Rust's regex engine, where `$` is the end of the text: fullmatch.
        if self.pattern is not None and not re.fullmatch(self.pattern.removeprefix("^").removesuffix("$"), value):
            return False
        return _passes(self.check, value)


class Integer(Rule):
    __slots__ = ("maximum", "minimum")

    def __init__(self, minimum: int, maximum: int) -> None:
        self.minimum, self.maximum = minimum, maximum

    def accepts(self, value: Any) -> bool:
        return type(value) is int and self.minimum <= value <= self.maximum


class Boolean(Rule):
    __slots__ = ()

    def accepts(self, value: Any) -> bool:
        return type(value) is bool


class OneOf(Rule):
    __slots__ = ("choices",)

    def __init__(self, choices: tuple[str, ...]) -> None:
        self.choices = choices

    def accepts(self, value: Any) -> bool:
        return type(value) is str and value in self.choices


class ListOf(Rule):
    __slots__ = ("item",)

    def __init__(self, item: Rule) -> None:
        self.item = item

    def accepts(self, value: Any) -> bool:
        return type(value) is list and all(self.item.accepts(item) for item in value)


class Table(Rule):
    __slots__ = ("fields", "other_keys", "other_values", "required")

    def __init__(
        self,
        fields: dict[str, Rule],
        required: frozenset[str] = frozenset(),
        other_keys: Callable[[str], str] | None = None,
        other_values: Rule | None = None,
    ) -> None:
        self.fields = fields
        self.required = required
        self.other_keys = other_keys  # a table that allows more keys: the check their names pass
        self.other_values = other_values  # … and the rule of their values (None: unknown keys are refused)

    def accepts(self, value: Any) -> bool:
        if type(value) is not dict or not self.required <= value.keys():
            return False
        for key, item in value.items():
            rule = self.fields.get(key)
            if rule is None:
                if self.other_values is None or not _passes(self.other_keys, key):
                    return False
                rule = self.other_values
            if not rule.accepts(item):
                return False
        return True


class MapOf(Rule):
    """A table of user-chosen names (checked by `key`), each a `value` table."""

    __slots__ = ("key", "value")

    def __init__(self, key: Callable[[str], str], value: Table | None = None) -> None:
        self.key = key
        self.value = Table({}) if value is None else value

    def accepts(self, value: Any) -> bool:
        return type(value) is dict and all(_passes(self.key, k) and self.value.accepts(v) for k, v in value.items())


def _passes(check: Callable[[str], str] | None, value: str) -> bool:
    if check is None:
        return True
    try:
        check(value)
    except ValueError:
        return False
    return True


OPTIONAL_PATH = Text(relative_path)
TOML = Table(
    {
        "project": Table({"name": Text(slug), "workspace": Text(slug)}, frozenset({"name"})),
        "app": Table({"name": Text(slug)}, frozenset({"name"})),
        "build": Table(
            {
                "command": Text(command),
                "output": Text(relative_path),
                "include": ListOf(Text(glob)),
                "exclude": ListOf(Text(glob)),
                "timeout": Integer(1, BUILD_TIMEOUT_MAX),
            }
        ),
        "process": Table(
            {
                "start": Text(command),
                "health_path": Text(http_path),
                "readiness_timeout": Integer(1, READINESS_TIMEOUT_MAX),
                "readiness": OneOf(READINESS_PROBES),
                "drain_timeout": Integer(0, DRAIN_TIMEOUT_MAX),
            },
            frozenset({"start"}),
        ),
        "vango": Table({"state_manifest": OPTIONAL_PATH, "state_schema": OPTIONAL_PATH, "routes": OPTIONAL_PATH}),
        "database": Table({"migrations": OPTIONAL_PATH}),
        "environments": MapOf(
            slug, Table({"approval_required": Boolean(), "frozen": Boolean(), "residency": ListOf(Text(slug))})
        ),
        "runtime": Table(
            {
                "server_sessions": Boolean(),
                "unsafe_replay_routes": ListOf(Text(http_path)),
                "session_cookie": Text(pattern=SESSION_COOKIE_PATTERN),
                "services": ListOf(OneOf(RUNTIME_SERVICES)),
            }
        ),
        "providers": MapOf(
            slug,
            Table(
                {
                    "kind": OneOf(PROVIDER_KINDS),
                    "required": Boolean(),
                    "secrets": ListOf(Text(pattern=SECRET_NAME_PATTERN)),
                },
                frozenset({"kind"}),
            ),
        ),
        "env": Table(
            {"required": ListOf(Text(setting_name))},
            other_keys=setting_name,
            other_values=Text(pattern=SETTING_VALUE_PATTERN, max_length=MAX_VALUE_BYTES),
        ),
    },
    frozenset({"project", "app", "process"}),
)


def plainly_valid(data: dict[str, Any]) -> bool:
    """Whether the parsed rhone.toml `data` is certainly valid (False: let the models decide, and say why)."""
    return TOML.accepts(data)


def read_plainly_valid(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The parsed rhone.toml at `path` when it is certainly valid; None when it is not, or cannot be read (the models
    then say why)."""
    import tomllib

    try:
        with open(path, "rb") as f:
            data = tomllib.loads(f.read().removeprefix(b"\xef\xbb\xbf").decode("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError):
        return None
    return data if plainly_valid(data) else None

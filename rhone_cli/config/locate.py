"""Finding rhone.toml and reading the names a command targets, without the pydantic models.

Most commands need only `[project] name`, `[project] workspace` and `[app] name` from rhone.toml, to know which app
they act on. Reading those with `tomllib` keeps pydantic (the largest import of the CLI) out of them; the models in
`rhone_cli.config.project` are built only where the whole file is validated (`config validate`, `deploy`, `init`).
A file whose names cannot be read this way (not TOML, a name that is not a valid one) is handed to that full
validation by the caller, so its problems are reported exactly as `rhone config validate` reports them.

Standard library only (start-up budget: `tests/test_startup_imports.py`).
"""

from __future__ import annotations

import re
import tomllib
from collections import namedtuple
from pathlib import Path

FILENAME = "rhone.toml"
NAME_MAX_LENGTH = 40
_SLUG = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


def slug_problem(value: str) -> str | None:
    """Why `value` is not a valid project, workspace or app name, or None."""
    # Names end up in hostnames (`<app>--<env>.<suffix>`), so they are DNS labels without a double hyphen.
    if len(value) > NAME_MAX_LENGTH:
        return f"must be at most {NAME_MAX_LENGTH} characters"
    if not _SLUG.match(value):
        return (
            "must start with a lowercase letter and contain only lowercase letters, digits and single hyphens "
            "(it becomes part of URLs)"
        )
    return None


def find(start: Path) -> Path | None:
    """The nearest rhone.toml at or above `start` (like git finds its repository)."""
    start = start.resolve()
    for directory in (start, *start.parents):
        candidate = directory / FILENAME
        if candidate.is_file():
            return candidate
    return None


# What rhone.toml names: its workspace (str or None), project and app. (A namedtuple, neither a dataclass nor a
# typing.NamedTuple: this module is on start-up paths, and `dataclasses` imports `inspect`, `typing` costs ~2 ms.)
Names = namedtuple("Names", ["workspace", "project", "app"])


def read_names(path: Path) -> Names | None:
    """The names in the rhone.toml at `path`, or None when they cannot be read plainly (unreadable, not TOML, a
    name missing or not a valid name): the full validation then says why."""
    try:
        data = tomllib.loads(path.read_bytes().removeprefix(b"\xef\xbb\xbf").decode("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError):
        return None
    project, app = data.get("project"), data.get("app")
    if not isinstance(project, dict) or not isinstance(app, dict):
        return None
    names = (project.get("workspace"), project.get("name"), app.get("name"))
    if not all(_valid(name) for name in names[1:]) or not (names[0] is None or _valid(names[0])):
        return None
    return Names(*names)


def _valid(name: object) -> bool:
    return isinstance(name, str) and slug_problem(name) is None

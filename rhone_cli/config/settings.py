"""What an environment setting's name and value may be: the server's rules (rhone_local/domain/settings.py), checked
by the CLI before anything is sent. Standard library only (rhone.toml's model and `rhone env set` both use it)."""

from __future__ import annotations

import re

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
RESERVED = frozenset({"PORT", "PATH", "HOME"})
# The name rule as a JSON Schema pattern (documented in rhone.toml's schema and the API's; the checks above enforce it).
NAME_PATTERN = r"^(?!(PORT|PATH|HOME|required)$)(?![Rr][Hh][Oo][Nn][Ee]_)[A-Za-z_][A-Za-z0-9_]{0,127}$"
MAX_SETTINGS = 200
MAX_VALUE_BYTES = 32 * 1024


def name_problem(name: str) -> str | None:
    if not NAME.fullmatch(name):
        return "a setting's name is a letter or underscore, then letters, digits or underscores (at most 128)"
    if name in RESERVED or name.upper().startswith("RHONE_"):
        return "PORT, PATH, HOME and RHONE_* are set by the platform"
    if name == "required":
        return "'required' lists the required settings in rhone.toml's [env]; it cannot be a setting"
    return None


def value_problem(value: str) -> str | None:
    if "\x00" in value:
        return "a value cannot contain a NUL character"
    size = len(value.encode())
    if size > MAX_VALUE_BYTES:
        return f"a value is at most {MAX_VALUE_BYTES} bytes (got {size})"
    return None

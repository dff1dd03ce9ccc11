"""Environment settings: what a name and a value may be, and what a deploy needs before its build may start.

A setting is an environment variable an environment's allocations receive (`rhone env set`). Names are C identifiers
(`[A-Za-z_][A-Za-z0-9_]*`) that are not the platform's own (`PORT`, `PATH`, `HOME`, `RHONE_*`); values are text
without NUL, bounded so that every allocation can still start (Linux limits one variable to 128 KiB and the whole
environment to a few MiB). rhone.toml may hold defaults for non-secret settings in `[env]`, and the names every
environment must have in `[env] required`. The CLI applies the same rules before sending anything.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from rhone_local.domain.errors import DomainError, conflict

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
RESERVED = frozenset({"PORT", "PATH", "HOME"})
RESERVED_PREFIX = "RHONE_"
MAX_SETTINGS = 200  # per environment, after the change
MAX_VALUE_BYTES = 32 * 1024
MAX_TOTAL_BYTES = 256 * 1024  # all of an environment's names and values together
REQUIRED_KEY = "required"  # in rhone.toml's [env]: the names every environment must have; never a setting


def name_problem(name: str) -> str | None:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        return "a setting's name is a letter or underscore, then letters, digits or underscores (at most 128)"
    if name in RESERVED or name.upper().startswith(RESERVED_PREFIX):
        return "PORT, PATH, HOME and RHONE_* are set by the platform"
    if name == REQUIRED_KEY:
        return "'required' lists the required settings in rhone.toml's [env]; it cannot be a setting"
    return None


def value_problem(value: str) -> str | None:
    if not isinstance(value, str):
        return "a value is text"
    if "\x00" in value:
        return "a value cannot contain a NUL character"
    if len(value.encode()) > MAX_VALUE_BYTES:
        return f"a value is at most {MAX_VALUE_BYTES} bytes"
    return None


def _invalid(message: str, **details: Any) -> DomainError:
    return DomainError("invalid_setting", message, 422, details)


def check_change(current: Mapping[str, str], values: Mapping[str, str], unset: Iterable[str]) -> dict[str, str]:
    """The settings after setting `values` and removing `unset`, or `invalid_setting` naming the first problem
    (nothing is applied then)."""
    unset = list(unset)
    for name in [*values, *unset]:
        problem = name_problem(name)
        if problem:
            raise _invalid(f"{name!r}: {problem}", name=name)
    for name, value in values.items():
        problem = value_problem(value)
        if problem:
            raise _invalid(f"{name}: {problem}", name=name)
    both = sorted(set(values) & set(unset))
    if both:
        raise conflict("settings_contradict", f"{both[0]} is both set and unset in one change", name=both[0])
    after = {k: v for k, v in current.items() if k not in unset}
    after.update(values)
    # Limits of the environment as a whole depend on what it holds already: a conflict with its state, not a bad
    # request.
    if len(after) > MAX_SETTINGS:
        raise conflict(
            "settings_limit", f"an environment holds at most {MAX_SETTINGS} settings ({len(after)} after this change)"
        )
    total = sum(len(k.encode()) + len(v.encode()) for k, v in after.items())
    if total > MAX_TOTAL_BYTES:
        raise conflict(
            "settings_limit",
            f"an environment's settings total at most {MAX_TOTAL_BYTES} bytes ({total} after this change)",
        )
    return after


def defaults_of(config: Mapping[str, Any]) -> dict[str, str]:
    """rhone.toml's [env] defaults (the non-secret settings it declares)."""
    table = config.get("env") or {}
    return {k: v for k, v in table.items() if k != REQUIRED_KEY and isinstance(v, str)}


def required_of(config: Mapping[str, Any]) -> list[str]:
    return list((config.get("env") or {}).get(REQUIRED_KEY) or [])


def missing_settings(required: Iterable[str], present: Iterable[str]) -> list[str]:
    have = set(present)
    return sorted(name for name in set(required) if name not in have)


def unmet(config: Mapping[str, Any], present: Iterable[str]) -> list[str]:
    """The settings `config` requires that neither the environment (`present`) nor its own defaults provide."""
    return missing_settings(required_of(config), set(present) | set(defaults_of(config)))

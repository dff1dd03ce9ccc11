"""What may go into an API path: the formats of ids, names and digests, and the last check on a built path.

Anything that ends up in a path — an id or a name typed by a user, pasted from a log, or read from an API answer —
is checked against its format first, and `rhone_cli/api.py` (the only module that builds paths) percent-escapes every
segment. Without both, a "deployment id" such as `../workspaces/local/…/environments/production/unfreeze?` would be
a different request altogether: the HTTP client resolves `..` segments, and `?` or `#` would end the path.

Formats (the API's own): names are lowercase letters, digits and single hyphens, at most 40 characters, starting
with a letter; ids are a kind prefix, an underscore and up to 64 lowercase letters or digits (`op_1a21be1bc46…`).
Where the API accepts either (workspaces, projects, apps, environments, regions), so does this module.

Standard library only: commands import it at start-up.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from rhone_cli.errors import ExitCode, RhoneError

# What a built path may contain: unreserved characters, percent escapes and `/` (RFC 3986), nothing that ends the path.
_PATH = re.compile(r"(?:/(?:[A-Za-z0-9._~-]|%[0-9A-Fa-f]{2})+)+")
NAME = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
NAME_MAX = 40
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
ID_BODY = r"[0-9a-z]{1,64}"

# kind -> (id prefix, words for messages, the command that lists them)
KINDS: dict[str, tuple[str, str, str]] = {
    "workspace": ("ws", "workspace", "rhone workspace ls"),
    "project": ("prj", "project", "rhone project ls"),
    "app": ("app", "app", "rhone app ls"),
    "environment": ("env", "environment", "rhone env ls"),
    "deployment": ("dep", "deployment", "rhone deploy ls"),
    "operation": ("op", "operation", "rhone op ls"),
    "region": ("reg", "region", "rhone region ls"),
    "binding": ("pb", "provider binding", "rhone env bindings ENV"),
}
_IDS = {kind: re.compile(rf"{prefix}_{ID_BODY}") for kind, (prefix, _, _) in KINDS.items()}


def _refused(kind: str, value: str, expected: str) -> RhoneError:
    _, words, lister = KINDS[kind]
    return RhoneError(
        f"{value!r} is not a valid {words} {expected}",
        code="invalid_id",
        exit_code=ExitCode.USAGE,
        hint=f"copy it from `{lister}`",
        details={"kind": kind, "value": value},
    )


def is_name(value: str) -> bool:
    return len(value) <= NAME_MAX and NAME.fullmatch(value) is not None


def is_id(kind: str, value: str) -> bool:
    return _IDS[kind].fullmatch(value) is not None


def checked_id(kind: str, value: str) -> str:
    """`value` when it is an id of `kind` (`dep_…`), else a usage error (exit 2) naming the expected format."""
    if _IDS[kind].fullmatch(value):
        return value
    prefix = KINDS[kind][0]
    raise _refused(
        kind, value, f"id: expected {prefix}_ followed by lowercase letters and digits (like {prefix}_1a2b3c)"
    )


def checked_name(kind: str, value: str) -> str:
    if is_name(value):
        return value
    raise _refused(
        kind,
        value,
        f"name: expected lowercase letters, digits and single hyphens, starting with a letter, at most {NAME_MAX} "
        "characters",
    )


def checked_ref(kind: str, value: str) -> str:
    """A name or an id of `kind`: the API accepts either in the path."""
    if is_name(value) or _IDS[kind].fullmatch(value):
        return value
    prefix = KINDS[kind][0]
    raise _refused(
        kind,
        value,
        f"name or id: expected a name (lowercase letters, digits and single hyphens, starting with a letter) or an "
        f"id ({prefix}_…)",
    )


def checked_digest(value: str) -> str:
    if DIGEST.fullmatch(value):
        return value
    raise RhoneError(
        f"{value!r} is not a digest: expected sha256: followed by 64 lowercase hex digits",
        code="invalid_digest",
        exit_code=ExitCode.USAGE,
    )


def check_request_path(path: str) -> str:
    """The last check before a request leaves: an absolute path of escaped segments, none of them (even once
    unescaped) `.` or `..`, no query or fragment. A path that fails it was not built by this module."""
    if not _PATH.fullmatch(path) or any(unquote(s) in (".", "..") for s in path.split("/")[1:]):
        raise RhoneError(
            f"refusing to send a request to {path!r}: not a clean API path",
            code="invalid_path",
            exit_code=ExitCode.USAGE,
            hint="an API path is absolute, with escaped segments and no '.' or '..' segment",
        )
    return path

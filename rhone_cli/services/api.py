"""`rhone api`: one authenticated request to any API path, for what no command covers yet.

The request goes through the same client as every command (token, proxy, certificates, retries, an Idempotency-Key
on POST), and the path through the same checks (`rhone_cli.api.raw_path`: no `.`/`..` segments, the API's version
prefix only), so `rhone api` cannot be pointed at another host or outside the API.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rhone_cli.api import Api, raw_path
from rhone_cli.errors import usage_error
from rhone_cli.invocation import Invocation

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
MAX_PAGES = 1000


def split_target(method_or_path: str, path: str | None, *, has_body: bool) -> tuple[str, str]:
    """(METHOD, PATH) from `rhone api [METHOD] PATH`: like gh, GET unless fields or a body are given (then POST)."""
    if path is None:
        method, path = ("POST" if has_body else "GET"), method_or_path
    else:
        method = method_or_path.upper()
    if method not in METHODS:
        raise usage_error(f"{method_or_path!r} is not an HTTP method rhone api sends: {', '.join(METHODS)}")
    return method, path


def fields(raw: list[str], typed: list[str], inv: Invocation) -> dict[str, Any]:
    """-f key=value (strings) and -F key=value (true/false/null/numbers as JSON, @FILE or @- for a file's text)."""
    found: dict[str, Any] = {}
    for spec, is_typed in [(s, False) for s in raw] + [(s, True) for s in typed]:
        key, sep, value = spec.partition("=")
        if not sep or not key:
            raise usage_error(f"{'-F' if is_typed else '-f'} {spec!r}: expected key=value")
        if key in found:
            raise usage_error(f"the field {key!r} is given twice")
        found[key] = _typed(value, inv) if is_typed else value
    return found


def _typed(value: str, inv: Invocation) -> Any:
    if value.startswith("@"):
        return _read(value[1:], inv)
    if value in ("true", "false", "null"):
        return json.loads(value)
    try:
        return int(value)
    except ValueError:
        pass
    try:
        number = float(value)
    except ValueError:
        return value
    return number if number == number and number not in (float("inf"), float("-inf")) else value


def _read(source: str, inv: Invocation) -> str:
    if source == "-":
        return inv.env.stdin.read()
    try:
        return Path(source).expanduser().read_text()
    except OSError as error:
        raise usage_error(f"cannot read {source}: {error.strerror or error}") from None


def body_from(input_file: str | None, inv: Invocation) -> Any:
    if input_file is None:
        return None
    text = _read(input_file, inv)
    try:
        return json.loads(text)
    except ValueError as error:
        raise usage_error(f"--input {input_file}: not JSON ({error})") from None


def request(inv: Invocation, method: str, typed_path: str, values: dict[str, Any], body: Any, *, paginate: bool) -> Any:
    path, query = raw_path(typed_path)
    api = inv.api()
    if method == "GET":
        if body is not None:
            raise usage_error("a GET request has no body: drop --input, or name another method")
        params = {**query, **{k: v if isinstance(v, str) else json.dumps(v) for k, v in values.items()}}
        if paginate:
            return _all_pages(api, path, params)
        return api.raw("GET", path, params=params)
    if paginate:
        raise usage_error("--paginate follows next_cursor of GET lists only")
    payload = body if body is not None else (values or None)
    return api.raw(method, path, params=query, body=payload)


def _all_pages(api: Api, path: str, params: dict[str, Any]) -> Any:
    """Every page of a list, merged: `{"items": [...all...], "next_cursor": null}`."""
    items: list[Any] = []
    cursor = params.get("cursor")
    for _ in range(MAX_PAGES):
        page = api.raw("GET", path, params={**params, **({"cursor": cursor} if cursor else {})})
        if not isinstance(page, dict) or not isinstance(page.get("items"), list):
            raise usage_error(f"--paginate: {path} does not answer with a list (items and next_cursor)")
        items.extend(page["items"])
        cursor = page.get("next_cursor")
        if not cursor:
            return {**page, "items": items, "next_cursor": None}
    raise usage_error(f"--paginate stopped after {MAX_PAGES} pages of {path}")

"""`rhone logs`: app output of every allocation, read page by page and followed by long-polling the server."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

from rhone_cli.api import Target
from rhone_cli.errors import usage_error
from rhone_cli.invocation import Invocation

DURATION = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d)?$")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
MAX_SINCE_SECONDS = 30 * 86400
FOLLOW_WAIT_SECONDS = 25


def parse_duration(text: str) -> float:
    """`90`, `30s`, `5m`, `2h`, `1d` → seconds (more than 0, at most 30 days)."""
    match = DURATION.match(text.strip())
    seconds = float(match.group(1)) * UNITS[match.group(2)] if match else 0.0
    if not match or not 0 < seconds <= MAX_SINCE_SECONDS:
        raise usage_error(
            f"--since {text!r} is not a duration from 1s to 30d; use a number with s, m, h or d (e.g. 10m, 2h)"
        )
    return seconds


def pages(
    inv: Invocation,
    target: Target,
    *,
    deployment: str | None,
    environment: str | None,
    since: float | None,
    follow: bool,
) -> Iterator[dict[str, Any]]:
    """Each answer of the logs endpoint in turn: until what exists is read, or — following — until interrupted."""
    params: dict[str, Any] = {}
    if deployment:
        params["deployment"] = deployment
    if environment:
        params["environment"] = environment
    if since:
        params["since"] = since
    # A long-poll holds the request on the server; the request timeout must outlast it.
    timeout = max(inv.env.options.request_timeout, FOLLOW_WAIT_SECONDS + 10)
    while True:
        page = inv.api().app_logs(target, params, timeout=timeout)
        yield page
        params["cursor"] = page["cursor"]
        if page["truncated"]:
            continue
        if not follow:
            return
        params["wait"] = FOLLOW_WAIT_SECONDS


def render(out_line: Callable[[str], None]) -> Callable[[dict[str, Any]], None]:
    def show(page: dict[str, Any]) -> None:
        for line in page["lines"]:
            out_line(f"{line['allocation_id']} | {line['text']}")

    return show

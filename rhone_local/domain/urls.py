"""The host and URL scheme of the edge, in one place: what the control plane hands out and what the edge parses.

- a route is served at `<app>--<environment>.<suffix>` (the route key is `<app>--<environment>`; app names are
  unique in a workspace and carry no `--`, so the key names one app's environment);
- a deployment's own lane (its preview) at `dep-<id>.<suffix>` (the id's `_` becomes `-`: hostnames carry none);
- the edge's port follows the host unless it is the default (80).

Pure code (no I/O): the API, the stages and the edge all import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ROUTE_SEPARATOR = "--"
LANE_PREFIX, DEPLOYMENT_PREFIX = "dep-", "dep_"


def route_key(app_name: str, environment_name: str) -> str:
    return f"{app_name}{ROUTE_SEPARATOR}{environment_name}"


def route_key_taken(holder: dict[str, Any], key: str, workspace_id: str) -> str:
    """Why `key` cannot be this app's: who holds it (another workspace's app is not named)."""
    who = (
        f"{holder['project']}/{holder['name']}" if holder["workspace_id"] == workspace_id else "another workspace's app"
    )
    return f"{who} already serves {key}; app names must be unique to share the edge, so this route did not move"


def host_label(label: str) -> tuple[str, str, str] | None:
    """What the first label of a host under the edge's suffix names: ("route", route key, environment name) or
    ("lane", deployment id, ""); None if nothing."""
    if "." in label:
        return None
    if ROUTE_SEPARATOR in label:
        return ("route", label, label.partition(ROUTE_SEPARATOR)[2])
    if label.startswith(LANE_PREFIX):
        return ("lane", DEPLOYMENT_PREFIX + label[len(LANE_PREFIX) :], "")
    return None


@dataclass(frozen=True)
class EdgeUrls:
    """The public URLs of one edge: its host suffix and port (None: no edge runs, the URLs say where it would)."""

    suffix: str = "localhost"
    port: int | None = None

    def _port(self) -> str:
        return f":{self.port}" if self.port and self.port != 80 else ""

    def deployment(self, deployment_id: str) -> str:
        """A deployment's own URL (its preview lane)."""
        return f"http://{deployment_id.replace('_', '-')}.{self.suffix}{self._port()}"

    def route(self, key: str) -> str:
        """The URL a route key is served at."""
        return f"http://{key}.{self.suffix}{self._port()}"

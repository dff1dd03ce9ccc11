"""How long a stage may hold a worker: the bounds of rhone.toml (rhone_cli/config/project.py), applied once more.

The API refuses a deployment whose configuration breaks them; these helpers also bound a configuration stored
before it did, so no value (a string, infinity, 1e308) can make a stage wait without a deadline.
"""

from __future__ import annotations

import math
from typing import Any

from rhone_cli.config.project import (
    BUILD_TIMEOUT_DEFAULT,
    BUILD_TIMEOUT_MAX,
    READINESS_TIMEOUT_DEFAULT,
    READINESS_TIMEOUT_MAX,
)


def build_timeout(config: dict[str, Any]) -> float:
    return _seconds((config.get("build") or {}).get("timeout"), BUILD_TIMEOUT_DEFAULT, BUILD_TIMEOUT_MAX)


def readiness_timeout(process: dict[str, Any]) -> float:
    return _seconds(process.get("readiness_timeout"), READINESS_TIMEOUT_DEFAULT, READINESS_TIMEOUT_MAX)


def _seconds(value: Any, default: float, maximum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        return float(default)
    return float(min(value, maximum))

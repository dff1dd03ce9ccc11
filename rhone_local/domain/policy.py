"""Environment policy drift: what rhone.toml declares for an app's environments against what the server enforces.

The server's policy is the one that applies (it changes only by an audited `environment.policy` mutation, or
freeze/unfreeze); rhone.toml is what the team reviewed. A difference is reported, with the command that aligns the
server, and never applied silently in either direction. `frozen` is operational (an incident freezes production
whatever rhone.toml says) and is not compared.
"""

from __future__ import annotations

from typing import Any


def policy_drift(declared: dict[str, Any], environments: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """`declared`: rhone.toml's resolved `[environments]`; `environments`: the app's environments by name."""
    drift = []
    for name in sorted(declared):
        policy = declared[name] if isinstance(declared[name], dict) else {}
        wanted = bool(policy.get("approval_required", False))
        environment = environments.get(name)
        if environment is None:
            fix = f"rhone env create {name}" + (" --approval-required" if wanted else "")
            actual = None
        elif bool(environment["approval_required"]) != wanted:
            fix = f"rhone env policy {name} --{'' if wanted else 'no-'}approval-required"
            actual = bool(environment["approval_required"])
        else:
            continue
        drift.append(
            {"environment": name, "setting": "approval_required", "declared": wanted, "server": actual, "fix": fix}
        )
    return drift

"""Allocation states (docs/state-machines.md, "Allocations"): which count as live, starting, or token-bearing."""

from __future__ import annotations

STATES = ("planned", "pulling", "starting", "ready", "draining", "stopped", "failed")
# Has (or is about to have) a process: counted against an environment's instances, drained before it is gone.
LIVE_STATES = ("planned", "pulling", "starting", "ready", "draining")
STARTING_STATES = ("planned", "pulling", "starting")
ENDED_STATES = ("stopped", "failed")
# An allocation's runtime token works while the allocation starts and serves; from `draining` on (and in any state a
# later version adds) it is refused.
TOKEN_LIVE_STATES = ("planned", "pulling", "starting", "ready")

"""A node's liveness, in seconds on the store's clock (docs/multi-node.md, "Nodes"): how often it beats, and when it
counts as lapsed. Here, free of I/O, so that the operations layer decides with the same numbers as the nodes."""

from __future__ import annotations

HEARTBEAT_SECONDS = 2.0  # how often a node renews its heartbeat
LAPSE_SECONDS = 10.0  # a node not heard from for this long is lapsed: nothing is placed on it, its allocations move

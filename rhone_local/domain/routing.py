"""The edge's view of route ownership: a verified snapshot, then contiguous events applied by sequence and epoch.

Pure code (the edge feeds it; no I/O here). The rules (docs/architecture.md, "The edge"):
- nothing routes before a baseline snapshot is loaded, and a snapshot is loaded only if its checksum verifies;
- an event is applied only if its sequence number is exactly the next one; an older or equal sequence is a
  duplicate and has no second effect;
- a sequence number beyond the next one is a gap: the table fails closed (no owner for any key) until a fresh
  snapshot is loaded — it never applies over a gap and never clears one without a new baseline;
- within the sequence, an event whose epoch is not newer than the key's current epoch is stale: it advances the
  sequence but never the owner.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from rhone_local.domain.canonical import canonical_sha256

FEED_WAIT_SECONDS = 3.0  # the longest an edge's long-poll waits with nothing new: an idle feed answers this often


@dataclass(frozen=True)
class Owner:
    deployment_id: str
    artifact_digest: str
    epoch: int


@dataclass(frozen=True)
class RouteEvent:
    seq: int
    route_key: str
    epoch: int
    deployment_id: str
    artifact_digest: str


class SnapshotRejected(ValueError):
    """The snapshot's checksum does not match its content."""


def checksum(seq: int, owners: dict[str, Owner]) -> str:
    document = {"seq": seq, "owners": {key: asdict(owner) for key, owner in sorted(owners.items())}}
    return "sha256:" + canonical_sha256(document)


@dataclass
class RouteTable:
    seq: int | None = None  # the sequence number the table reflects; None before any snapshot
    owners: dict[str, Owner] = field(default_factory=dict)
    gap: bool = False
    counts: dict[str, int] = field(default_factory=lambda: {"applied": 0, "duplicate": 0, "stale": 0, "gap": 0})

    def load_snapshot(self, seq: int, owners: dict[str, Owner], expected_checksum: str) -> None:
        if checksum(seq, owners) != expected_checksum:
            raise SnapshotRejected(f"snapshot at seq {seq} does not match its checksum")
        self.seq, self.owners, self.gap = seq, dict(owners), False

    def apply(self, event: RouteEvent) -> str:
        """Apply one event; returns what happened: applied, duplicate, stale or gap."""
        outcome = self._apply(event)
        self.counts[outcome] += 1
        return outcome

    def _apply(self, event: RouteEvent) -> str:
        if self.seq is None or self.gap:
            self.gap = True
            return "gap"
        if event.seq <= self.seq:
            return "duplicate"
        if event.seq != self.seq + 1:
            self.gap = True
            return "gap"
        self.seq = event.seq
        current = self.owners.get(event.route_key)
        if current is not None and event.epoch <= current.epoch:
            return "stale"
        self.owners[event.route_key] = Owner(event.deployment_id, event.artifact_digest, event.epoch)
        return "applied"

    @property
    def serving(self) -> bool:
        return self.seq is not None and not self.gap

    def owner(self, route_key: str) -> Owner | None:
        """The owner to route to, or None: unknown key, no baseline yet, or a gap (fail closed)."""
        if not self.serving:
            return None
        return self.owners.get(route_key)

    def applied_epoch(self, route_key: str) -> int:
        owner = self.owner(route_key)
        return owner.epoch if owner else 0

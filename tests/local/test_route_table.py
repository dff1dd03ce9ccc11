"""The edge's route table fed duplicate, reordered, stale and gapped events: it routes only to committed owners."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rhone_local.domain.routing import Owner, RouteEvent, RouteTable, SnapshotRejected, checksum

KEY = "web--production"


def committed_history(count: int, keys: tuple[str, ...] = (KEY,)) -> list[RouteEvent]:
    """What the store commits: sequence 1..count, each key's epoch strictly increasing."""
    epochs = dict.fromkeys(keys, 0)
    history = []
    for seq in range(1, count + 1):
        key = keys[(seq - 1) % len(keys)]
        epochs[key] += 1
        history.append(RouteEvent(seq, key, epochs[key], f"dep_{key}_{epochs[key]}", f"sha256:{seq:064x}"))
    return history


def owners_at(history: list[RouteEvent], seq: int) -> dict[str, Owner]:
    owners: dict[str, Owner] = {}
    for event in history[:seq]:
        owners[event.route_key] = Owner(event.deployment_id, event.artifact_digest, event.epoch)
    return owners


def baseline(history: list[RouteEvent], seq: int) -> RouteTable:
    table = RouteTable()
    owners = owners_at(history, seq)
    table.load_snapshot(seq, owners, checksum(seq, owners))
    return table


def test_nothing_routes_before_a_snapshot() -> None:
    table = RouteTable()
    assert table.owner(KEY) is None
    assert table.apply(committed_history(1)[0]) == "gap"
    assert table.owner(KEY) is None


def test_a_snapshot_with_a_wrong_checksum_is_rejected_and_changes_nothing() -> None:
    history = committed_history(3)
    table = baseline(history, 1)
    with pytest.raises(SnapshotRejected):
        table.load_snapshot(3, owners_at(history, 3), checksum(2, owners_at(history, 2)))
    assert table.seq == 1 and table.owner(KEY) == owners_at(history, 1)[KEY]


def test_contiguous_events_apply_in_order() -> None:
    history = committed_history(5)
    table = baseline(history, 0)
    assert [table.apply(e) for e in history] == ["applied"] * 5
    assert table.owner(KEY) == owners_at(history, 5)[KEY]


def test_duplicates_have_no_second_effect() -> None:
    history = committed_history(3)
    table = baseline(history, 0)
    table.apply(history[0])
    table.apply(history[1])
    assert table.apply(history[0]) == "duplicate"
    assert table.apply(history[1]) == "duplicate"
    assert (table.seq, table.owner(KEY)) == (2, owners_at(history, 2)[KEY])


def test_a_gap_fails_closed_until_a_fresh_snapshot() -> None:
    history = committed_history(4, keys=(KEY, "api--production"))
    table = baseline(history, 1)
    assert table.apply(history[2]) == "gap"  # seq 3 arrives before seq 2
    assert table.owner(KEY) is None and table.owner("api--production") is None  # fail closed, never stale
    assert table.apply(history[1]) == "gap"  # nothing clears a gap but a new baseline
    assert table.owner(KEY) is None
    fresh = owners_at(history, 4)
    table.load_snapshot(4, fresh, checksum(4, fresh))
    assert table.owner(KEY) == fresh[KEY] and table.owner("api--production") == fresh["api--production"]


def test_a_stale_epoch_advances_the_sequence_but_never_the_owner() -> None:
    history = committed_history(2)
    table = baseline(history, 2)
    late = RouteEvent(3, KEY, 1, "dep_late", "sha256:" + "0" * 64)  # a late report of an older epoch
    assert table.apply(late) == "stale"
    assert table.seq == 3 and table.owner(KEY) == owners_at(history, 2)[KEY]


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    count=st.integers(min_value=1, max_value=25),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    keys=st.sampled_from([(KEY,), (KEY, "api--production"), (KEY, "api--production", "web--staging")]),
)
def test_under_any_delivery_the_table_routes_only_to_the_committed_owner(count: int, seed: int, keys: tuple) -> None:
    history = committed_history(count, keys)
    rng = random.Random(seed)
    # Deliver with duplicates, reordering and drops; reload a snapshot whenever the table reports a gap.
    deliveries = [e for e in history for _ in range(rng.choice([0, 1, 1, 2]))]
    rng.shuffle(deliveries)
    start = rng.randint(0, count)
    table = baseline(history, start)
    for event in deliveries:
        outcome = table.apply(event)
        if table.serving:
            assert table.owners == owners_at(history, table.seq), "serving something other than the committed state"
        else:
            assert all(table.owner(k) is None for k in keys), "routed during a gap"
        if outcome == "gap" and rng.random() < 0.5:
            latest = max(e.seq for e in deliveries if e.seq <= event.seq)
            fresh = owners_at(history, latest)
            table.load_snapshot(latest, fresh, checksum(latest, fresh))
    final = owners_at(history, count)
    table.load_snapshot(count, final, checksum(count, final))
    assert all(table.owner(k) == final.get(k) for k in keys)

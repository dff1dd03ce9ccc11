"""Store benchmark: operation throughput on PostgreSQL vs SQLite, in one run (docs/multi-node.md).

    .venv/bin/python bench/store.py [--operations 300] [--workers 2]

For each backend (SQLite in a temporary directory; PostgreSQL in a throw-away cluster started by tests/engines.py,
listening on a unix socket only), it creates `--operations` operations through the store (one write transaction
each, as the API does), then `--workers` threads claim them and record three stages each (each stage one write
transaction with the stage record, as the workers do). It prints operations per second of each backend and the
ratio PostgreSQL / SQLite (the target is at least 0.7). The machine may be shared: the figure is rough.

This is the store alone, the worst case for PostgreSQL: every operation is five write transactions, each a network
round trip or three and, with PostgreSQL's default `synchronous_commit = on`, an fsync at commit (SQLite's WAL with
`synchronous=NORMAL` syncs at checkpoints only). A deploy spends seconds in its build and probes, so the store's
share of a deploy's time is small either way.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rhone_local.domain.operations import MACHINES, TERMINAL_STATES  # noqa: E402
from rhone_local.server import bootstrap  # noqa: E402
from rhone_local.store import Store  # noqa: E402
from tests.cluster.test_store_conformance import create_operations  # noqa: E402

STAGES = MACHINES["project.create"].happy_path[1:]  # validating, applying, succeeded: three stage records


def run(store: Store, data_dir: Path, operations: int, workers: int) -> float:
    """Operations per second: create, claim and record every stage of `operations` operations."""
    bootstrap(store, data_dir)
    started = time.perf_counter()
    for _ in range(operations):  # one write transaction each, as the API creates them
        create_operations(store, 1)

    def work(name: str) -> None:
        while (op := store.claim_operation(name, 30.0, TERMINAL_STATES)) is not None:
            for state in STAGES:
                with store.write() as c:
                    op = store.advance_operation(op, state, worker=name, tx=c)
                assert op is not None
            store.release_operation(op["id"], name)
        store.close()

    threads = [threading.Thread(target=work, args=(f"bench-{i}",)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(600)
    elapsed = time.perf_counter() - started
    assert store.one("SELECT COUNT(*) AS n FROM operations WHERE version = 4")["n"] == operations  # type: ignore[index]
    return operations / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--operations", type=int, default=300)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    import psycopg

    from rhone_local.store.postgres import PostgresStore
    from tests.engines import postgres_cluster

    with tempfile.TemporaryDirectory(prefix="rhone-bench-store-") as directory:
        root = Path(directory)
        (root / "sqlite").mkdir()
        (root / "pg").mkdir()
        sqlite_rate = run(Store(root / "sqlite" / "rhone.db"), root / "sqlite", args.operations, args.workers)
        with postgres_cluster() as cluster:
            with psycopg.connect(cluster.url, autocommit=True) as admin:
                admin.execute("CREATE DATABASE bench")
            store = PostgresStore(cluster.url.replace("/postgres?", "/bench?"), root / "pg")
            try:
                pg_rate = run(store, root / "pg", args.operations, args.workers)
            finally:
                store.shutdown()
    print(f"sqlite      {sqlite_rate:8.1f} operations/s ({args.operations} operations, {args.workers} workers)")
    print(f"postgresql  {pg_rate:8.1f} operations/s")
    print(f"ratio       {pg_rate / sqlite_rate:8.2f} (PostgreSQL / SQLite; target >= 0.7)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

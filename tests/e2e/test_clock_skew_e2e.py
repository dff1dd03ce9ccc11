"""One node of a real cluster under a skewed wall clock (docs/multi-node.md, "Failure behaviour"): two servers
sharing one PostgreSQL store (tests/e2e/cluster.py), node b's wall clock 30 s ahead of or behind node a's
(tests/support/clock_skew.c, preloaded into node b's processes; its header says why not libfaketime).

Leases and heartbeats are times on the database's clock, so the skew must change nothing: no worker takes over a
lease that has not expired on that clock, every operation finishes once, neither node's heartbeat looks lapsed or
fresh by the skew. The control that keeps the test from passing vacuously is measured in the same run: node b's
wall clock is really skewed (a time node b wrote with its own clock), both nodes' workers hold leases, and at some
sample a lease was held by the node whose clock is behind — the lease the other node, comparing `lease_until` with
its own wall clock, would have judged expired and taken."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import pytest

from rhone_local.nodes import LAPSE_SECONDS
from tests.e2e.cluster import Cluster, running_cluster
from tests.e2e.helpers import wait_until
from tests.engines import require

SHIM = Path(__file__).parents[1] / "support" / "clock_skew.c"
DEPLOYS = 5  # more than one node's two build workers, all at once: both nodes are meant to hold leases (checked)
LEASES = (
    "SELECT id, lease_owner, lease_until, version, state, rhone_now() FROM operations WHERE kind = 'deploy' ORDER BY id"
)
HEARTBEAT_AGES = "SELECT name, rhone_now() - heartbeat_at, left_at FROM nodes ORDER BY name"
LOST_LEASE = ("lost its lease on", "stale write on")  # what a worker logs when another took its lease


def _compiled_shim(directory: Path) -> Path:
    require(shutil.which("gcc") is not None, "gcc (compiles tests/support/clock_skew.c): apt-get install gcc")
    library = directory / "clock_skew.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-o", str(library), str(SHIM), "-ldl"], check=True, timeout=60)
    return library


class Sampler:
    """Reads every deploy's lease and both nodes' heartbeat ages on the database's clock, in a loop, until stopped."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.leases: list[list[tuple]] = []
        self.heartbeats: list[list[tuple]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.cluster.db() as db:
            while not self.stop.wait(0.05):
                self.leases.append(db.execute(LEASES).fetchall())
                self.heartbeats.append(db.execute(HEARTBEAT_AGES).fetchall())

    def __enter__(self) -> Sampler:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


def takeovers(samples: list[list[tuple]]) -> list[tuple]:
    """Each change of an operation's lease from one worker to another, at the same version (no stage recorded, so
    the holder had not finished and released it), before the old lease's end on the database's clock."""
    found = []
    for before, after in itertools.pairwise(samples):
        previous = {row[0]: row for row in before}
        for op_id, owner, _, version, _, now in after:
            old = previous.get(op_id)
            if old is None or old[1] is None or owner is None or owner == old[1]:
                continue
            if version == old[3] and now < old[2]:
                found.append((op_id, old[1], owner, old[2], now))
    return found


def lease_node(owner: str | None) -> str | None:
    return owner.split("/")[0] if owner else None


def _started_at(cluster: Cluster, node: str) -> float:
    """The start time node `node` wrote with its own wall clock, in seconds since the epoch."""
    started = dict(cluster.rows("SELECT name, started_at FROM nodes"))
    return datetime.fromisoformat(started[node]).timestamp()


def _skewed_now(environ: dict[str, str]) -> tuple[float, float, float]:
    """(before, what a Python under `environ` reads as the time, after): before and after on this test's clock."""
    before = time.time()
    answer = subprocess.run(
        [sys.executable, "-c", "import time; print(time.time())"],
        env={**os.environ, **environ}, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return before, float(answer.stdout), time.time()


@pytest.mark.parametrize("skew", [30, -30], ids=["ahead", "behind"])
def test_a_node_with_a_skewed_wall_clock_takes_over_no_lease_and_lapses_by_the_database_clock(
    s3_server, tmp_path, skew
):
    shim = _compiled_shim(tmp_path)
    skewed = {"LD_PRELOAD": str(shim), "RHONE_TEST_CLOCK_SKEW": str(skew)}
    # The skew is real: a Python under the shim reads a clock `skew` off this test's...
    before, read, after = _skewed_now(skewed)
    assert before + skew - 1 <= read <= after + skew + 1, (before, read, after)
    opened = time.time()
    with running_cluster(s3_server, environ={"b": skewed}) as cluster:
        # ...and so does node b's server: it has the shim loaded, and wrote its start time, which this test's clock puts
        # between `opened` and now, `skew` off (unskewed, it would be in that window, which is shorter than the skew
        # unless the cluster took most of half a minute to start).
        up = time.time()
        maps = Path(f"/proc/{cluster.nodes['b'].pid()}/maps").read_text()
        assert str(shim) in maps
        assert opened + skew - 1 <= _started_at(cluster, "b") <= up + skew + 1, (opened, up)

        app_dirs = [
            cluster.app(f"skew{index}", build="sleep 8 && python3 -m py_compile app.py") for index in range(DEPLOYS)
        ]
        with Sampler(cluster) as sampler:
            # All at once, so that node a's workers are still busy when the last ones are queued.
            with ThreadPoolExecutor(max_workers=DEPLOYS) as pool:
                deploy = lambda d: cluster.nodes["a"].json("deploy", "--no-wait", cwd=d, timeout=120)["id"]  # noqa: E731
                started = list(pool.map(deploy, app_dirs))
            for op_id in started:
                finished = cluster.nodes["b"].rhone("op", "wait", op_id, "--json", timeout=300)
                assert finished.exit_code == 0, (finished.stdout, finished.stderr)
            assert wait_until(lambda: len(sampler.leases) > 0)

        assert (
            sorted(cluster.rows("SELECT state FROM operations WHERE kind = 'deploy'")) == [("preview_ready",)] * DEPLOYS
        )
        assert cluster.rows("SELECT count(*) FROM deployments") == [(DEPLOYS,)]
        for op_id in started:
            stages = [stage["state"] for stage in cluster.nodes["a"].json("op", "show", op_id)["stages"]]
            assert len(stages) == len(set(stages)), stages  # each stage recorded once
        assert takeovers(sampler.leases) == []
        for server in cluster.nodes.values():
            log = (server.data_dir / "rhone-local.log").read_text(errors="replace")
            assert not [line for line in log.splitlines() if any(sign in line for sign in LOST_LEASE)]

        # The run could have failed: both nodes' workers held leases, and at some sample a lease held by the node
        # whose wall clock is behind had less than |skew| left — expired on the other node's wall clock.
        held = [
            (lease_node(owner), until - now)
            for sample in sampler.leases
            for _, owner, until, *_, now in sample
            if owner is not None
        ]
        assert {node for node, _ in held} == {"a", "b"}
        behind = "a" if skew > 0 else "b"
        assert [left for node, left in held if node == behind and left < abs(skew)]

        # Heartbeats on the database's clock: neither node ever looked lapsed (a clock behind) nor beat in the future
        # (a clock ahead, which would keep a dead node alive for the skew).
        ages = [(name, age) for sample in sampler.heartbeats for name, age, left in sample if left is None]
        assert {name for name, _ in ages} == {"a", "b"}
        assert [(name, age) for name, age in ages if not 0 <= age < LAPSE_SECONDS] == []

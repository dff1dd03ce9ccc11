"""The cluster under concurrent load from both nodes (docs/multi-node.md, "Failure behaviour"): two real servers
(`rhone local up --store … --events … --blobs … --node a|b`, every role on each: tests/e2e/cluster.py) sharing one
PostgreSQL store, one JetStream stream and one bucket, driven through the real CLI and raw HTTP.

These tests share one cluster per module and worker (starting one costs more than the tests; under xdist a worker
that gets some of them starts its own); none of them kills anything. The tests that kill nodes or engines start clusters of their own (test_cluster_crashes.py)."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.e2e.cluster import Cluster, running_cluster

OPERATION_COLUMNS = "SELECT id, kind, state, version FROM operations ORDER BY id"


@pytest.fixture(scope="module")
def cluster(s3_server) -> Cluster:
    with running_cluster(s3_server) as running:
        yield running


@pytest.fixture(scope="module")
def served(cluster: Cluster) -> dict:
    """App `served` deployed and promoted through node a: ids and the workspace's path."""
    app_dir = cluster.app("served")
    deployed = cluster.nodes["a"].json("deploy", "--promote", cwd=app_dir, timeout=240)
    assert deployed["promotion"]["state"] == "healthy", deployed
    with cluster.http("a") as api:
        workspace = api.get("/v1/workspaces").json()["items"][0]["id"]
    return {
        "dir": app_dir,
        "deployment": deployed["deployment"]["id"],
        "path": f"/v1/workspaces/{workspace}/projects/served/apps/served",
    }


def test_one_idempotency_key_over_both_api_nodes_makes_one_operation(cluster: Cluster, served):
    key = f"cluster-{uuid.uuid4()}"
    before = cluster.rows(OPERATION_COLUMNS)
    path = served["path"] + "/environments"
    clients = {"a": cluster.http("a"), "b": cluster.http("b")}
    start = threading.Barrier(20)

    def post(index: int):
        start.wait(timeout=60)
        node = "ab"[index % 2]
        answer = clients[node].post(path, json={"name": "staging"}, headers={"Idempotency-Key": key})
        return node, answer.status_code, answer.headers.get("Idempotent-Replayed"), answer.json()

    try:
        with ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(post, range(20)))
    finally:
        for client in clients.values():
            client.close()
    assert {status for _, status, _, _ in answers} == {202}, answers
    assert sorted(replayed or "" for _, _, replayed, _ in answers) == [""] + ["true"] * 19
    assert len({body["id"] for *_, body in answers}) == 1
    assert {node for node, *_ in answers} == {"a", "b"}
    after = cluster.rows(OPERATION_COLUMNS)
    new = [row for row in after if row[0] not in {old[0] for old in before}]
    assert [row[:2] for row in new] == [(answers[0][3]["id"], "environment.create")]
    assert cluster.rows("SELECT count(*) FROM idempotency WHERE key = %s", key) == [(1,)]

"""The cluster under concurrent load from both nodes (docs/multi-node.md, "Failure behaviour"): two real servers
(`rhone local up --store … --events … --blobs … --node a|b`, every role on each: tests/e2e/cluster.py) sharing one
PostgreSQL store, one JetStream stream and one bucket, driven through the real CLI and raw HTTP.

These tests share one cluster (starting one costs more than the tests; their xdist group keeps them on one worker,
so the suite starts one cluster for them, not one per worker); none of them kills anything. The tests that kill
nodes or engines start clusters of their own (test_cluster_crashes.py)."""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from rhone_local.domain.operations import NOT_RUNNABLE
from tests.e2e.cluster import Cluster, follows_history, running_cluster
from tests.e2e.helpers import set_version, wait_until

OPERATION_COLUMNS = "SELECT id, kind, state, version FROM operations ORDER BY id"
ROUTE = (
    "SELECT r.deployment_id, r.epoch FROM route_owners r JOIN environments e ON e.id = r.environment_id "
    "JOIN apps a ON a.id = r.app_id WHERE e.name = %s AND a.name = %s"
)
LEASE_OWNER = "SELECT lease_owner FROM operations WHERE id = %s"
EDGES_BEHIND = "SELECT edge_id, seq FROM edges WHERE seq IS NULL OR seq < %s"
OWNER_HISTORY = "SELECT deployment_id FROM route_events WHERE route_key = %s ORDER BY seq"
READY_INSTANCES = "SELECT count(*) FROM allocations WHERE deployment_id = %s AND state = 'ready'"

pytestmark = pytest.mark.xdist_group("cluster_failures")


@pytest.fixture(scope="module")
def cluster(s3_server) -> Cluster:
    with running_cluster(s3_server) as running:
        yield running


@pytest.fixture(scope="module")
def served(cluster: Cluster) -> dict:
    """App `served` deployed and promoted through node a: ids and the workspace's path."""
    # Its instances take a few seconds to start, so a scale is still running when a CLI started after it asks.
    app_dir = cluster.app("served", start="sleep 3 && exec python3 app.py")
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


def test_a_scale_on_one_node_and_a_promotion_on_the_other_are_one_change_at_a_time(cluster: Cluster, served):
    set_version(served["dir"], "2.0.0")
    second = cluster.nodes["b"].json("deploy", cwd=served["dir"], timeout=240)["id"]
    route_before = cluster.rows(ROUTE, "production", "served")
    before = {row[0] for row in cluster.rows(OPERATION_COLUMNS)}
    start = threading.Barrier(2)

    def scale():
        with cluster.http("a") as api:
            start.wait(timeout=60)
            answer = api.post(served["path"] + "/environments/production/scale", json={"instances": 2})
        return answer.status_code, answer.json()

    def promote():
        with cluster.http("b") as api:
            start.wait(timeout=60)
            answer = api.post(f"/v1/deployments/{second}/promote", json={"environment": "production"})
        return answer.status_code, answer.json()

    # Both requests reach their nodes within a few milliseconds, long before either operation can finish (a scale
    # starts a process and probes it; a promotion does that and waits for the edges).
    with ThreadPoolExecutor(2) as pool:
        scaled, promoted = pool.submit(scale), pool.submit(promote)
        answers = {"scale": scaled.result(), "promote": promoted.result()}
    statuses = sorted(status for status, _ in answers.values())
    assert statuses == [202, 409], answers
    (winner,) = [kind for kind, (status, _) in answers.items() if status == 202]
    (refused,) = [body for status, body in answers.values() if status == 409]
    assert refused["error"]["code"] == "environment_busy", refused
    op = answers[winner][1]
    new = [row for row in cluster.rows(OPERATION_COLUMNS) if row[0] not in before]
    assert [row[:2] for row in new] == [(op["id"], winner)]
    finished = cluster.nodes["a"].rhone("op", "wait", op["id"], "--json", timeout=240)
    assert finished.exit_code == 0, (finished.stdout, finished.stderr)
    ((deployment, epoch),) = cluster.rows(ROUTE, "production", "served")
    if winner == "scale":
        assert (deployment, epoch) == route_before[0]
        assert cluster.rows(READY_INSTANCES, deployment) == [(2,)]
    else:
        assert (deployment, epoch) == (second, route_before[0][1] + 1)

    # The CLI's side of a refusal: a scale accepted on node a, then `rhone promote` through node b while it runs
    # (its new instance takes seconds to start) is refused with environment_busy, exit 5, and changes nothing.
    other = served["deployment"] if deployment == second else second
    with cluster.http("a") as api:
        scaling = api.post(served["path"] + "/environments/production/scale", json={"instances": 3})
    assert scaling.status_code == 202, scaling.text
    before = {row[0] for row in cluster.rows(OPERATION_COLUMNS)}
    refused = cluster.nodes["b"].rhone("promote", other, "--json", cwd=served["dir"], timeout=120)
    assert refused.exit_code == 5, (refused.stdout, refused.stderr)
    assert refused.json()["error"]["code"] == "environment_busy"
    assert {row[0] for row in cluster.rows(OPERATION_COLUMNS)} == before
    finished = cluster.nodes["a"].rhone("op", "wait", scaling.json()["id"], "--json", timeout=240)
    assert finished.exit_code == 0, (finished.stdout, finished.stderr)
    assert cluster.rows(ROUTE, "production", "served") == [(deployment, epoch)]


def test_a_long_poll_on_either_node_is_answered_by_each_change_made_on_the_other(cluster: Cluster):
    # A build of a few seconds: the long-polls are waiting before the operation leaves `building`.
    app_dir = cluster.app("polled", build="sleep 3 && python3 -m py_compile app.py")
    started = cluster.nodes["a"].json("deploy", "--no-wait", cwd=app_dir, timeout=120)
    op_id = started["id"]
    owners: set[str] = set()
    done = threading.Event()

    def watch_lease_owner():  # which node's worker advances the operation (its lease owner is `<node>/worker-…`)
        while not done.is_set():
            owners.update(owner for (owner,) in cluster.rows(LEASE_OWNER, op_id) if owner)
            time.sleep(0.05)

    def follow(node: str) -> list[tuple[int, str]]:
        answers, version = [], started["version"]
        with cluster.http(node) as api:
            for _ in range(50):  # bounded: a deploy has fewer versions than this
                op = api.get(f"/v1/operations/{op_id}", params={"wait": 30, "after_version": version}).json()
                answers.append((op["version"], op["state"]))
                if op["state"] in NOT_RUNNABLE:
                    return answers
                version = op["version"]
        return answers

    watcher = threading.Thread(target=watch_lease_owner)
    watcher.start()
    try:
        with ThreadPoolExecutor(2) as pool:
            on_a, on_b = pool.map(follow, ("a", "b"))
    finally:
        done.set()
        watcher.join()
    assert {owner.split("/")[0] for owner in owners} <= {"a", "b"} and owners, owners
    for answers in (on_a, on_b):
        # Every answer is a newer version (none is a long-poll that ran out with nothing new), up to the end.
        versions = [version for version, _ in answers]
        assert versions == sorted(set(versions)) and versions[0] > started["version"], answers
        assert answers[-1][1] == "preview_ready", answers
    assert on_a[-1] == on_b[-1]


ROUTE_EVENTS = 50
APPS = 5


def _stream_sequences(url: str) -> list[int]:
    """The route sequence of every message on the stream, in stream order."""
    import asyncio

    import nats

    from rhone_local.route_stream import SEQ_HEADER, STREAM

    async def read() -> list[int]:
        client = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=0)
        try:
            js = client.jetstream(timeout=5)
            state = (await js.stream_info(STREAM)).state
            return [int((await js.get_msg(STREAM, seq)).headers[SEQ_HEADER]) for seq in range(1, state.last_seq + 1)]
        finally:
            await client.close()

    return asyncio.run(read())


def test_fifty_route_moves_from_both_nodes_are_one_gap_free_sequence_every_edge_follows(cluster: Cluster, served):
    """Five apps, each deployed twice; promotions flip each app's production owner between its two deployments,
    from node a and node b alternately, the five apps at once, until the store holds ROUTE_EVENTS route events. A
    probe loop through each node's edge watches every app meanwhile."""
    (already,) = cluster.rows("SELECT count(*) FROM route_events")[0]
    apps: dict[str, list[str]] = {}
    for index in range(APPS):
        app_dir = cluster.app(f"moves{index}")
        first = cluster.nodes["ab"[index % 2]].json("deploy", "--promote", cwd=app_dir, timeout=240)
        set_version(app_dir, "2.0.0")
        second = cluster.nodes["ba"[index % 2]].json("deploy", cwd=app_dir, timeout=240)
        apps[f"moves{index}"] = [first["deployment"]["id"], second["id"]]
    (now,) = cluster.rows("SELECT count(*) FROM route_events")[0]
    moves = ROUTE_EVENTS - now
    assert moves >= 40, now  # most of the sequence comes from the promotions below
    per_app = [moves // APPS + (1 if index < moves % APPS else 0) for index in range(APPS)]
    stop = threading.Event()
    seen: dict[tuple[str, str], list[str]] = {}

    def probe(node: str) -> int:
        import httpx

        probes = 0
        with httpx.Client(base_url=f"http://127.0.0.1:{cluster.nodes[node].edge_port}", timeout=10) as edge:
            while not stop.is_set() and probes < 5000:  # bounded
                for app in apps:
                    answer = edge.get("/", headers={"Host": f"{app}--production.localhost"})
                    probes += 1
                    if answer.status_code == 200:
                        served_by = seen.setdefault((node, app), [])
                        deployment = answer.json()["deployment"]
                        if not served_by or served_by[-1] != deployment:
                            served_by.append(deployment)
                    else:  # failing closed is allowed, serving something else is not
                        assert answer.status_code == 503, (node, app, answer.status_code, answer.text)
        return probes

    def flip(index: int) -> list[int]:
        app = f"moves{index}"
        codes = []
        for move in range(per_app[index]):
            node = "ab"[(index + move) % 2]
            target = apps[app][(move + 1) % 2]  # the first deployment owns production: the second moves first
            with cluster.http(node) as api:
                op = api.post(f"/v1/deployments/{target}/promote", json={"environment": "production"})
                assert op.status_code == 202, op.text
                op = op.json()
                for _ in range(100):  # bounded long-polls
                    if op["state"] in NOT_RUNNABLE:
                        break
                    op = api.get(f"/v1/operations/{op['id']}", params={"wait": 30}).json()
            codes.append(op["state"])
        return codes

    with ThreadPoolExecutor(2 + APPS) as pool:
        probes = [pool.submit(probe, node) for node in ("a", "b")]
        try:
            outcomes = list(pool.map(flip, range(APPS)))
        finally:
            stop.set()
        probe_counts = [future.result() for future in probes]
    assert outcomes == [["healthy"] * count for count in per_app], outcomes
    assert all(count > 0 for count in probe_counts)
    assert len(seen) == 2 * APPS, sorted(seen)  # each edge served each app

    # The store's sequence and the stream's are exactly 1..50: no gap, no duplicate, in order.
    store_seqs = [seq for (seq,) in cluster.rows("SELECT seq FROM route_events ORDER BY seq")]
    assert store_seqs == list(range(1, ROUTE_EVENTS + 1)), (already, store_seqs)
    assert wait_until(lambda: _stream_sequences(cluster.nats.url) == store_seqs, timeout=60)
    # Every edge of both nodes applied the last one.
    assert wait_until(lambda: cluster.rows(EDGES_BEHIND, ROUTE_EVENTS) == [], timeout=60)
    assert {node for (node,) in cluster.rows("SELECT DISTINCT node FROM edges")} == {"a", "b"}
    # Each app's owner history alternates its two deployments; what an edge served follows that history in order
    # and only ever names that app's own deployments.
    for (node, app), served_by in seen.items():
        history = [d for (d,) in cluster.rows(OWNER_HISTORY, f"{app}--production")]
        assert set(served_by) <= set(apps[app]), (node, app, served_by)
        assert follows_history(served_by, history), (node, app, served_by, history)
    ((epoch,),) = cluster.rows("SELECT max(epoch) FROM route_owners r WHERE route_key = %s", "moves0--production")
    assert epoch == 1 + per_app[0]

"""Nodes and engines of a real cluster killed or restarted mid-operation (docs/multi-node.md, "Failure behaviour"):
two real servers (`rhone local up --store … --events … --blobs … --node a|b`, every role on each:
tests/e2e/cluster.py). Each test starts a cluster of its own, since it breaks it."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from rhone_cli.services.local import process_alive
from tests.cluster.test_route_stream import purge
from tests.e2e.cluster import Cluster, follows_history, kill_node, running_cluster
from tests.e2e.helpers import set_version, wait_until

TAKEOVER = 120.0  # generous bound: a lease lapses after 10 s, a node's heartbeat after 10 s, on a loaded machine
PRODUCTION = (
    "SELECT a.deployment_id, a.node, a.state FROM allocations a JOIN environments e ON e.id = a.environment_id "
    "WHERE e.name = 'production' ORDER BY a.id"
)
ROUTE = "SELECT deployment_id, epoch FROM route_owners WHERE route_key = %s"


@pytest.fixture
def cluster(s3_server):
    with running_cluster(s3_server) as running:
        yield running


def _kill_the_lease_holder(cluster: Cluster, op_id: str, states: tuple[str, ...]) -> str:
    """kill -9 the node whose worker holds the operation's lease while it is in one of `states`; its name."""

    def holder() -> str | None:
        ((state,),) = cluster.rows("SELECT state FROM operations WHERE id = %s", op_id)
        return cluster.lease_node(op_id) if state in states else None

    node = wait_until(holder, timeout=120, interval=0.05)
    assert node in cluster.nodes, node
    pid = kill_node(cluster.nodes[node])
    assert wait_until(lambda: not process_alive(pid), timeout=30)
    return node


def _other(node: str) -> str:
    return "b" if node == "a" else "a"


def test_a_node_killed_mid_build_the_other_finishes_the_deploy_once(cluster: Cluster):
    app_dir = cluster.app("built", build="sleep 4 && python3 -m py_compile app.py")
    started = cluster.nodes["a"].json("deploy", "--no-wait", cwd=app_dir, timeout=120)
    killed = _kill_the_lease_holder(cluster, started["id"], ("building",))
    survivor = _other(killed)
    finished = cluster.nodes[survivor].rhone("op", "wait", started["id"], "--json", timeout=300)
    assert finished.exit_code == 0, (finished.stdout, finished.stderr)
    assert cluster.rows("SELECT state FROM operations WHERE id = %s", started["id"]) == [("preview_ready",)]
    (deployment,) = cluster.rows("SELECT id, artifact_digest FROM deployments")
    assert deployment[1], deployment  # one deployment, with its artifact
    stages = [stage["state"] for stage in cluster.nodes[survivor].json("op", "show", started["id"])["stages"]]
    assert stages.count("preview_ready") == 1 and stages.count("validating") == 1, stages
    # The preview's allocations: at most one live, on the survivor (the killed node's, if any, taken out).
    live = cluster.rows(
        "SELECT node FROM allocations WHERE deployment_id = %s AND state IN ('planned','pulling','starting','ready')",
        deployment[0],
    )
    assert live in ([], [(survivor,)]), live


def test_a_node_killed_mid_promotion_the_other_promotes_once_and_replaces_its_allocations(cluster: Cluster):
    app_dir = cluster.app("promoted", start="sleep 3 && exec python3 app.py")
    first = cluster.nodes["a"].json("deploy", "--promote", cwd=app_dir, timeout=300)
    set_version(app_dir, "2.0.0")
    second = cluster.nodes["b"].json("deploy", cwd=app_dir, timeout=300)["id"]
    route = cluster.rows(ROUTE, "promoted--production")
    assert route == [(first["deployment"]["id"], 1)]
    events = cluster.rows("SELECT count(*) FROM route_events")
    requested = cluster.nodes["a"].json("promote", second, "--no-wait", cwd=app_dir)
    killed = _kill_the_lease_holder(cluster, requested["id"], ("requested", "policy_check", "route_cas"))
    survivor = _other(killed)
    finished = cluster.nodes[survivor].rhone("op", "wait", requested["id"], "--json", timeout=300)
    assert finished.exit_code == 0, (finished.stdout, finished.stderr)
    assert cluster.rows(ROUTE, "promoted--production") == [(second, 2)]  # moved exactly once
    assert cluster.rows("SELECT count(*) FROM route_events") == [(events[0][0] + 1,)]
    # The new owner runs exactly once, on the survivor, once the killed node's heartbeat lapsed.
    assert wait_until(
        lambda: [(d, n) for d, n, s in cluster.rows(PRODUCTION) if s == "ready"] == [(second, survivor)],
        timeout=TAKEOVER,
        interval=0.5,
    ), cluster.rows(PRODUCTION)
    status = cluster.nodes[survivor].json("status", cwd=app_dir)
    assert str(status).count(second) >= 1


def _scale(cluster: Cluster, node: str, app: str, instances: int) -> None:
    with cluster.http(node) as api:
        workspace = api.get("/v1/workspaces").json()["items"][0]["id"]
        path = f"/v1/workspaces/{workspace}/projects/{app}/apps/{app}/environments/production/scale"
        answer = api.post(path, json={"instances": instances})
    assert answer.status_code == 202, answer.text
    finished = cluster.nodes[node].rhone("op", "wait", answer.json()["id"], "--json", timeout=300)
    assert finished.exit_code == 0, (finished.stdout, finished.stderr)


def test_a_killed_runner_nodes_allocations_are_replaced_on_the_other_with_route_epochs_unchanged(cluster: Cluster):
    app_dir = cluster.app("replaced")
    deployment = cluster.nodes["a"].json("deploy", "--promote", cwd=app_dir, timeout=300)["deployment"]["id"]
    _scale(cluster, "a", "replaced", 2)  # placement puts the second instance on the less loaded node
    ready = sorted((d, n) for d, n, s in cluster.rows(PRODUCTION) if s == "ready")
    assert ready == [(deployment, "a"), (deployment, "b")], ready
    route, events = cluster.rows(ROUTE, "replaced--production"), cluster.rows("SELECT count(*) FROM route_events")

    pid = kill_node(cluster.nodes["b"])
    assert wait_until(lambda: not process_alive(pid), timeout=30)
    assert wait_until(
        lambda: sorted((d, n) for d, n, s in cluster.rows(PRODUCTION) if s == "ready") == [(deployment, "a")] * 2,
        timeout=TAKEOVER,
        interval=0.5,
    ), cluster.rows(PRODUCTION)
    # The replacement runs the same owner: no route event, the same epoch; b's allocation is out of rotation.
    assert cluster.rows(ROUTE, "replaced--production") == route
    assert cluster.rows("SELECT count(*) FROM route_events") == events
    assert [(n, s) for _, n, s in cluster.rows(PRODUCTION) if n == "b"] == [("b", "draining")]


def _probe_edges(cluster: Cluster, host: str, stop, seen: dict[str, list[str]]) -> None:
    """Probe `host` through each node's edge until `stop` is set (bounded): record each change of the deployment
    that answered; anything but 200 or 503 (failing closed) fails."""
    import httpx

    clients = {
        node: httpx.Client(base_url=f"http://127.0.0.1:{server.edge_port}", timeout=10)
        for node, server in cluster.nodes.items()
    }
    try:
        for _ in range(20000):
            if stop.is_set():
                return
            for node, client in clients.items():
                try:
                    answer = client.get("/", headers={"Host": host})
                except httpx.HTTPError as error:
                    raise AssertionError(f"edge of {node} unreachable: {error}") from None
                if answer.status_code == 200:
                    history = seen.setdefault(node, [])
                    deployment = answer.json()["deployment"]
                    if not history or history[-1] != deployment:
                        history.append(deployment)
                else:
                    assert answer.status_code == 503, (node, answer.status_code, answer.text)
    finally:
        for client in clients.values():
            client.close()


def test_nats_restarted_or_its_stream_purged_edges_never_serve_a_former_owner(cluster: Cluster):
    import threading

    app_dir = cluster.app("followed")
    first = cluster.nodes["a"].json("deploy", "--promote", cwd=app_dir, timeout=300)["deployment"]["id"]
    set_version(app_dir, "2.0.0")
    second = cluster.nodes["b"].json("deploy", cwd=app_dir, timeout=300)["id"]
    stop, seen = threading.Event(), {}
    prober = threading.Thread(target=_probe_edges, args=(cluster, "followed--production.localhost", stop, seen))
    prober.start()
    try:
        cluster.nats.restart()  # same port, its data kept
        promoted = cluster.nodes["b"].rhone("promote", second, "--json", cwd=app_dir, timeout=300)
        assert promoted.exit_code == 0, (promoted.stdout, promoted.stderr)
        purge(cluster.nats.url)
        promoted = cluster.nodes["a"].rhone("promote", first, "--json", cwd=app_dir, timeout=300)
        assert promoted.exit_code == 0, (promoted.stdout, promoted.stderr)
        assert cluster.rows(ROUTE, "followed--production") == [(first, 3)]

        def both_serve_first() -> bool:
            return all(history and history[-1] == first for history in seen.values()) and len(seen) == 2

        assert wait_until(both_serve_first, timeout=60)
    finally:
        stop.set()
        prober.join()
    # Each edge served the owners in the order they owned the route (first, second, first), never going back to an
    # owner the route had already left.
    history = [
        d
        for (d,) in cluster.rows(
            "SELECT deployment_id FROM route_events WHERE route_key = %s ORDER BY seq", "followed--production"
        )
    ]
    assert history == [first, second, first]
    for node, served in seen.items():
        assert follows_history(served, history), (node, served)


def test_postgresql_restarted_during_deploys_no_operation_is_duplicated(cluster: Cluster):
    """`pg_ctl restart -m fast` while a deploy through each node is building: every connection of both servers is
    cut. Each deploy ends once (one operation, one deployment each) and each CLI ends with exit 0."""
    app_dirs = {node: cluster.app(f"outage{node}", build="sleep 3 && python3 -m py_compile app.py") for node in "ab"}
    nodes = cluster.rows("SELECT name, instance_id, left_at FROM nodes ORDER BY name")
    with ThreadPoolExecutor(2) as pool:
        deploys = {
            node: pool.submit(cluster.nodes[node].rhone, "deploy", "--json", cwd=app_dir, timeout=300)
            for node, app_dir in app_dirs.items()
        }
        assert wait_until(
            lambda: (
                cluster.rows("SELECT count(*) FROM operations WHERE kind = 'deploy' AND state = 'building'") == [(2,)]
            ),
            timeout=120,
            interval=0.1,
        )
        cluster.pg.restart()
        results = {node: future.result() for node, future in deploys.items()}
    for node, result in results.items():
        assert result.exit_code == 0, (node, result.stdout, result.stderr)
        assert result.json()["state"] == "preview_ready", result.stdout
    assert (
        sorted(cluster.rows("SELECT kind, state FROM operations WHERE kind = 'deploy'"))
        == [("deploy", "preview_ready")] * 2
    )
    assert cluster.rows("SELECT count(*) FROM deployments") == [(2,)]
    live = "SELECT deployment_id, count(*) FROM allocations WHERE state = 'ready' GROUP BY deployment_id"
    assert sorted(count for _, count in cluster.rows(live)) == [1, 1]  # one preview instance each
    # Both nodes lived through it, still registered under the same instances.
    assert all(process_alive(server.pid()) for server in cluster.nodes.values())
    assert cluster.rows("SELECT name, instance_id, left_at FROM nodes ORDER BY name") == nodes

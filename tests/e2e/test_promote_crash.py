"""The promotion crash matrix: `kill -9` Rhone Local while a promotion — a second deployment over an existing production
owner — is in each of its stages, `rhone local up` again, `rhone op wait`, and check that the route ends exactly where
the store committed it and that everything downstream of the route agrees.

Rows (stage × moment of the crash):
- policy_check, caught between stages (`RHONE_LOCAL_STAGE_DELAY` holds the stage open before its effect): nothing of
  the promotion exists yet but the recorded stage;
- policy_check while the new production allocation is starting (a start command that takes a while to listen): the
  restart must kill that half-started process and start a fresh one;
- route_cas, caught between stages: the new production allocation is ready, the route has not moved;
- edge_propagating, caught between stages: the route moved (the CAS, its event and the stage committed together),
  the edge has not been waited for and the previous owner still runs;
- after the route moved, while the previous owner drains (the promotion does not wait for it; its process ignores
  SIGTERM, so stopping it takes the runner's whole grace period): the restart must finish the drain by its stored
  deadline, not adopt a process that is on its way out.

After the restart every row must show: the promotion finished (healthy, or failed with an error and the route
unmoved); each stage recorded once; the store's route owner is the committed one, with exactly one event per epoch
and epochs contiguous 1..n; the edge answers the production URL with the owner's deployment id; exactly one ready
production allocation, the owner's, with every other production allocation's process dead; no orphan app processes.
Run with `-s` to see the matrix.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import httpx
import pytest

from rhone_cli.services.local import process_alive
from tests.conftest import REPO
from tests.e2e.helpers import allocation_group, db_rows, operation_state, processes_under, restart, wait_until

HELLO = REPO / "examples" / "hello"
STAGE_DELAY = "2.5"  # a stage's window: the test must see it and kill the server inside it
ROUTE_KEY = "hello--production"
PROMOTION_STAGES = ["requested", "policy_check", "route_cas", "edge_propagating", "healthy"]
LIVE = ("planned", "pulling", "starting", "ready", "draining")
# A start command whose process ignores SIGTERM: stopping it takes the runner's whole grace period (then SIGKILL).
STUBBORN_START = (
    'exec python3 -c "import runpy, signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); '
    "runpy.run_path('app.py', run_name='__main__')\""
)
SLOW_START = "sleep 3; exec python3 app.py"

MATRIX: dict[str, dict[str, str]] = {}
COLUMNS = ("at the kill", "outcome", "owner", "route events", "edge answer", "ready production", "orphans")


@pytest.fixture(scope="module", autouse=True)
def crash_matrix():
    yield MATRIX
    if MATRIX:
        width = max(len(row) for row in MATRIX)
        widths = {c: max(len(c), *(len(cells.get(c, "-")) for cells in MATRIX.values())) for c in COLUMNS}
        print("\n\npromotion crash matrix (kill -9 of Rhone Local, then `rhone local up`, then `rhone op wait`):")
        print(f"  {'crashed in':<{width}}  " + "  ".join(f"{c:<{widths[c]}}" for c in COLUMNS))
        for row, cells in MATRIX.items():
            print(f"  {row:<{width}}  " + "  ".join(f"{cells.get(c, '-'):<{widths[c]}}" for c in COLUMNS))


# -- helpers ---------------------------------------------------------------------------------------------------------
def write_manifest(app_dir: Path, start: str) -> None:
    (app_dir / "rhone.toml").write_text(
        '[project]\nname = "hello"\n\n[app]\nname = "hello"\n\n'
        '[build]\ncommand = "python3 -m py_compile app.py"\noutput = "."\ntimeout = 120\n\n'
        f'[process]\nstart = {json.dumps(start)}\nhealth_path = "/healthz"\nreadiness_timeout = 30\n'
    )


def production_allocations(server) -> list[dict]:
    return db_rows(
        server,
        "SELECT a.* FROM allocations a JOIN environments e ON e.id = a.environment_id "
        "WHERE e.name = 'production' ORDER BY a.id",
    )


def route_owner(server) -> dict | None:
    rows = db_rows(server, "SELECT * FROM route_owners WHERE route_key = ?", ROUTE_KEY)
    return rows[0] if rows else None


def route_events(server) -> list[dict]:
    return db_rows(server, "SELECT * FROM route_events WHERE route_key = ? ORDER BY seq", ROUTE_KEY)


def edge_production(server) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{server.edge_port}/", headers={"Host": f"{ROUTE_KEY}.localhost"}, timeout=10)


def edge_answer(server) -> tuple[int, str | None]:
    try:
        answer = edge_production(server)
    except httpx.TransportError as error:
        return 0, type(error).__name__
    return answer.status_code, answer.json().get("deployment") if answer.status_code == 200 else None


def kill_server(server) -> None:
    pid = server.pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: not process_alive(pid), 60), f"Rhone Local pid {pid} survived kill -9"


class Scenario:
    """One app with two deployments: `first` owns production (epoch 1), `second` is preview_ready."""

    def __init__(self, server, root: Path, *, first_start: str, second_start: str, stage_delay: bool) -> None:
        self.server = server
        assert server.up().exit_code == 0
        self.app_dir = root / "hello"
        shutil.copytree(HELLO, self.app_dir)
        write_manifest(self.app_dir, first_start)
        linked = server.rhone("init", "--link", "--json", cwd=self.app_dir)
        assert linked.exit_code == 0, linked.stderr

        result = server.rhone("deploy", "--promote", "--json", cwd=self.app_dir, timeout=120)
        assert result.exit_code == 0, (result.stdout, result.stderr)
        doc = result.json()  # {"deployment", "promotion"}
        self.first = {**doc["deployment"], "promotion": doc["promotion"]}
        assert self.first["promotion"]["state"] == "healthy" and self.first["promotion"]["epoch"] == 1

        source = self.app_dir / "app.py"
        source.write_text(source.read_text().replace('VERSION = "1.0.0"', 'VERSION = "1.0.1"'))
        write_manifest(self.app_dir, second_start)
        result = server.rhone("deploy", "--json", cwd=self.app_dir, timeout=120)
        assert result.exit_code == 0, (result.stdout, result.stderr)
        self.second = result.json()
        assert self.second["state"] == "preview_ready" and self.second["id"] != self.first["id"]
        self.names = {self.first["id"]: "first", self.second["id"]: "second"}

        if stage_delay:
            assert server.rhone("local", "down").exit_code == 0
            assert server.up(environ={"RHONE_LOCAL_STAGE_DELAY": STAGE_DELAY}).exit_code == 0
        # Before anything is promoted, production answers as the first deployment (restored after a restart).
        assert wait_until(lambda: edge_answer(server) == (200, self.first["id"]), 30), edge_answer(server)
        assert route_owner(server)["epoch"] == 1

    def name(self, deployment_id: str | None) -> str:
        return self.names.get(deployment_id, str(deployment_id))

    def promote(self) -> dict:
        result = self.server.rhone("promote", self.second["id"], "--env", "production", "--no-wait", "--json")
        assert result.exit_code == 0, (result.stdout, result.stderr)
        op = result.json()
        assert op["kind"] == "promote" and op["params"]["expect_epoch"] == 1
        self.op_id = op["id"]
        return op

    def at_kill(self, stage: str) -> tuple[str, dict[int, str]]:
        """Kill -9 the server; return what the store says the crash interrupted, and the app processes then."""
        kill_server(self.server)
        before = processes_under(self.server.data_dir)
        [op] = db_rows(self.server, "SELECT state FROM operations WHERE id = ?", self.op_id)
        assert op["state"] == stage, f"the crash was meant to land in {stage}, it landed in {op['state']}"
        owner = route_owner(self.server)
        live = [a for a in production_allocations(self.server) if a["state"] in LIVE]
        second = [a["state"] for a in live if a["deployment_id"] == self.second["id"]]
        first = [a["state"] for a in live if a["deployment_id"] == self.first["id"]]
        facts = f"epoch {owner['epoch']}; second {'+'.join(second) or 'none'}; first {'+'.join(first) or 'none'}"
        return facts, before


def verify_recovered(
    scenario: Scenario, row: str, *, at_kill: str, before: dict[int, str], edge_grace: float = 0
) -> dict[str, str]:
    server, second, first = scenario.server, scenario.second, scenario.first
    cells = MATRIX.setdefault(row, {})
    cells["at the kill"] = at_kill

    waited = server.rhone("op", "wait", scenario.op_id, "--wait-timeout", "60", "--json", cwd=scenario.app_dir)
    op = json.loads(waited.stdout)
    assert op["state"] in ("healthy", "failed"), op
    cells["outcome"] = op["state"] if op["state"] == "healthy" else f"failed ({op['error']['code']})"
    # Each stage recorded once: the restarted worker resumed from the last recorded stage.
    states = [s["state"] for s in op["stages"]]
    if op["state"] == "healthy":
        assert waited.exit_code == 0, (waited.stdout, waited.stderr)
        assert states == PROMOTION_STAGES, states
    else:  # failing cleanly: a named error, and the route never moved
        assert op["error"] and op["error"]["code"] != "internal_error", op["error"]
        assert len(states) == len(set(states)) and states[-1] == "failed", states

    # The store: the committed owner, one event per epoch, epochs contiguous 1..n.
    owner = route_owner(server)
    events = route_events(server)
    expected_owner = second["id"] if op["state"] == "healthy" else first["id"]
    cells["owner"] = f"{scenario.name(owner['deployment_id'])} @ epoch {owner['epoch']}"
    cells["route events"] = ", ".join(f"{e['epoch']}:{scenario.name(e['deployment_id'])}" for e in events)
    epochs = [e["epoch"] for e in events]
    assert epochs == list(range(1, len(events) + 1)), events
    assert len(epochs) == len(set(epochs))
    assert owner["deployment_id"] == expected_owner and owner["epoch"] == epochs[-1]
    assert events[-1]["deployment_id"] == owner["deployment_id"]
    assert events[-1]["artifact_digest"] == owner["artifact_digest"]
    assert [e["seq"] for e in events] == sorted({e["seq"] for e in events})
    if op["state"] == "healthy":
        assert epochs == [1, 2], events
        moved = next(s["evidence"] for s in op["stages"] if s["state"] == "edge_propagating")
        [event] = [e for e in events if e["epoch"] == 2]  # the route moved once: exactly one event for its epoch
        assert event["operation_id"] == op["id"] and event["previous_deployment_id"] == first["id"]
        assert (moved["epoch"], moved["seq"], moved["previous_owner"]) == (2, event["seq"], first["id"])
        assert owner["operation_id"] == op["id"] and owner["artifact_digest"] == second["artifact_digest"]
        assert op["stages"][-1]["evidence"]["epoch"] == 2
    else:
        assert epochs == [1], events

    # The edge agrees with the store (after a restart that lost the owner's process, once its allocation is back).
    wait_until(lambda: edge_answer(server) == (200, owner["deployment_id"]), edge_grace, interval=0.1)
    status, answered = edge_answer(server)
    cells["edge answer"] = f"{status} {scenario.name(answered)}"
    assert (status, answered) == (200, owner["deployment_id"])

    # Drains end on their own (the operation never waits for them): once they have, exactly one ready production
    # allocation, the owner's; every other production allocation is dead.
    assert wait_until(lambda: all(a["state"] != "draining" for a in production_allocations(server)), 60)
    production = production_allocations(server)
    ready = [a for a in production if a["state"] == "ready"]
    cells["ready production"] = (
        f"{len(ready)} ({', '.join(scenario.name(a['deployment_id']) for a in ready)}) of {len(production)}"
    )
    assert len(ready) == 1, production
    assert ready[0]["deployment_id"] == owner["deployment_id"]
    assert process_alive(ready[0]["pid"])
    assert [a for a in production if a["state"] in LIVE] == ready, production
    assert all(not process_alive(a["pid"]) for a in production if a is not ready[0] and a["pid"]), production

    # No orphans: every app process under the data directory belongs to a ready allocation's process group.
    ready_groups = {a["pid"] for a in db_rows(server, "SELECT pid FROM allocations WHERE state = 'ready'")}

    def orphans() -> dict[int, str]:
        live = processes_under(server.data_dir)
        return {pid: cmd for pid, cmd in live.items() if allocation_group(pid) not in ready_groups}

    wait_until(lambda: not orphans(), 60)  # killed process groups may take a moment to finish dying
    left = orphans()
    survivors = {
        pid: cmd for pid, cmd in before.items() if process_alive(pid) and allocation_group(pid) not in ready_groups
    }
    cells["orphans"] = str(len(set(left) | set(survivors)))
    assert not left, f"orphan processes under the data directory: {left}"
    assert not survivors, f"processes from before the crash still running: {survivors}"
    return cells


EXPECTED = {
    "outcome": "healthy",
    "owner": "second @ epoch 2",
    "route events": "1:first, 2:second",
    "edge answer": "200 second",
    "ready production": "1 (second) of",  # prefix: how many dead allocations precede it depends on the row
    "orphans": "0",
}


def assert_row(cells: dict[str, str], at_kill: str) -> None:
    assert cells["at the kill"] == at_kill
    for column, expected in EXPECTED.items():
        if column == "ready production":
            assert cells[column].startswith(expected), (column, cells[column])
        else:
            assert cells[column] == expected, (column, cells[column])


# -- the matrix ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("stage", "at_kill"),
    [
        ("policy_check", "epoch 1; second none; first ready"),
        ("route_cas", "epoch 1; second ready; first ready"),
        ("edge_propagating", "epoch 2; second ready; first ready"),
    ],
)
def test_kill_9_between_promotion_stages(local_env, tmp_path, stage, at_kill):
    row = f"{stage} (between stages)"
    scenario = Scenario(
        local_env, tmp_path, first_start="python3 app.py", second_start="python3 app.py", stage_delay=True
    )
    scenario.promote()
    assert wait_until(lambda: operation_state(local_env, scenario.op_id) == stage, 30), f"never saw {stage}"
    facts, before = scenario.at_kill(stage)
    assert facts == at_kill, facts  # the crash landed where the row says it did
    ready_before = [a for a in production_allocations(local_env) if a["state"] == "ready"]
    restart(local_env)
    cells = verify_recovered(scenario, row, at_kill=facts, before=before)
    assert_row(cells, at_kill)
    if stage != "policy_check":
        # The second deployment's production allocation was ready at the kill: the restart adopted that very one.
        [adopted] = [a for a in ready_before if a["deployment_id"] == scenario.second["id"]]
        [ready] = [a for a in production_allocations(local_env) if a["state"] == "ready"]
        assert ready["id"] == adopted["id"]


def test_kill_9_while_the_new_production_allocation_is_starting(local_env, tmp_path):
    row = "policy_check (new allocation starting)"
    scenario = Scenario(local_env, tmp_path, first_start="python3 app.py", second_start=SLOW_START, stage_delay=False)
    scenario.promote()

    def starting() -> list[dict]:
        return [
            a
            for a in production_allocations(local_env)
            if a["deployment_id"] == scenario.second["id"] and a["state"] == "starting" and a["pid"]
        ]

    caught = wait_until(starting, 60)
    assert caught, "never saw the new production allocation starting"
    facts, before = scenario.at_kill("policy_check")
    assert facts == "epoch 1; second starting; first ready", facts
    assert process_alive(caught[0]["pid"])  # it outlived the server: the restart must deal with it
    restart(local_env)
    cells = verify_recovered(scenario, row, at_kill=facts, before=before)
    assert_row(cells, facts)
    [ready] = [a for a in production_allocations(local_env) if a["state"] == "ready"]
    assert ready["id"] != caught[0]["id"] and not process_alive(caught[0]["pid"])


def test_kill_9_while_the_previous_owner_drains(local_env, tmp_path):
    row = "healthy (previous owner draining)"
    scenario = Scenario(
        local_env, tmp_path, first_start=STUBBORN_START, second_start="python3 app.py", stage_delay=False
    )
    [old] = [a for a in production_allocations(local_env) if a["state"] == "ready"]
    assert old["deployment_id"] == scenario.first["id"]
    scenario.promote()
    # The route has moved, the promotion is done, and the runner is waiting out its grace period on a process that
    # ignores SIGTERM.
    assert wait_until(
        lambda: [
            a
            for a in production_allocations(local_env)
            if a["id"] == old["id"] and a["state"] == "draining" and a["terminating_since"]
        ],
        20,
    ), "never saw the previous owner draining"
    assert wait_until(lambda: operation_state(local_env, scenario.op_id) == "healthy", 60)
    facts, before = scenario.at_kill("healthy")
    assert facts == "epoch 2; second ready; first draining", facts
    assert process_alive(old["pid"])
    restart(local_env)
    cells = verify_recovered(scenario, row, at_kill=facts, before=before)
    assert_row(cells, facts)
    assert not process_alive(old["pid"])
    [stopped] = [a for a in production_allocations(local_env) if a["id"] == old["id"]]
    assert stopped["state"] in ("stopped", "failed")


@pytest.mark.parametrize(
    ("stage", "at_kill"),
    [
        ("route_cas", "epoch 1; second ready; first ready"),
        ("edge_propagating", "epoch 2; second ready; first ready"),
    ],
)
def test_kill_9_when_the_new_allocation_dies_with_the_server(local_env, tmp_path, stage, at_kill):
    """A host-crash: Rhone Local and the new production allocation's process die together (between stages)."""
    row = f"{stage} (new allocation died too)"
    scenario = Scenario(
        local_env, tmp_path, first_start="python3 app.py", second_start="python3 app.py", stage_delay=True
    )
    scenario.promote()
    assert wait_until(lambda: operation_state(local_env, scenario.op_id) == stage, 30), f"never saw {stage}"
    facts, before = scenario.at_kill(stage)
    assert facts == at_kill, facts
    [doomed] = [
        a
        for a in production_allocations(local_env)
        if a["deployment_id"] == scenario.second["id"] and a["state"] == "ready"
    ]
    os.killpg(doomed["pid"], signal.SIGKILL)
    assert wait_until(lambda: not process_alive(doomed["pid"]), 60)
    restart(local_env)
    cells = verify_recovered(scenario, row, at_kill=f"{facts} (killed)", before=before, edge_grace=15)
    assert_row(cells, f"{facts} (killed)")
    [ready] = [a for a in production_allocations(local_env) if a["state"] == "ready"]
    assert ready["id"] != doomed["id"]

"""The 2-node recipe of docs/multi-node.md ("Nodes", "Two nodes on one machine"), run from the doc itself.

The recipe's `sh` blocks are read from the doc and run, step after step, in one `bash -euo pipefail` — as a user
pasting them into one terminal — with the worktree's real `rhone` on PATH, a temporary HOME, and only what a test
must change substituted (`SUBSTITUTIONS`: the engines of tests/engines.py instead of the user's, ports 0 instead of
fixed ones, read back from `rhone local status`). Between steps the test checks the store and both edges: both nodes
registered; the deploy and promotion through node a succeeded; both edges answer with the deployment; while node b
(holding production) stops, a probe loop through node a's edge sees only 200s from it (the hand-over); node b
stopped, node a's edge still answers with it, a's allocation rows and the route epoch are unchanged, and nothing is
left running or draining on b. Every process is stopped in a `finally`.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from tests.e2e.cluster import LIVE_PROCESSES, kill_leftovers
from tests.e2e.helpers import HELLO, wait_until
from tests.engines import postgres_cluster, s3_api_server

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "multi-node.md"
SECTION_START, SECTION_END = "**Two nodes on one machine.**", "Tests: `tests/e2e/"
STEPS = ("install", "engines", "nodes", "deploy", "stop b", "cleanup")
# What each step's block must contain (the doc's shape; a block that lost it fails the test, naming it).
STEP_MARKERS = {
    "install": ".[local,cluster]",
    "engines": "export RHONE_LOCAL_STORE=",
    "nodes": "rhone local up --node b",
    "deploy": "deploy --promote",
    "stop b": "rhone local down --data-dir ~/rhone-b",
    "cleanup": "rhone local down --data-dir ~/rhone-a",
}
STATUS = "$(rhone local status --data-dir ~/rhone-{node} --jq .{field})"
# (the doc's text, what runs instead): the whole list, applied to every step. Each must occur in the doc.
SUBSTITUTIONS = (
    # the user's PostgreSQL server → this test's throw-away cluster, on its unix socket
    ("sudo -u postgres psql", 'psql "$RECIPE_PG_ADMIN"'),
    ("@127.0.0.1:5432/", "@$RECIPE_PG_HOST/"),
    # moto_server on port 9000 → the loopback S3-API server of tests/engines.py (started and stopped by the test)
    ("moto_server -p 9000 >moto.log 2>&1 & MOTO=$!", ":"),
    ('kill "$MOTO"', ":"),
    ("http://127.0.0.1:9000", "$RECIPE_S3"),
    # fixed ports → any free port, read back where later commands name them
    ("--port 8470 --edge-port 8471", "--port 0 --edge-port 0"),
    ("--port 8480 --edge-port 8481", "--port 0 --edge-port 0"),
    ("http://127.0.0.1:8470", STATUS.format(node="a", field="api_url")),
    ("localhost:8471", "localhost:" + STATUS.format(node="a", field="edge_port")),
    ("localhost:8481", "localhost:" + STATUS.format(node="b", field="edge_port")),
)
STEP_TIMEOUT = {"deploy": 300.0, "stop b": 120.0}  # others: 120 s
DONE = "@@recipe-step-done"
PRODUCTION_NODES = (
    "SELECT a.node FROM allocations a JOIN environments e ON e.id = a.environment_id "
    "WHERE e.name = 'production' AND a.state = 'ready'"
)
A_ROWS = "SELECT id, node, state, version, pid, pid_start_time, deployment_id FROM allocations WHERE node = 'a'"


def recipe_steps(doc: str) -> dict[str, str]:
    """The recipe's `sh` blocks by step; a clear failure when the section or a block is missing or changed shape."""
    if SECTION_START not in doc:
        pytest.fail(f"{DOC}: the paragraph {SECTION_START!r} is gone; this test runs its recipe", pytrace=False)
    section = doc[doc.index(SECTION_START) :]
    section = section[: section.index(SECTION_END)] if SECTION_END in section else section
    blocks = re.findall(r"^```sh\n(.*?)^```$", section, re.DOTALL | re.MULTILINE)
    if len(blocks) != len(STEPS):
        pytest.fail(
            f"{DOC}, {SECTION_START}: {len(blocks)} sh blocks, expected {len(STEPS)} ({', '.join(STEPS)}); "
            "update tests/e2e/test_two_node_recipe.py with the recipe",
            pytrace=False,
        )
    steps = dict(zip(STEPS, blocks, strict=True))
    for step, marker in STEP_MARKERS.items():
        if marker not in steps[step]:
            pytest.fail(f"{DOC}: the recipe's {step!r} block no longer contains {marker!r}", pytrace=False)
    text = "".join(blocks)
    missing = [old for old, _ in SUBSTITUTIONS if old not in text]
    if missing:
        pytest.fail(f"{DOC}: the recipe no longer contains {missing} (the test substitutes them)", pytrace=False)
    return steps


def substituted(block: str) -> str:
    for old, new in SUBSTITUTIONS:
        block = block.replace(old, new)
    return block


def test_the_doc_recipe_substitutes_only_what_it_lists():
    """The extraction itself: every step found, and the substituted steps hold no fixed port or engine of the
    user's machine any more (they would reach outside the test)."""
    steps = recipe_steps(DOC.read_text())
    for step in STEPS[1:]:
        text = substituted(steps[step])
        for leftover in ("8470", "8471", "8480", "8481", ":9000", ":5432", "sudo", "moto_server"):
            assert leftover not in text, (step, leftover, text)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda doc: doc.replace(SECTION_START, "**Two nodes.**"), "is gone"),
        (lambda doc: doc.replace("```sh\nrhone local down --data-dir ~/rhone-b", "```\nrhone local down"), "sh blocks"),
        (lambda doc: doc.replace("--port 8480 --edge-port 8481", "--port 8490 --edge-port 8491"), "--port 8480"),
        (lambda doc: doc.replace("rhone local up --node b", "rhone local up --node c"), "--node b"),
    ],
)
def test_a_recipe_that_changed_shape_fails_naming_what_changed(change, message):
    with pytest.raises(pytest.fail.Exception, match=re.escape(message)):
        recipe_steps(change(DOC.read_text()))


class Shell:
    """One `bash -euo pipefail` reading the steps from its stdin, as a terminal the user pastes into; every step's
    output is kept for the failure message."""

    def __init__(self, cwd: Path, environ: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            ["bash", "-euo", "pipefail"],
            cwd=cwd,
            env=environ,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            restore_signals=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.transcript: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def run(self, step: str, script: str, timeout: float) -> str:
        """Run one step; its output. Fails the test when the shell exits (a command failed: `-e`) or the step
        outlives `timeout`. Commands read /dev/null, never the rest of the script."""
        self.process.stdin.write(f"{{\n{script}\n}} </dev/null\necho {DONE}\n")
        self.process.stdin.flush()
        output: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"step {step!r} still running after {timeout:g}s:\n{''.join(output)}", pytrace=False)
            if line is None:
                status = self.process.wait(10)
                pytest.fail(f"step {step!r} failed (bash exited {status}):\n{script}\n---\n{''.join(output)}")
            if line.rstrip("\n") == DONE:
                self.transcript += output
                return "".join(output)
            output.append(line)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.process.stdin.close()
        try:
            self.process.wait(10)  # at once after the last step; a step still running is killed
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


def _rows(url: str, query: str) -> list[tuple]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as db:
        return db.execute(query).fetchall()


def _production(edge_port: int) -> httpx.Response | None:
    try:
        return httpx.get(f"http://127.0.0.1:{edge_port}/", headers={"Host": "hello--production.localhost"}, timeout=10)
    except httpx.HTTPError:
        return None


@contextlib.contextmanager
def _probing(edge_port: int, limit: int = 3000):
    """Requests through an edge, one after the other, while the block runs (at most `limit`): the (status,
    deployment) of each answer, None for a refused connection."""
    answers: list[tuple[int, str | None] | None] = []
    done = threading.Event()

    def probe() -> None:
        while not done.is_set() and len(answers) < limit:
            answer = _production(edge_port)
            if answer is None:
                answers.append(None)
            else:
                deployment = answer.json().get("deployment") if answer.status_code == 200 else None
                answers.append((answer.status_code, deployment))
            time.sleep(0.02)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    try:
        yield answers
    finally:
        done.set()
        thread.join(30)


def _edge_port(environ: dict[str, str], node: str) -> int:
    found = subprocess.run(
        ["rhone", "local", "status", "--json", "--data-dir", f"{environ['HOME']}/rhone-{node}"],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=True,
    )
    return json.loads(found.stdout)["edge_port"]


def _stop_everything(environ: dict[str, str], store_url: str) -> None:
    """Whatever the recipe left running: both nodes (`rhone local down`, a no-op for a stopped one), then any app
    process of an allocation no node stopped."""
    leftovers: list[tuple] = []
    with contextlib.suppress(Exception):
        leftovers = _rows(store_url, LIVE_PROCESSES)
    for node in ("b", "a"):
        data_dir = f"{environ['HOME']}/rhone-{node}"
        with contextlib.suppress(Exception):
            subprocess.run(
                ["rhone", "local", "down", "--data-dir", data_dir],
                env=environ,
                capture_output=True,
                timeout=120,
                stdin=subprocess.DEVNULL,
            )
    kill_leftovers(leftovers)


def test_the_two_node_recipe_of_the_docs_runs_as_written(tmp_path: Path):
    steps = recipe_steps(DOC.read_text())
    home, cwd = tmp_path / "home", tmp_path / "clone"
    home.mkdir()
    shutil.copytree(HELLO, cwd / "examples" / "hello")  # what `-C examples/hello` names in a clone
    with postgres_cluster() as pg, s3_api_server() as s3_url:
        store_url = f"postgresql://rhone:rhone-secret@/rhone?host={pg.socket_dir}"
        environ = {
            "HOME": str(home),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",  # the profile's token in a file under HOME
            "RECIPE_PG_ADMIN": pg.url,
            "RECIPE_PG_HOST": quote(str(pg.socket_dir), safe=""),  # a unix socket as a URL's host
            "RECIPE_S3": s3_url,
        }
        shell = Shell(cwd, environ)
        try:
            for step in ("engines", "nodes"):
                shell.run(step, substituted(steps[step]), STEP_TIMEOUT.get(step, 120.0))
            nodes = _rows(store_url, "SELECT name, roles, left_at FROM nodes ORDER BY name")
            assert nodes == [("a", "api,edge,runner,worker", None), ("b", "api,edge,runner,worker", None)]

            answered = shell.run("deploy", substituted(steps["deploy"]), STEP_TIMEOUT["deploy"])
            ((owner, epoch),) = _rows(store_url, "SELECT deployment_id, epoch FROM route_owners")
            operations = _rows(store_url, "SELECT kind, state FROM operations WHERE kind IN ('deploy', 'promote')")
            assert sorted(operations) == [("deploy", "preview_ready"), ("promote", "healthy")], operations
            assert epoch == 1
            assert answered.count(f'"deployment": "{owner}"') == 2, answered  # the doc's two curls, one per edge
            edges = {node: _edge_port(environ, node) for node in ("a", "b")}
            for node, port in edges.items():
                answer = _production(port)
                assert answer is not None and answer.status_code == 200, (node, answer)
                assert answer.json()["deployment"] == owner and answer.json()["app"] == "hello", answer.text
            a_before = _rows(store_url, A_ROWS)
            events_before = _rows(store_url, "SELECT count(*) FROM route_events")

            # Placement put the preview on a and production on b (the least loaded runner, ties by name): the stop
            # of b is the one that must hand production over with no gap (docs/multi-node.md, "Nodes").
            production_nodes = _rows(store_url, PRODUCTION_NODES)
            assert production_nodes == [("b",)], production_nodes
            with _probing(edges["a"]) as answers:
                answered = shell.run("stop b", substituted(steps["stop b"]), STEP_TIMEOUT["stop b"])
            assert f'"deployment": "{owner}"' in answered, answered
            assert len(answers) >= 5, answers  # the loop really ran through the stop
            assert set(answers) == {(200, owner)}, {a: answers.count(a) for a in set(answers)}
            served = wait_until(lambda: _production(edges["a"]), timeout=60, interval=0.2)
            assert served is not None and served.status_code == 200 and served.json()["deployment"] == owner
            assert _rows(store_url, "SELECT deployment_id, epoch FROM route_owners") == [(owner, 1)]
            assert _rows(store_url, "SELECT count(*) FROM route_events") == events_before
            a_after = _rows(store_url, A_ROWS)
            assert [row for row in a_after if row[0] in {r[0] for r in a_before}] == a_before
            assert {row[6] for row in a_after} == {owner}  # anything new on a runs the same deployment
            ((left_at,),) = _rows(store_url, "SELECT left_at FROM nodes WHERE name = 'b'")
            assert left_at is not None
            # b's allocations all ended: none placed on b while it was stopping, left draining with no runner
            b_states = {state for (state,) in _rows(store_url, "SELECT state FROM allocations WHERE node = 'b'")}
            assert b_states <= {"stopped", "failed"}, b_states

            shell.run("cleanup", substituted(steps["cleanup"]), 120.0)
            assert not (home / "rhone-a").exists() and not (home / "rhone-b").exists()
            import psycopg

            with psycopg.connect(pg.url, autocommit=True) as admin:  # the doc's cleanup dropped its database
                assert admin.execute("SELECT count(*) FROM pg_database WHERE datname = 'rhone'").fetchone() == (0,)
        finally:
            shell.close()
            _stop_everything(environ, store_url)

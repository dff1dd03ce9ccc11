"""A runtime that keeps state, end to end: the real `rhone` against a real Rhone Local, real apps (a standard-library
server, a `websockets` server, gunicorn serving Flask) and real clients through the edge.

Drains: a WebSocket held across three promotions, a streaming answer and an in-flight request held across one, kill -9
of Rhone Local while an allocation drains. Data: a provisioned database counted across releases, preview and
production apart. Healing: kill -9 and SIGSTOP of instances, a crash loop, `local up` at the desired count. Lanes:
`deploy --env production` and concurrent deploys. Logs: `rhone logs`, `-f`.

The apps run under this test's Python (it has websockets, gunicorn and flask), named by absolute path in `start`.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import RHONE_BIN, SIGNALLED_CHILD
from tests.e2e.helpers import processes_under, set_version, wait_until

PRODUCTION_HOST = "shop--production.localhost"
PYTHON = sys.executable


def sandbox_ro(*paths: Path) -> tuple[str, ...]:
    """`rhone local up` options exposing, read-only, what these apps run on inside the sandbox: the test's Python
    environment (gunicorn, flask, websockets are installed there, not in the system's directories) and `paths` —
    an operator's toolchain, as `--sandbox-ro` is meant for. Nothing of the data directory."""
    exposed = {sys.prefix, sys.base_prefix, *(str(p) for p in paths)}
    return tuple(arg for path in sorted(exposed) for arg in ("--sandbox-ro", path))


@pytest.fixture
def local(local_env, tmp_path):
    """A running Rhone Local whose sandbox sees the test's Python and the apps' flag directory (`flags`)."""
    (tmp_path / "flags").mkdir()
    local_env.up_options = sandbox_ro(tmp_path / "flags")
    result = local_env.up()
    assert result.exit_code == 0, result.stderr
    return local_env


APP = textwrap.dedent(
    """\
    import json, os, sqlite3, sys, time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    VERSION = "1"
    CRASH_FLAG = "@CRASH_FLAG@"
    STREAM_END_FLAG = "@STREAM_END_FLAG@"
    if os.path.exists(CRASH_FLAG):
        print("crash flag present: exiting", flush=True)
        sys.exit(2)


    def count():
        path = os.environ["DATABASE_URL"].removeprefix("sqlite:///")
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE IF NOT EXISTS visits (n INTEGER)")
            db.execute("INSERT INTO visits VALUES (1)")
            return db.execute("SELECT COUNT(*) FROM visits").fetchone()[0]


    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _json(self, body):
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/stream":
                self.send_response(200)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                index = 0
                while True:  # until the test says it has seen what it waits for (the flag), a chunk every 0.1 s
                    ending = os.path.exists(STREAM_END_FLAG)
                    chunk = (f"chunk {index}" if not ending else "end").encode() + b"\\n"
                    self.wfile.write(b"%x\\r\\n%s\\r\\n" % (len(chunk), chunk))
                    self.wfile.flush()
                    if ending:
                        break
                    index += 1
                    time.sleep(0.1)
                self.wfile.write(b"0\\r\\n\\r\\n")
                return
            if self.path == "/count":
                return self._json({"count": count(), "version": VERSION})
            env = os.environ
            self._json({"version": VERSION, "deployment": env["RHONE_DEPLOYMENT_ID"],
                        "allocation": env["RHONE_ALLOCATION_ID"], "environment": env["RHONE_ENVIRONMENT"]})

        def log_message(self, format, *args):
            print(f"{self.command} {self.path} v{VERSION}", flush=True)


    print(f"app v{VERSION} on {os.environ['PORT']}", flush=True)
    ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
    """
)
WS_APP = textwrap.dedent(
    """\
    import asyncio, os, signal
    from websockets.asyncio.server import serve

    VERSION = "1"

    async def echo(websocket):
        async for message in websocket:
            await websocket.send(f"v{VERSION}: {message}")

    async def main():
        stop = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set_result, None)
        async with serve(echo, "127.0.0.1", int(os.environ["PORT"])):
            print(f"websocket v{VERSION} listening", flush=True)
            await stop

    asyncio.run(main())
    """
)
FLASK_APP = textwrap.dedent(
    """\
    import os, time
    from flask import Flask

    VERSION = "1"
    app = Flask(__name__)

    @app.get("/healthz")
    def health():
        return "ok"

    @app.get("/slow")
    def slow():
        print("slow request in", flush=True)
        time.sleep(2)
        return {"version": VERSION, "allocation": os.environ["RHONE_ALLOCATION_ID"]}
    """
)


# -- helpers ---------------------------------------------------------------------------------------------------------
def app_tree(root: Path, *, source: str = APP, start: str | None = None, process: str = "", extra: str = "") -> Path:
    app_dir = root / "shop"
    app_dir.mkdir(exist_ok=True)
    flags = root / "flags"
    source = source.replace("@STREAM_END_FLAG@", str(flags / "stream-end"))
    (app_dir / "app.py").write_text(source.replace("@CRASH_FLAG@", str(flags / "crash")))
    start = start or f"{PYTHON} app.py"
    (app_dir / "rhone.toml").write_text(
        f'[project]\nname = "shop"\n\n[app]\nname = "shop"\n\n[process]\nstart = {json.dumps(start)}\n'
        f'health_path = "/healthz"\nreadiness_timeout = 30\n{process}\n\n[runtime]\nserver_sessions = false\n{extra}'
    )
    return app_dir


def ok(server, app_dir: Path, *args: str, timeout: float = 120) -> dict:
    result = server.rhone(*args, "--json", cwd=app_dir, timeout=timeout)
    assert result.exit_code == 0, (args, result.stdout, result.stderr)
    return result.json()


def deploy_promote(server, app_dir: Path) -> dict:
    document = ok(server, app_dir, "deploy", "--promote")
    assert document["promotion"]["state"] == "healthy", document
    return document


def edge(server, path: str = "/", host: str = PRODUCTION_HOST, timeout: float = 10) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{server.edge_port}{path}", headers={"Host": host}, timeout=timeout)


def serving(server, path: str = "/") -> dict | None:
    try:
        answer = edge(server, path, timeout=30)
    except httpx.HTTPError:
        return None
    return answer.json() if answer.status_code == 200 else None


def allocations(server, app_dir: Path, *extra: str) -> list[dict]:
    return ok(server, app_dir, "app", "allocations", "--env", "production", *extra)


def allocation(server, app_dir: Path, alloc_id: str) -> dict:
    return next(a for a in allocations(server, app_dir, "--all") if a["id"] == alloc_id)


def ended(server, app_dir: Path, alloc_id: str, timeout: float = 30) -> dict:
    return wait_until(
        lambda: (a := allocation(server, app_dir, alloc_id))["state"] in ("stopped", "failed") and a, timeout, 0.2
    )


def owner_allocation(server, app_dir: Path) -> dict:
    [alloc] = [a for a in allocations(server, app_dir) if a["route_owner"] and a["state"] == "ready"]
    return alloc


def db_allocation(server, alloc_id: str) -> dict:
    with sqlite3.connect(server.data_dir / "rhone.db") as db:
        db.row_factory = sqlite3.Row
        return dict(db.execute("SELECT * FROM allocations WHERE id = ?", (alloc_id,)).fetchone())


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


async def websocket_session(server, opened: threading.Event, release: threading.Event, echoes: list[str]) -> None:
    from websockets.asyncio.client import connect

    # The URI names the route (the Host header); the connection goes to the edge on loopback.
    uri = f"ws://{PRODUCTION_HOST}:{server.edge_port}/"
    async with connect(uri, host="127.0.0.1", port=server.edge_port, open_timeout=10) as websocket:
        await websocket.send("hello")
        echoes.append(await websocket.recv())
        opened.set()
        while not release.is_set():
            await asyncio.sleep(0.1)
        await websocket.send("still there")
        echoes.append(await websocket.recv())


def in_thread(coroutine_factory) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(coroutine_factory())
        except BaseException as error:  # noqa: BLE001 - reported by the test
            errors.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, errors


# -- drains -----------------------------------------------------------------------------------------------------------
def test_a_websocket_stays_open_on_the_first_owner_across_three_promotions(local, tmp_path):
    """`websockets` answers a plain GET with 426: it passes `readiness = "tcp"`. The first owner keeps its socket
    through three promotions, reported as draining with one open connection; it ends drained once the client
    closes; the owners in between had nothing open and ended drained at once."""
    app_dir = app_tree(tmp_path, source=WS_APP, process='readiness = "tcp"\ndrain_timeout = 600')
    ok(local, app_dir, "init", "--link")
    first = deploy_promote(local, app_dir)["deployment"]
    first_alloc = owner_allocation(local, app_dir)
    opened, release, echoes = threading.Event(), threading.Event(), []
    thread, errors = in_thread(lambda: websocket_session(local, opened, release, echoes))
    assert opened.wait(15), errors
    assert echoes == ["v1: hello"]

    owners = []
    for version in ("2", "3", "4"):
        set_version(app_dir, version)
        result = local.rhone("deploy", "--promote", cwd=app_dir, timeout=120)
        assert result.exit_code == 0, result.stderr
        owners.append(owner_allocation(local, app_dir))
        if version == "2":  # the first owner's drain as the promotion reported it: truthful, not "(drained)"
            assert f"{first['id']} (draining 1 allocation(s) with 1 open connection(s)" in result.stdout
            assert "(drained)" not in result.stdout
    draining = allocation(local, app_dir, first_alloc["id"])
    assert draining["state"] == "draining" and draining["health"]["drain"]["open_connections"] == 1
    for between in owners[:2]:  # nothing was open on them: drained and stopped on their own
        assert ended(local, app_dir, between["id"])["health"]["drain"]["outcome"] == "drained"
    assert alive(first_alloc_pid := db_allocation(local, first_alloc["id"])["pid"])

    release.set()
    thread.join(15)
    assert not errors, errors
    assert echoes == ["v1: hello", "v1: still there"]  # the same connection, the same (first) owner
    final = ended(local, app_dir, first_alloc["id"])
    assert final["state"] == "stopped"
    assert (final["health"]["drain"]["outcome"], final["health"]["drain"]["cut_connections"]) == ("drained", 0)
    assert wait_until(lambda: not alive(first_alloc_pid), 60)


def test_a_stream_and_an_in_flight_request_finish_across_a_promotion(local, tmp_path):
    app_dir = app_tree(tmp_path)
    ok(local, app_dir, "init", "--link")
    deploy_promote(local, app_dir)
    old = owner_allocation(local, app_dir)
    chunks: list[str] = []

    def stream() -> None:
        with httpx.stream("GET", f"http://127.0.0.1:{local.edge_port}/stream", headers={"Host": PRODUCTION_HOST},
                          timeout=30) as response:  # fmt: skip
            for line in response.iter_lines():
                chunks.append(line)

    set_version(app_dir, "2")
    candidate = ok(local, app_dir, "deploy")
    reader = threading.Thread(target=stream)
    reader.start()
    assert wait_until(lambda: chunks, 60)
    ok(local, app_dir, "promote", candidate["id"])  # returns while the stream still runs on the old owner
    # The stream ends only when the flag says so: still open now, however long the promotion took.
    assert "end" not in chunks and serving(local)["version"] == "2"
    (tmp_path / "flags" / "stream-end").write_text("")
    reader.join(30)
    assert not reader.is_alive() and chunks[-1] == "end"
    assert chunks[:-1] == [f"chunk {i}" for i in range(len(chunks) - 1)] and len(chunks) > 1
    assert ended(local, app_dir, old["id"])["health"]["drain"]["outcome"] == "drained"


def test_gunicorn_finishes_an_in_flight_request_when_the_route_moves(local, tmp_path):
    """A start command with shell syntax ($PORT) is exec'd by the shell: SIGTERM reaches gunicorn, whose workers
    finish what they serve. The in-flight request answers 200 from the old owner."""
    start = f"{Path(PYTHON).parent / 'gunicorn'} -w 2 -b 127.0.0.1:$PORT app:app"
    app_dir = app_tree(tmp_path, source=FLASK_APP, start=start)
    ok(local, app_dir, "init", "--link")
    deploy_promote(local, app_dir)
    old = owner_allocation(local, app_dir)
    set_version(app_dir, "2")
    candidate = ok(local, app_dir, "deploy")
    answers: list[httpx.Response] = []
    request = threading.Thread(target=lambda: answers.append(edge(local, "/slow", timeout=30)))
    request.start()
    # The request is inside the app (it sleeps 2 s there) before the route moves: the app says so in its log.
    log = local.data_dir / "allocations" / old["id"] / "alloc.log"
    assert wait_until(lambda: "slow request in" in log.read_text(), timeout=60), log.read_text()
    ok(local, app_dir, "promote", candidate["id"])
    request.join(30)
    assert answers[0].status_code == 200 and answers[0].json() == {"version": "1", "allocation": old["id"]}
    final = ended(local, app_dir, old["id"])
    assert final["state"] == "stopped" and final["health"]["drain"]["outcome"] == "drained"
    assert not [cmd for cmd in processes_under(local.data_dir / "allocations" / old["id"]).values()]


def test_kill_9_of_rhone_local_while_an_allocation_drains(local, tmp_path):
    """The drain's deadline is on the allocation: the restarted server (whose edge lost every connection) stops it,
    and nothing of it is left running."""
    app_dir = app_tree(tmp_path, source=WS_APP, process='readiness = "tcp"\ndrain_timeout = 600')
    ok(local, app_dir, "init", "--link")
    deploy_promote(local, app_dir)
    old = owner_allocation(local, app_dir)
    opened, release, echoes = threading.Event(), threading.Event(), []
    thread, _ = in_thread(lambda: websocket_session(local, opened, release, echoes))
    assert opened.wait(15)
    set_version(app_dir, "2")
    deploy_promote(local, app_dir)
    assert allocation(local, app_dir, old["id"])["state"] == "draining"
    old_pid = db_allocation(local, old["id"])["pid"]
    new_owner = owner_allocation(local, app_dir)
    os.kill(local.pid(), signal.SIGKILL)
    assert wait_until(lambda: not alive(local.pid()), 60)
    release.set()
    thread.join(15)
    assert alive(old_pid)  # the app outlived the server: the restart must finish its drain
    assert local.up().exit_code == 0
    final = ended(local, app_dir, old["id"])
    assert final["state"] == "stopped"
    assert wait_until(lambda: not alive(old_pid), 60)
    assert owner_allocation(local, app_dir)["id"] == new_owner["id"]  # the new owner was adopted, untouched


# -- data -------------------------------------------------------------------------------------------------------------
def test_data_survives_releases_rollback_restart_and_scale_and_lanes_stay_apart(local, tmp_path):
    app_dir = app_tree(tmp_path, extra='\n[providers.db]\nkind = "sqlite"\nsecrets = ["DATABASE_URL"]\n')
    ok(local, app_dir, "init", "--link")
    for env in ("preview", "production"):
        ok(local, app_dir, "env", "bind", env, "db", "--kind", "sqlite", "--provision")
    # Bad input through the real CLI: the documented exit codes, and nothing bound twice.
    twice = local.rhone("env", "bind", "preview", "db", "--kind", "sqlite", "--provision", "--json", cwd=app_dir)
    assert (twice.exit_code, twice.json()["error"]["code"]) == (5, "binding_exists")
    neither = local.rhone("env", "bind", "preview", "db", "--kind", "sqlite", "--json", cwd=app_dir)
    assert (neither.exit_code, neither.json()["error"]["code"]) == (2, "usage_error")
    counts = []
    deploy_promote(local, app_dir)
    counts += [serving(local, "/count")["count"] for _ in range(2)]
    for version in ("2", "3"):
        set_version(app_dir, version)
        deploy_promote(local, app_dir)
        counts.append(serving(local, "/count")["count"])
    ok(local, app_dir, "rollback")
    counts.append(serving(local, "/count")["count"])
    ok(local, app_dir, "app", "scale", "--env", "production", "--instances", "2")
    counts += [serving(local, "/count")["count"] for _ in range(2)]
    assert local.rhone("local", "down").exit_code == 0
    assert local.up().exit_code == 0
    counts.append(wait_until(lambda: serving(local, "/count"), 30)["count"])
    assert counts == list(range(1, 9)), counts
    # Preview has a database of its own: the newest preview counts from 1.
    preview = ok(local, app_dir, "deploy")
    preview_host = preview["url"].split("//", 1)[1].split(":", 1)[0]
    assert edge(local, "/count", host=preview_host).json()["count"] == 1
    assert serving(local, "/count")["count"] == 9
    in_use = local.rhone("env", "unbind", "production", "db", "--delete-data", "--json", cwd=app_dir)
    assert (in_use.exit_code, in_use.json()["error"]["code"]) == (5, "data_in_use")
    assert serving(local, "/count")["count"] == 10  # nothing was deleted


# -- healing ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["kill -9", "SIGSTOP"])
def test_a_killed_or_stopped_instance_is_replaced_without_any_command(local, tmp_path, how):
    app_dir = app_tree(tmp_path)
    ok(local, app_dir, "init", "--link")
    deployment = deploy_promote(local, app_dir)["deployment"]
    victim = owner_allocation(local, app_dir)
    pid = db_allocation(local, victim["id"])["pid"]
    os.kill(pid, signal.SIGKILL if how == "kill -9" else signal.SIGSTOP)
    answer = wait_until(lambda: (s := serving(local)) and s["allocation"] != victim["id"] and s, 30, 0.1)
    assert answer["deployment"] == deployment["id"]
    gone = ended(local, app_dir, victim["id"])
    assert gone["state"] == "failed"
    assert ("liveness" in gone["health"]["error"]) == (how == "SIGSTOP")
    assert wait_until(lambda: not alive(pid), 60)  # a stopped process is killed too, never left behind
    assert [a["id"] for a in allocations(local, app_dir)] == [answer["allocation"]]


def test_a_crash_loop_backs_off_is_shown_and_heals(local, tmp_path):
    app_dir = app_tree(tmp_path)
    ok(local, app_dir, "init", "--link")
    deploy_promote(local, app_dir)
    victim = owner_allocation(local, app_dir)
    (tmp_path / "flags" / "crash").write_text("")  # from now on the app exits at once
    os.kill(db_allocation(local, victim["id"])["pid"], signal.SIGKILL)
    marked = wait_until(
        lambda: [a for a in allocations(local, app_dir) if (a["health"] or {}).get("crash_loop")], 60, 0.5
    )
    assert marked[0]["state"] == "failed" and marked[0]["health"]["crash_loop"]["failures"] >= 5
    human = local.rhone("app", "allocations", "--env", "production", cwd=app_dir)
    assert "crash loop" in human.stdout
    (tmp_path / "flags" / "crash").unlink()
    assert wait_until(lambda: serving(local), 90, 0.5)
    assert not [a for a in allocations(local, app_dir) if (a["health"] or {}).get("crash_loop")]


def test_local_up_restores_every_environment_at_its_instance_count(local, tmp_path):
    app_dir = app_tree(tmp_path)
    ok(local, app_dir, "init", "--link")
    deploy_promote(local, app_dir)
    ok(local, app_dir, "app", "scale", "--env", "production", "--instances", "2")
    assert local.rhone("local", "down").exit_code == 0
    assert not processes_under(local.data_dir / "allocations")
    assert local.up().exit_code == 0
    ready = wait_until(
        lambda: len(r := [a for a in allocations(local, app_dir) if a["state"] == "ready"]) == 2 and r, 30, 0.2
    )
    assert all(a["route_owner"] for a in ready)


# -- lanes ------------------------------------------------------------------------------------------------------------
def test_deploy_to_production_without_promotion_never_touches_the_route_owner(local, tmp_path):
    app_dir = app_tree(tmp_path)
    ok(local, app_dir, "init", "--link")
    deploy_promote(local, app_dir)
    owner = owner_allocation(local, app_dir)
    owner_pid = db_allocation(local, owner["id"])["pid"]
    set_version(app_dir, "2")
    candidate = ok(local, app_dir, "deploy", "--env", "production")
    assert candidate["state"] == "preview_ready"
    assert allocation(local, app_dir, owner["id"])["state"] == "ready" and alive(owner_pid)
    for _ in range(5):
        assert serving(local)["version"] == "1"
    route = ok(local, app_dir, "route", "show", "production")
    assert route["deployment_id"] == owner["deployment_id"]


def test_concurrent_deploys_of_one_app_never_fail_each_other(local, tmp_path):
    """Both validate at once (each app takes a second to listen): the newer one becoming ready never stops the older
    one still validating."""
    slow = APP.replace('print(f"app v{VERSION}', 'time.sleep(1.5); print(f"app v{VERSION}')
    app_dir = app_tree(tmp_path, source=slow)
    ok(local, app_dir, "init", "--link")
    environ = {**local.environ}
    runs = [
        subprocess.Popen([str(RHONE_BIN), "deploy", "--json"], cwd=app_dir, env=environ, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]  # fmt: skip
    results = [run.communicate(timeout=120) for run in runs]
    assert [run.returncode for run in runs] == [0, 0, 0], results
    assert {json.loads(out)["state"] for out, _ in results} == {"preview_ready"}


# -- logs -------------------------------------------------------------------------------------------------------------
def test_logs_show_every_allocation_and_follow_until_ctrl_c(local, tmp_path):
    app_dir = app_tree(tmp_path)
    ok(local, app_dir, "init", "--link")
    deployment = deploy_promote(local, app_dir)["deployment"]
    owner = owner_allocation(local, app_dir)
    serving(local, "/")
    logged = local.rhone("logs", deployment["id"], cwd=app_dir)
    assert logged.exit_code == 0, logged.stderr
    assert f"{owner['id']} | app v1 on" in logged.stdout and f"{owner['id']} | GET / v1" in logged.stdout
    follower = subprocess.Popen(
        [str(RHONE_BIN), "logs", "--env", "production", "-f"], cwd=app_dir, env=local.environ, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, **SIGNALLED_CHILD,
    )  # fmt: skip
    try:
        time.sleep(1)
        edge(local, "/followed")
        seen = []

        def read() -> None:
            for line in follower.stdout:
                seen.append(line)
                if "/followed" in line:
                    return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(30)
        assert any(f"{owner['id']} | GET /followed v1" in line for line in seen), seen
    finally:
        follower.send_signal(signal.SIGINT)
        _, err = follower.communicate(timeout=30)
    assert follower.returncode == 0, err
    refused = local.rhone("logs", "--since", "soon", "--json", cwd=app_dir)
    assert refused.exit_code == 2 and refused.json()["error"]["code"] == "usage_error"


PG_APP = APP.replace(
    'path = os.environ["DATABASE_URL"].removeprefix("sqlite:///")\n    with sqlite3.connect(path) as db:',
    'import psycopg\n    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as db:',
)


def test_postgres_app_databases_through_local_up(local_env, tmp_path, postgres):
    """`rhone local up --app-databases URL`: the server learns the URL from its environment (its password never in
    `ps`), provisions production's PostgreSQL database, and the app counts in it across releases."""
    assert PG_APP != APP
    up = local_env.rhone(
        "local", "up", "--port", str(local_env.port), "--edge-port", str(local_env.edge_port), "--app-databases",
        postgres, "--json", *sandbox_ro(Path(postgres.rsplit("host=", 1)[1])),
    )  # fmt: skip
    assert up.exit_code == 0, up.stderr
    local_env.started.append(up.json()["pid"])
    assert b"admin-secret" not in Path(f"/proc/{local_env.pid()}/cmdline").read_bytes()
    provider = '\n[providers.db]\nkind = "postgres"\nsecrets = ["DATABASE_URL"]\n'
    app_dir = app_tree(tmp_path, source=PG_APP, extra=provider)
    ok(local_env, app_dir, "init", "--link")
    bound = ok(local_env, app_dir, "env", "bind", "production", "db", "--kind", "postgres", "--provision")
    assert bound["state"] == "ready" and bound["secrets"] == ["DATABASE_URL"] and "admin-secret" not in str(bound)
    ok(local_env, app_dir, "env", "bind", "preview", "db", "--kind", "postgres", "--provision")
    deploy_promote(local_env, app_dir)
    first = serving(local_env, "/count")["count"]
    set_version(app_dir, "2")
    deploy_promote(local_env, app_dir)
    assert (first, serving(local_env, "/count")["count"]) == (1, 2)

"""Rhone Local end to end: the real `rhone` against the real server, started by `rhone local up`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from tests.conftest import assert_matches_schema


def test_up_bootstraps_writes_the_local_profile_and_is_idempotent(local):
    status = local.json("local", "status")
    assert_matches_schema(status, "local-status.schema.json")
    assert status["running"] and status["api_url"] == local.api_url
    me = local.json("whoami")
    assert_matches_schema(me, "auth-status.schema.json")
    assert me["profile"] == "local" and me["workspace"] == "local"
    assert me["identity"]["kind"] == "user"
    assert {"name": "local", "role": "owner"}.items() <= me["identity"]["workspaces"][0].items()
    again = local.up()
    assert again.exit_code == 0
    assert again.json()["started"] is False and again.json()["pid"] == status["pid"]
    assert local.owner_token() not in again.stdout + again.stderr


def test_stopped_server_is_exit_8_naming_the_url(local):
    assert local.rhone("local", "down").exit_code == 0
    result = local.rhone("project", "ls")
    assert result.exit_code == 8
    assert local.api_url in result.stderr
    as_json = local.rhone("project", "ls", "--json")
    assert as_json.exit_code == 8
    assert as_json.json()["error"]["code"] == "api_unreachable"
    assert local.json("local", "status")["running"] is False


def test_data_survives_a_restart(local):
    local.json("project", "create", "keep")
    down = local.json("local", "down")
    assert down["was_running"] and down["stopped"]
    assert local.up().exit_code == 0
    assert [p["name"] for p in local.json("project", "ls")] == ["keep"]


def test_logs(local):
    result = local.rhone("local", "logs", "-n", "50")
    assert result.exit_code == 0
    assert "listening on http://127.0.0.1" in result.stdout


def test_up_on_port_0_reports_the_ports_the_server_got(local):
    state = json.loads((local.data_dir / "server.json").read_text())
    assert state["port"] > 0 and state["edge_port"] > 0 and state["port"] != state["edge_port"]
    assert state["api_url"] == f"http://127.0.0.1:{state['port']}"
    status = local.json("local", "status")
    assert (status["api_url"], status["edge_port"]) == (state["api_url"], state["edge_port"])
    assert httpx.get(f"{state['api_url']}/v1/health", timeout=10).status_code == 200
    edge = httpx.get(f"http://127.0.0.1:{state['edge_port']}/", headers={"Host": "nowhere.localhost"}, timeout=10)
    assert edge.status_code == 404
    assert [p.name for p in local.data_dir.iterdir() if p.name.startswith(".server.json")] == []  # written atomically


def test_port_in_use_is_a_clear_error_and_starts_nothing(local_env):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        result = local_env.rhone("local", "up", "--port", str(taken), "--edge-port", "0", "--json")
    assert result.exit_code == 5
    assert result.json()["error"]["code"] == "port_in_use"
    assert str(taken) in result.json()["error"]["message"]
    assert local_env.pid() is None


@pytest.mark.parametrize("flag", ["--port", "--edge-port"])
def test_the_server_refuses_a_port_taken_after_the_cli_checked_it(local_env, flag):
    """The CLI's check and the server's bind are apart in time: the server's own bind is what decides, and a taken
    port refuses the start (status 3, port_in_use) with nothing reported in server.json."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        ports = {"--port": "0", "--edge-port": "0", flag: str(squatter.getsockname()[1])}
        command = [sys.executable, "-P", "-m", "rhone_local", "serve", "--data-dir", str(local_env.data_dir)]
        command += [*(item for pair in ports.items() for item in pair), "--sandbox", "none"]
        server = subprocess.run(
            command, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, restore_signals=True
        )
    assert server.returncode == 3, server.stderr
    assert f"error [port_in_use]: cannot listen on 127.0.0.1:{ports[flag]} for {flag}" in server.stderr
    assert "Traceback" not in server.stderr
    assert not (local_env.data_dir / "server.json").exists()


def test_stale_pid_file_is_detected_and_cleared(local_env):
    dead = subprocess.Popen(["true"])
    dead.wait()
    local_env.data_dir.mkdir(parents=True)
    (local_env.data_dir / "rhone-local.pid").write_text(f"{dead.pid}\n")
    result = local_env.up()
    assert result.exit_code == 0, result.stderr
    assert "stale pid file" in result.stderr
    assert local_env.pid() != dead.pid


def test_kill_9_mid_flight_then_up_finishes_every_operation_without_duplicates(local_env):
    # Slow stages (1 s each, two workers) so the server dies with operations between stages.
    assert local_env.up(environ={"RHONE_LOCAL_STAGE_DELAY": "1.0"}).exit_code == 0
    owner = {"Authorization": f"Bearer {local_env.owner_token()}"}
    names = [f"p{i}" for i in range(6)]
    op_ids = []
    for name in names:  # straight HTTP: six CLI start-ups would let the workers finish first
        response = httpx.post(
            f"{local_env.api_url}/v1/workspaces/local/projects",
            json={"name": name},
            headers={**owner, "Idempotency-Key": f"crash-{name}"},
            timeout=10,
        )
        assert response.status_code == 202
        op_ids.append(response.json()["id"])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # straight HTTP again: a CLI poll could take longer than every stage
        listed = httpx.get(f"{local_env.api_url}/v1/workspaces/local/operations", headers=owner, timeout=10)
        states = [op["state"] for op in listed.json()["items"]]
        if any(state in ("validating", "applying") for state in states):
            break
    os.kill(local_env.pid(), signal.SIGKILL)
    assert not all(state == "succeeded" for state in states), "nothing was in flight; the test proves nothing"

    restarted = local_env.up()
    assert restarted.exit_code == 0, restarted.stderr
    assert "stale pid file" in restarted.stderr
    for op_id in op_ids:
        waited = local_env.rhone("op", "wait", op_id, "--wait-timeout", "30", "--json")
        assert waited.exit_code == 0, waited.stdout
        assert [s["state"] for s in waited.json()["stages"]] == ["queued", "validating", "applying", "succeeded"]
    projects = local_env.json("project", "ls")
    assert sorted(p["name"] for p in projects) == names
    assert len({p["id"] for p in projects}) == len(names)
    # A retry of a request made before the crash attaches to its original operation.
    replay = httpx.post(
        f"{local_env.api_url}/v1/workspaces/local/projects",
        json={"name": "p0"},
        headers={**owner, "Idempotency-Key": "crash-p0"},
        timeout=10,
    )
    assert replay.status_code == 202 and replay.json()["id"] == op_ids[0]


def test_up_with_other_ports_while_running_is_a_conflict_not_a_success(local):
    pid = local.pid()
    from tests.netservers import refusing_port

    with refusing_port() as other:
        result = local.rhone("local", "up", "--port", str(other), "--json")
    assert result.exit_code == 5, result.stdout
    error = result.json()["error"]
    assert error["code"] == "local_running_elsewhere"
    assert f"already running at {local.api_url}" in error["message"] and f"--port {other}" in error["message"]
    assert "rhone local down" in error["hint"]
    same = local.rhone("local", "up", "--port", str(local.port), "--edge-port", str(local.edge_port), "--json")
    assert same.exit_code == 0 and same.json()["started"] is False
    bare = local.rhone("local", "up", "--json")
    assert bare.exit_code == 0 and bare.json()["api_url"] == local.api_url
    any_ports = local.rhone("local", "up", "--port", "0", "--edge-port", "0", "--json")  # any port: the ones it has
    assert any_ports.exit_code == 0 and (any_ports.json()["started"], any_ports.json()["pid"]) == (False, pid)


def test_up_and_commands_work_with_a_proxy_set_for_everything(local_env):
    """HTTP_PROXY/HTTPS_PROXY/ALL_PROXY pointing at a proxy that refuses (as a corporate proxy does for loopback)
    used to make `rhone local up` wait 30 s and fail: loopback never goes through a proxy."""
    from tests.netservers import refusing_port

    with refusing_port() as dead:
        proxy = f"http://127.0.0.1:{dead}"
        environ = {name: proxy for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "ALL_PROXY", "all_proxy")}
        up = local_env.up(environ=environ)
        assert up.exit_code == 0, up.stderr  # was exit 7: "did not become healthy" (its health checks hit the proxy)
        assert local_env.rhone("project", "create", "shop", environ=environ).exit_code == 0


def test_up_from_a_directory_with_a_rhone_local_package_runs_the_installed_server(local_env):
    """`python -m rhone_local` puts the current directory first on sys.path: a `rhone_local/` there (another
    checkout, an untrusted project) would have been the server that ran."""
    impostor = local_env.cwd / "rhone_local"
    impostor.mkdir()
    marker = local_env.cwd / "impostor-ran"
    (impostor / "__init__.py").write_text("")
    (impostor / "__main__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")

    result = local_env.up()

    assert result.exit_code == 0, result.stderr
    assert not marker.exists()
    assert local_env.json("local", "status")["running"] is True

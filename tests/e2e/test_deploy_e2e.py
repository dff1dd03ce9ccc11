"""`rhone deploy` end to end: the real `rhone` against a real Rhone Local (started by `rhone local up`), deploying
copies of examples/hello through the real pipeline, runner and edge.

Every failure case asserts the exact exit code and error code, and that nothing was half-created: no deployment row
for a refused request, no allocation for a failed build or a gate that said no, no process left behind.
"""

from __future__ import annotations

import hashlib
import json
import queue
import shlex
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from rhone_cli.services.local import process_alive
from tests.conftest import REPO, RHONE_BIN, SIGNALLED_CHILD, assert_matches_schema
from tests.e2e.helpers import db_rows, hello_app, linked, processes_under, wait_until

HELLO = REPO / "examples" / "hello"
GATES = {"generated_artifacts", "state_impact", "db_impact", "providers_bound"}


# -- helpers ---------------------------------------------------------------------------------------------------------


def deploy(server, app_dir: Path, *args: str, timeout: float = 60):
    return server.rhone("deploy", *args, cwd=app_dir, timeout=timeout)


def deployments(server, app_dir: Path) -> list[dict]:
    return server.json("deploy", "ls", cwd=app_dir)


def edge_get(server, url: str, path: str = "/") -> httpx.Response:
    """Python cannot resolve *.localhost here: connect to the edge, name the deployment in the Host header."""
    return httpx.get(f"http://127.0.0.1:{server.edge_port}{path}", headers={"Host": urlsplit(url).netloc}, timeout=10)


def allocation_rows(server, deployment_id: str) -> list[dict]:
    return db_rows(server, "SELECT * FROM allocations WHERE deployment_id = ? ORDER BY id", deployment_id)


def failed_deploy(server, app_dir: Path, code: str) -> dict:
    """`rhone deploy --json` that must end `failed` with `code`: exit 1; returns the error document."""
    result = deploy(server, app_dir, "--json")
    assert result.exit_code == 1, (result.stdout, result.stderr)
    error = result.json()["error"]
    assert error["code"] == code, error
    assert error["exit_code"] == 1 and error["operation_id"].startswith("op_")
    assert f"rhone op show {error['operation_id']}" in error["hint"]
    assert f"rhone deploy logs {error['details']['deployment_id']}" in error["hint"]  # where the output is
    return error


def assert_failed_without_allocation(server, app_dir: Path, error: dict) -> dict:
    rows = deployments(server, app_dir)
    assert len(rows) == 1
    deployment = rows[0]
    assert deployment["id"] == error["details"]["deployment_id"]
    assert deployment["state"] == "failed"
    assert deployment["allocations"] == [] and allocation_rows(server, deployment["id"]) == []
    op = server.json("op", "show", error["operation_id"])
    assert op["state"] == "failed" and op["error"]["code"] == error["code"]
    assert "preview_ready" not in [s["state"] for s in op["stages"]]
    return deployment


# -- the happy path ----------------------------------------------------------------------------------------------------
def test_hello_deploys_answers_through_the_edge_and_a_redeploy_supersedes_it(local, tmp_path):
    app_dir = linked(local, hello_app(tmp_path))
    result = deploy(local, app_dir, "--json")
    assert result.exit_code == 0, result.stderr
    first = result.json()
    assert_matches_schema(first, "deployment.schema.json")
    assert first["state"] == "preview_ready" and first["environment"] == "preview"
    gates = {g["gate"]: g for g in first["evidence"]["gates"]}
    assert set(gates) == GATES and all(g["outcome"] == "pass" for g in gates.values())
    assert first["artifact_digest"].startswith("sha256:")
    assert first["url"] == f"http://dep-{first['id'].removeprefix('dep_')}.localhost:{local.edge_port}"
    assert [a["state"] for a in first["allocations"]] == ["ready"]
    assert f"rhone op wait {first['operation_id']}" in result.stderr  # the resume handle went out first

    answer = edge_get(local, first["url"])
    assert answer.status_code == 200
    assert answer.json() == {
        "app": "hello",
        "message": "Hello from Rhone!",
        "version": "1.0.0",
        "deployment": first["id"],
        "allocation": first["allocations"][0]["id"],
        "environment": "preview",
    }
    assert edge_get(local, first["url"], "/healthz").json() == {"status": "ok"}
    # Unknown hosts: a deployment that does not exist, and a name that is not a deployment at all.
    assert edge_get(local, f"http://dep-1a21bfa914d000062c56b00.localhost:{local.edge_port}").status_code == 404
    assert edge_get(local, f"http://nothing.localhost:{local.edge_port}").status_code == 404

    # A redeploy (human output): the preview URL, then state impact and db impact as two separate lines.
    human = deploy(local, app_dir)
    assert human.exit_code == 0, human.stderr
    lines = human.stdout.splitlines()
    assert lines[0].startswith("Preview: http://dep-")
    state_lines = [line for line in lines if line.strip().startswith("state impact:")]
    db_lines = [line for line in lines if line.strip().startswith("db impact:")]
    assert len(state_lines) == 1 and len(db_lines) == 1
    assert "db impact" not in state_lines[0] and "state impact" not in db_lines[0]
    assert state_lines[0].split(":", 1)[1].strip() == gates["state_impact"]["summary"]
    assert db_lines[0].split(":", 1)[1].strip() == gates["db_impact"]["summary"]
    second_url = lines[0].removeprefix("Preview: ").strip()
    rows = deployments(local, app_dir)  # newest first
    assert len(rows) == 2 and rows[1]["id"] == first["id"]
    second = rows[0]
    assert second["url"] == second_url and second["state"] == "preview_ready"

    # The old URL is 503 — never the new deployment's answer; the new one answers as itself.
    old = edge_get(local, first["url"])
    assert old.status_code == 503
    assert second["id"] not in old.text and "Hello from Rhone" not in old.text
    assert edge_get(local, second_url).json()["deployment"] == second["id"]
    # The superseded preview drains asynchronously (out of rotation at once, as the 503 shows; stopped once its drain
    # ends): CI once read it still `draining` right after the deploy returned.
    assert wait_until(lambda: [a["state"] for a in allocation_rows(local, first["id"])] == ["stopped"], timeout=60)
    old_allocations = allocation_rows(local, first["id"])
    assert not process_alive(old_allocations[0]["pid"])
    assert [a["state"] for a in allocation_rows(local, second["id"])] == ["ready"]


def test_deploy_with_its_own_output_redirected_into_the_project(local, tmp_path):
    """`rhone deploy --json > result.json 2>> ci.log` inside the project: both files are written while the command
    runs (ci.log grows between hashing and upload), so they are left out of the manifest, named in a warning, and the
    deploy succeeds (it ended in internal_error, "Too much data for declared Content-Length")."""
    from rhone_cli.artifacts.manifest import digest_of

    app_dir = hello_app(tmp_path)
    (app_dir / "ci.log").write_text("output of an earlier step\n")
    command = f"{shlex.quote(str(RHONE_BIN))} deploy --json > result.json 2>> ci.log"
    proc = subprocess.run(["sh", "-c", command], cwd=app_dir, env=local.environ, timeout=120)

    log = (app_dir / "ci.log").read_text()
    assert proc.returncode == 0, log
    doc = json.loads((app_dir / "result.json").read_text())
    assert doc["state"] == "preview_ready"
    assert "leaving ci.log out of the manifest: it is this command's stderr" in log
    assert "leaving result.json out of the manifest: it is this command's stdout" in log
    assert "internal_error" not in log
    listed = local.json("artifact", "manifest", cwd=app_dir)["manifest"]
    assert {"ci.log", "result.json"} <= {f["path"] for f in listed["files"]}
    kept = [f for f in listed["files"] if f["path"] not in ("ci.log", "result.json")]
    assert digest_of({"version": 1, "files": kept}) == doc["source_digest"]


def test_concurrent_first_deploys_of_a_new_app_all_succeed_with_one_app(local, tmp_path):
    """Four checkouts of a new app deploy at once: each finds the project and app missing and creates them; the ones
    that lose the race use what the winner created (this used to fail intermittently with name_taken)."""
    dirs = [hello_app(tmp_path / f"checkout{i}") for i in range(4)]
    procs = [
        subprocess.Popen(
            [str(RHONE_BIN), "deploy", "--no-wait", "--json"],
            cwd=app_dir,
            env=local.environ,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for app_dir in dirs
    ]
    results = [proc.communicate(timeout=120) for proc in procs]

    for proc, (stdout, stderr) in zip(procs, results, strict=True):
        assert proc.returncode == 0, (stdout, stderr)
        assert json.loads(stdout)["kind"] == "deploy"
    assert [p["name"] for p in local.json("project", "ls")] == ["hello"]
    assert [a["name"] for a in local.json("app", "ls", "-p", "hello")] == ["hello"]
    assert len(deployments(local, dirs[0])) == 4


def test_op_wait_after_an_interrupted_deploy_prints_the_deploys_result(local, tmp_path):
    app_dir = hello_app(tmp_path)
    started = deploy(local, app_dir, "--no-wait", "--json")
    assert started.exit_code == 0, started.stderr
    op_id = started.json()["id"]

    waited = local.rhone("op", "wait", op_id, cwd=app_dir)
    assert waited.exit_code == 0, waited.stderr
    lines = waited.stdout.splitlines()
    assert lines[0].startswith("Preview: http://dep-")
    assert any(line.strip().startswith("state impact:") for line in lines)
    as_json = local.rhone("op", "wait", op_id, "--json", cwd=app_dir)  # the document stays the operation
    assert_matches_schema(as_json.json(), "operation.schema.json")
    assert as_json.json()["state"] == "preview_ready" and as_json.json()["id"] == op_id


def test_build_output_cannot_drive_the_terminal(local, tmp_path):
    """A build that clears the screen, retitles the window, sets the clipboard (OSC 52) and overwrites lines with
    carriage returns, then fails: its log tail reaches the terminal as text."""
    script = (
        "import sys; sys.stdout.write('\\x1b[2J\\x1b]0;owned\\x07\\x1b]52;c;cm0gLXJmIH4=\\x07"
        "50%\\r100%\\n\\x1b[31mbuild broke\\x1b[0m\\x07\\n'); sys.exit(3)"
    )
    app_dir = hello_app(tmp_path, command="python3 escapes.py")
    (app_dir / "escapes.py").write_text(script)
    result = deploy(local, app_dir)
    assert result.exit_code == 1
    assert "build broke^G" in result.stderr and "50%" in result.stderr and "100%" in result.stderr
    for control in ("\x1b", "\x07", "\r"):
        assert control not in result.stderr
    deployment_id = deployments(local, app_dir)[0]["id"]
    logs = local.rhone("deploy", "logs", deployment_id, cwd=app_dir)
    assert "build broke" in logs.stdout and "\x1b" not in logs.stdout and "\x07" not in logs.stdout
    raw = local.rhone("deploy", "logs", deployment_id, "--json", cwd=app_dir).json()["build"]
    assert "\x1b]52;c;" in raw  # the record itself is kept exactly; only what reaches a terminal is made harmless


def test_live_progress_on_a_terminal_shows_every_stage_with_times(local, tmp_path):
    """In a real pseudo-terminal: a byte counter while uploading, then every stage of the operation with its duration,
    the running one with a spinner and its elapsed time, and the result block below."""
    import re

    import pexpect

    app_dir = hello_app(tmp_path, command="python3 -c 'import time; time.sleep(2)'")
    child = pexpect.spawn(
        str(RHONE_BIN),
        ["deploy"],
        cwd=str(app_dir),
        env={**local.environ, "TERM": "xterm-256color"},
        encoding="utf-8",
        timeout=120,
        dimensions=(50, 160),
    )
    child.expect(pexpect.EOF)
    child.close()
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", child.before)

    assert child.exitstatus == 0, screen
    assert re.search(r"uploading .*2\.\d/2\.\d kB", screen), screen  # the byte counter
    for stage in ("cloning", "building", "validating", "preview_ready"):
        assert re.search(rf"✓ {stage}\b", screen), (stage, screen)
    assert re.search(r"✓ building\s+[2-9]\.\ds", screen), screen  # the build took its two seconds
    assert re.search(r"deploy op_\w+: building\s+\d+\.\ds", screen), screen  # the spinner line while it ran
    assert "Preview: http://dep-" in screen


def test_redeploy_uploads_only_the_changed_file_and_nothing_when_unchanged(local, tmp_path):
    app_dir = linked(local, hello_app(tmp_path))
    manifest = local.json("artifact", "manifest", cwd=app_dir)

    def uploads(result) -> list[dict]:
        assert result.exit_code == 0, result.stderr
        events = [json.loads(line) for line in result.stderr.splitlines()]
        assert all(e["v"] == 1 for e in events)
        return [e for e in events if e["type"] == "upload"]

    first = uploads(local.rhone("--progress", "jsonl", "deploy", "--json", cwd=app_dir))
    assert len(first) == 1
    assert first[0]["blobs"] == manifest["file_count"] and first[0]["bytes"] == manifest["total_size"]

    source = app_dir / "app.py"
    source.write_text(source.read_text().replace('VERSION = "1.0.0"', 'VERSION = "1.0.1"'))
    changed = local.rhone("--progress", "jsonl", "deploy", "--json", cwd=app_dir)
    [event] = uploads(changed)
    assert event["blobs"] == 1 and event["bytes"] == source.stat().st_size
    assert event["known"] == manifest["file_count"] - 1
    assert edge_get(local, changed.json()["url"]).json()["version"] == "1.0.1"

    unchanged = local.rhone("--progress", "jsonl", "deploy", "--json", cwd=app_dir)
    [event] = uploads(unchanged)
    assert event["blobs"] == 0 and event["bytes"] == 0 and event["known"] == manifest["file_count"]
    assert unchanged.json()["state"] == "preview_ready"
    assert unchanged.json()["artifact_digest"] == changed.json()["artifact_digest"]
    assert len(deployments(local, app_dir)) == 3


# -- build failures ----------------------------------------------------------------------------------------------------
def test_a_failing_build_is_build_failed_with_its_log_tail(local, tmp_path):
    command = "echo compiling hello; echo 'error: boom at line 7' >&2; exit 3"
    app_dir = linked(local, hello_app(tmp_path, command=command))
    error = failed_deploy(local, app_dir, "build_failed")
    assert "status 3" in error["message"]
    evidence = error["details"]["evidence"]
    assert evidence["exit_status"] == 3
    assert "compiling hello" in evidence["log_tail"] and "error: boom at line 7" in evidence["log_tail"]
    deployment = assert_failed_without_allocation(local, app_dir, error)
    assert deployment["artifact_digest"] is None
    assert deployment["evidence"]["log_tail"] == evidence["log_tail"]
    logs = local.json("deploy", "logs", deployment["id"])
    assert_matches_schema(logs, "deployment-logs.schema.json")
    assert "error: boom at line 7" in logs["build"] and logs["allocations"] == {}


def test_a_build_past_its_timeout_is_build_timeout_and_is_killed(local, tmp_path):
    # Were the timeout not enforced, the build would outlast `rhone deploy`'s 60 s subprocess bound and fail the test.
    app_dir = linked(local, hello_app(tmp_path, command="echo started; sleep 600", timeout=5))
    error = failed_deploy(local, app_dir, "build_timeout")
    assert error["details"]["evidence"]["timeout"] == 5
    assert "started" in error["details"]["evidence"]["log_tail"]
    deployment = assert_failed_without_allocation(local, app_dir, error)
    assert deployment["artifact_digest"] is None
    assert not [cmd for cmd in processes_under(local.data_dir).values() if "sleep" in cmd]


def test_a_build_that_writes_rhone_toml_is_config_modified(local, tmp_path):
    app_dir = linked(local, hello_app(tmp_path, command="echo '# written by the build' >> rhone.toml"))
    before = (app_dir / "rhone.toml").read_text()
    error = failed_deploy(local, app_dir, "config_modified")
    assert "rhone.toml" in error["message"]
    deployment = assert_failed_without_allocation(local, app_dir, error)
    assert deployment["artifact_digest"] is None
    assert (app_dir / "rhone.toml").read_text() == before  # the build ran on the server's copy


def test_a_missing_build_output_is_build_output_missing(local, tmp_path):
    app_dir = linked(local, hello_app(tmp_path, command="echo built nothing", output="dist"))
    error = failed_deploy(local, app_dir, "build_output_missing")
    assert "'dist'" in error["message"]
    deployment = assert_failed_without_allocation(local, app_dir, error)
    assert deployment["artifact_digest"] is None


# -- readiness -------------------------------------------------------------------------------------------------------
NEVER_READY = """\
import time

print("never ready: not listening on $PORT", flush=True)
time.sleep(600)
"""


def test_a_process_that_never_becomes_ready_is_readiness_failed_and_is_stopped(local, tmp_path):
    app_dir = hello_app(tmp_path, start="python3 never_ready.py", readiness_timeout=5)
    (app_dir / "never_ready.py").write_text(NEVER_READY)
    linked(local, app_dir)
    error = failed_deploy(local, app_dir, "readiness_failed")
    [deployment] = deployments(local, app_dir)
    assert deployment["state"] == "failed" and deployment["id"] == error["details"]["deployment_id"]
    op = local.json("op", "show", error["operation_id"])
    assert [s["state"] for s in op["stages"]] == ["queued", "cloning", "building", "validating", "failed"]
    [alloc] = deployment["allocations"]
    assert alloc["state"] == "failed"
    health = alloc["health"]
    assert health["ready"] is False and health["timeout"] == 5 and health["attempts"] >= 1
    assert (health["probe"], health["target"]) == ("http", "/healthz") and "never ready" in health["log_tail"]
    # The failure names what was probed, what answered, and where the rest of the log is.
    assert "/healthz (http readiness)" in error["message"] and health["last"] in error["message"]
    assert f"rhone logs {deployment['id']}" in error["message"]
    assert error["details"]["evidence"]["allocation"]["id"] == alloc["id"]
    # Every gate passed and was recorded before the allocation was tried.
    assert {g["gate"] for g in error["details"]["evidence"]["gates"]} == GATES
    [row] = allocation_rows(local, deployment["id"])
    assert row["pid"] and not process_alive(row["pid"])
    assert not [cmd for cmd in processes_under(local.data_dir).values() if "never_ready.py" in cmd]
    assert edge_get(local, deployment["url"]).status_code == 503


# -- gates -----------------------------------------------------------------------------------------------------------
def test_new_migrations_block_until_approved_and_approving_twice_is_not_blocked(local, tmp_path):
    app_dir = hello_app(tmp_path, extra='\n[database]\nmigrations = "migrations"\n')
    (app_dir / "migrations").mkdir()
    (app_dir / "migrations" / "0001_init.sql").write_text("CREATE TABLE greetings (id INTEGER PRIMARY KEY);\n")
    linked(local, app_dir)
    result = deploy(local, app_dir, "--json")
    assert result.exit_code == 6, (result.stdout, result.stderr)
    error = result.json()["error"]
    assert error["code"] == "migration_needs_approval" and "0001_init.sql" in error["message"]
    deployment_id = error["details"]["deployment_id"]
    assert f"rhone deploy approve {deployment_id}" in error["hint"] and "--ack-cold" not in error["hint"]
    blocked = local.json("deploy", "show", deployment_id)
    assert_matches_schema(blocked, "deployment.schema.json")
    assert blocked["state"] == "blocked" and blocked["allocations"] == []
    gates = {g["gate"]: g for g in blocked["evidence"]["gates"]}
    assert set(gates) == GATES and gates["db_impact"]["outcome"] == "block"
    assert gates["db_impact"]["facts"]["new"] == ["0001_init.sql"]
    assert local.json("op", "show", error["operation_id"])["state"] == "blocked"
    assert edge_get(local, blocked["url"]).status_code == 503

    approved = local.rhone("deploy", "approve", deployment_id, "--json", cwd=app_dir)
    assert approved.exit_code == 0, approved.stderr
    document = approved.json()
    assert_matches_schema(document, "deployment.schema.json")
    assert document["state"] == "preview_ready" and document["approval"]["gates"] == ["db_impact"]
    assert [a["state"] for a in document["allocations"]] == ["ready"]
    assert edge_get(local, document["url"]).json()["deployment"] == deployment_id

    again = local.rhone("deploy", "approve", deployment_id, "--json", cwd=app_dir)
    assert again.exit_code == 5
    assert again.json()["error"]["code"] == "not_blocked"
    assert [d["id"] for d in deployments(local, app_dir)] == [deployment_id]
    assert [a["state"] for a in allocation_rows(local, deployment_id)] == ["ready"]


def vango_app(root: Path, manifest_build: str, schema_build: str) -> Path:
    app_dir = hello_app(
        root,
        extra='\n[vango]\nstate_manifest = "gen/vango_state_manifest.json"\n'
        'state_schema = "gen/vango_state_schema.json"\n',
    )
    (app_dir / "gen").mkdir()
    (app_dir / "gen" / "vango_state_manifest.json").write_text(
        json.dumps({"buildSchema": manifest_build, "primitives": []})
    )
    (app_dir / "gen" / "vango_state_schema.json").write_text(
        json.dumps({"buildSchema": schema_build, "schemaHash": "sha256:0a1b2c3d4e5f", "persistedPrimitives": {}})
    )
    return app_dir


def test_stale_vango_artifacts_fail_and_consistent_ones_pass(local, tmp_path):
    app_dir = linked(local, vango_app(tmp_path, "build-41", "build-42"))
    error = failed_deploy(local, app_dir, "stale_artifacts")
    assert "'build-41' vs 'build-42'" in error["message"]
    gates = {g["gate"]: g for g in error["details"]["evidence"]["gates"]}
    assert gates["generated_artifacts"]["outcome"] == "fail"
    assert gates["generated_artifacts"]["facts"]["manifest_build"] == "build-41"
    deployment = assert_failed_without_allocation(local, app_dir, error)
    assert deployment["artifact_digest"] is not None  # it built; the gate refused it

    (app_dir / "gen" / "vango_state_schema.json").write_text(
        json.dumps({"buildSchema": "build-41", "schemaHash": "sha256:0a1b2c3d4e5f", "persistedPrimitives": {}})
    )
    result = deploy(local, app_dir, "--json")
    assert result.exit_code == 0, result.stdout
    gates = {g["gate"]: g for g in result.json()["evidence"]["gates"]}
    assert gates["generated_artifacts"]["outcome"] == "pass"
    assert gates["generated_artifacts"]["facts"]["schema_hash"] == "sha256:0a1b2c3d4e5f"
    assert result.json()["state"] == "preview_ready"


def test_a_declared_provider_without_a_binding_is_refused_before_anything_is_built(local, tmp_path):
    app_dir = linked(local, hello_app(tmp_path, command="echo BUILT", extra='\n[providers.db]\nkind = "postgres"\n'))
    result = deploy(local, app_dir, "--json")
    assert result.exit_code == 6, (result.stdout, result.stderr)
    error = result.json()["error"]
    assert error["code"] == "binding_missing" and error["details"]["providers"] == ["db"]
    assert "rhone env bind preview" in error["message"] and "nothing was built" in error["message"]
    assert deployments(local, app_dir) == []
    assert not list((local.data_dir / "deployments").glob("*")), "no build ran"
    bind = ("env", "bind", "preview", "db", "--kind", "postgres", "--resource", "pg://db-host/x")
    bound = local.rhone(*bind, cwd=app_dir)
    assert bound.exit_code == 0, bound.stderr
    result = deploy(local, app_dir, "--json")
    assert result.exit_code == 0, result.stdout
    gates = {g["gate"]: g for g in result.json()["evidence"]["gates"]}
    assert gates["providers_bound"]["outcome"] == "pass"


# -- prebuilt --------------------------------------------------------------------------------------------------------
def test_prebuilt_deploys_the_output_directory_as_the_artifact(local, tmp_path):
    # build.command would fail: --prebuilt must not run it.
    app_dir = hello_app(tmp_path, command="exit 1", output="dist")
    (app_dir / "dist").mkdir()
    shutil.move(app_dir / "app.py", app_dir / "dist" / "app.py")
    linked(local, app_dir)
    manifest = local.json("artifact", "manifest", "--prebuilt", cwd=app_dir)
    assert_matches_schema(manifest, "artifact-manifest.schema.json")
    assert [f["path"] for f in manifest["manifest"]["files"]] == ["app.py"]
    result = deploy(local, app_dir, "--prebuilt", "--json")
    assert result.exit_code == 0, result.stdout
    document = result.json()
    assert_matches_schema(document, "deployment.schema.json")
    assert document["state"] == "preview_ready" and document["prebuilt"] is True
    assert document["artifact_digest"] == manifest["digest"] == document["source_digest"]
    assert edge_get(local, document["url"]).json()["deployment"] == document["id"]
    assert local.json("deploy", "logs", document["id"])["build"] == ""  # no build ran


# -- bad input straight to the API -------------------------------------------------------------------------------------
def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def manifest_digest(document: dict) -> str:
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return "sha256:" + sha(canonical)


def test_bad_uploads_and_manifests_are_refused_and_create_nothing(local, tmp_path):
    app_dir = linked(local, hello_app(tmp_path))
    api = httpx.Client(base_url=local.api_url, headers={"Authorization": f"Bearer {local.owner_token()}"}, timeout=10)
    path = "/v1/workspaces/local/projects/hello/apps/hello/deployments"
    config = {
        "project": {"name": "hello"},
        "app": {"name": "hello"},
        "build": {"command": None, "output": ".", "include": ["**"], "exclude": [], "timeout": 60},
        "process": {"start": "python3 app.py", "health_path": "/healthz", "readiness_timeout": 10},
    }

    def missing(*digests: str) -> list[str]:
        response = api.post("/v1/blobs/missing", json={"digests": list(digests)})
        assert response.status_code == 200
        return response.json()["missing"]

    def refused(response: httpx.Response, status: int, code: str) -> dict:
        assert response.status_code == status, response.text
        assert response.json()["error"]["code"] == code, response.text
        return response.json()["error"]

    def entry(name: str, data: bytes) -> dict:
        return {"path": name, "size": len(data), "mode": "644", "sha256": sha(data)}

    def create(manifest: dict, digest: str | None = None) -> httpx.Response:
        body = {"manifest": manifest, "manifest_digest": digest or manifest_digest(manifest), "config": config}
        return api.post(path, json=body, headers={"Idempotency-Key": f"bad-{time.monotonic_ns()}"})

    with api:
        # A blob whose content is not its digest: refused, and not stored.
        claimed, actual = b"print('the real thing')\n", b"print('something else')\n"
        digest = "sha256:" + sha(claimed)
        error = refused(api.put(f"/v1/blobs/{digest}", content=actual), 409, "digest_mismatch")
        assert error["details"]["actual"] == "sha256:" + sha(actual)
        assert missing(digest) == [digest]
        assert missing("sha256:" + sha(actual)) == ["sha256:" + sha(actual)]

        uploaded = b"print('uploaded')\n"
        stored = api.put(f"/v1/blobs/sha256:{sha(uploaded)}", content=uploaded)
        assert stored.status_code == 201 and missing("sha256:" + sha(uploaded)) == []

        # A manifest naming a blob that was never uploaded.
        never = b"never uploaded\n"
        manifest = {"version": 1, "files": [entry("app.py", uploaded), entry("data.txt", never)]}
        error = refused(create(manifest), 409, "blobs_missing")
        assert error["details"]["missing"] == ["sha256:" + sha(never)]

        # Manifests that are not normalized, sorted and unique.
        for files in (
            [entry("../escape.py", uploaded)],
            [entry("lib/../../escape.py", uploaded)],
            [entry("/etc/passwd", uploaded)],
            [entry("app.py", uploaded), entry("app.py", uploaded)],
            [entry("b.py", uploaded), entry("a.py", uploaded)],
        ):
            refused(create({"version": 1, "files": files}), 422, "invalid_manifest")

        # A declared manifest digest that is not the manifest's.
        good = {"version": 1, "files": [entry("app.py", uploaded)]}
        wrong = "sha256:" + sha(b"not this manifest")
        error = refused(create(good, wrong), 409, "digest_mismatch")
        assert error["details"]["actual"] == manifest_digest(good)

    assert deployments(local, app_dir) == []
    assert not [op for op in local.json("op", "ls") if op["kind"] == "deploy"]
    assert not [a for a in local.json("workspace", "audit") if a["action"] == "deployment.create"]


def test_the_same_deployment_posted_twice_with_one_key_is_one_operation(local, tmp_path):
    app_dir = linked(local, hello_app(tmp_path))
    manifest = local.json("artifact", "manifest", cwd=app_dir)
    # Upload the blobs the way the CLI does.
    with httpx.Client(
        base_url=local.api_url, headers={"Authorization": f"Bearer {local.owner_token()}"}, timeout=10
    ) as api:
        for f in manifest["manifest"]["files"]:
            stored = api.put(f"/v1/blobs/sha256:{f['sha256']}", content=(app_dir / f["path"]).read_bytes())
            assert stored.status_code in (200, 201)
        config = local.json("config", "show", cwd=app_dir)["config"]
        body = {
            "environment": "preview",
            "manifest": manifest["manifest"],
            "manifest_digest": manifest["digest"],
            "config": config,
        }
        path = "/v1/workspaces/local/projects/hello/apps/hello/deployments"
        headers = {"Idempotency-Key": "deploy-lost-response-1"}
        first = api.post(path, json=body, headers=headers)
        assert first.status_code == 202, first.text
        replay = api.post(path, json=body, headers=headers)  # the response to the first was "lost"
        assert replay.status_code == 202, replay.text
        assert replay.headers.get("idempotent-replayed") == "true"
        assert replay.json()["id"] == first.json()["id"]
        assert replay.json()["target_id"] == first.json()["target_id"]
    waited = local.rhone("op", "wait", first.json()["id"], "--json", cwd=app_dir)
    assert waited.exit_code == 0, waited.stdout
    assert waited.json()["state"] == "preview_ready"
    [deployment] = deployments(local, app_dir)
    assert deployment["id"] == first.json()["target_id"] and deployment["state"] == "preview_ready"
    assert len([op for op in local.json("op", "ls") if op["kind"] == "deploy"]) == 1
    assert len(allocation_rows(local, deployment["id"])) == 1


# -- interrupting the wait ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupting_the_wait_exits_130_and_the_operation_continues(local_env, tmp_path, signum):
    # Link at full speed, then restart slowed down (1 s before every stage) so the deploy is caught waiting.
    assert local_env.up().exit_code == 0
    app_dir = linked(local_env, hello_app(tmp_path))
    assert local_env.rhone("local", "down").exit_code == 0
    assert local_env.up(environ={"RHONE_LOCAL_STAGE_DELAY": "1"}).exit_code == 0

    child = subprocess.Popen(
        [str(RHONE_BIN), "deploy"],
        cwd=app_dir,
        env=local_env.environ,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **SIGNALLED_CHILD,
    )
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in child.stderr], daemon=True)
    reader.start()
    seen, op_id = [], None
    try:
        deadline = time.monotonic() + 30
        while op_id is None and time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                assert child.poll() is None, "".join(seen)
                continue
            seen.append(line)
            if line.startswith("operation op_"):
                op_id = line.split()[1]
        assert op_id is not None, "".join(seen)
        time.sleep(0.3)  # into the wait (the first stage is a second away)
        child.send_signal(signum)
        stdout = child.stdout.read()
        exit_code = child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    reader.join(5)
    while not lines.empty():
        seen.append(lines.get())
    stderr = "".join(seen)
    assert exit_code == 130, stderr
    assert stdout == ""
    assert f"rhone op wait {op_id}" in stderr.split("error:", 1)[1]  # named again after the interruption
    assert "continues on the server" in stderr

    waited = local_env.rhone("op", "wait", op_id, "--wait-timeout", "40", "--json", cwd=app_dir)
    assert waited.exit_code == 0, waited.stdout
    op = waited.json()
    assert op["state"] == "preview_ready"
    [deployment] = deployments(local_env, app_dir)
    assert deployment["id"] == op["target_id"] and deployment["state"] == "preview_ready"
    assert edge_get(local_env, deployment["url"]).json()["deployment"] == deployment["id"]

"""Sealed builds and apps end to end (issue 11): a real Rhone Local with bubblewrap, builds and allocations that try to
reach the control plane, caches, build reuse, settings rolled onto allocations, and retention against rollback.

Each escape attempt must fail, be visible in the build log (or in the app's own report), and leave the control plane
unchanged; each test stops every process it started.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from rhone_local.sandbox import detect
from tests.e2e.helpers import db_rows, hello_app, processes_under, restart, toml_str, wait_until

SEALED = detect("auto", state_dir=Path("/tmp") / f"rhone-sandbox-probe-{os.getpid()}")
needs_bubblewrap = pytest.mark.skipif(not SEALED.sealed, reason=f"no working bubblewrap here: {SEALED.reason}")

# The probe app: it tries to read or write each path it is given and answers with what happened.
PROBE_APP = """
import json, os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

def attempt(action, path):
    try:
        if action == "read":
            with open(path, "rb") as f:
                f.read(16)
        elif action == "list":
            os.listdir(path)
        else:
            with open(path, "w") as f:
                f.write("pwned")
        return "ok"
    except OSError as error:
        return type(error).__name__ + ": " + (error.strerror or "")

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/healthz":
            body = b"ok"
        else:
            probes = json.loads(os.environ.get("PROBES", "[]"))
            report = {f"{a} {p}": attempt(a, p) for a, p in probes}
            report["env"] = sorted(os.environ)
            report["settings"] = {k: os.environ.get(k) for k in ("GREETING", "SECRET_KEY", "FROM_TOML")}
            report["cwd"], report["uid"] = os.getcwd(), os.getuid()
            status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
            report["capabilities"] = status["CapEff"].strip()
            report["processes"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
            body = json.dumps(report).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""


def probe_app(root: Path, name: str, *, command: str, extra: str = "") -> Path:
    app_dir = root / name
    app_dir.mkdir(parents=True)
    (app_dir / "app.py").write_text(PROBE_APP)
    (app_dir / "rhone.toml").write_text(
        f'[project]\nname = "{name}"\n\n[app]\nname = "{name}"\n\n'
        f"[build]\ncommand = {toml_str(command)}\ntimeout = 120\n\n"
        f'[process]\nstart = "python3 app.py"\nhealth_path = "/healthz"\nreadiness_timeout = 30\n{extra}'
    )
    return app_dir


def up(server, *args: str, environ: dict[str, str] | None = None):
    result = server.rhone(
        "local", "up", "--port", str(server.port), "--edge-port", str(server.edge_port), "--json", *args,
        environ=environ,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    server.started.append(result.json()["pid"])
    return result


def deploy_json(server, app_dir: Path, *args: str, timeout: float = 180) -> dict:
    result = server.rhone("deploy", "--json", *args, cwd=app_dir, timeout=timeout)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result.json()


def edge_get(server, url: str, path: str = "/") -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{server.edge_port}{path}", headers={"Host": urlsplit(url).netloc}, timeout=10)


def build_log(server, deployment_id: str) -> str:
    return server.json("deploy", "logs", deployment_id)["build"]


def building_evidence(server, deployment: dict) -> dict:
    op = server.json("op", "show", deployment["operation_id"])
    return next(s["evidence"] for s in op["stages"] if s["state"] == "validating")


def drains_ended(server) -> bool:
    """Whether every allocation that was draining (the previous owner, a superseded preview) has stopped."""
    return not db_rows(server, "SELECT id FROM allocations WHERE state = 'draining'")


def control_plane_files(server) -> dict[str, bytes]:
    return {name: (server.data_dir / name).read_bytes() for name in ("owner.token", "server.json")}


@needs_bubblewrap
def test_a_build_and_an_app_cannot_reach_the_control_plane_or_another_app(local_env, tmp_path: Path) -> None:
    server = local_env
    up(server, "--sandbox", "bubblewrap")
    status = server.json("local", "status")
    assert status["sandbox"]["mode"] == "bubblewrap"
    other = deploy_json(server, hello_app(tmp_path, "other"))
    other_tree = server.data_dir / "allocations" / other["allocations"][0]["id"] / "app"
    data = server.data_dir
    targets = {
        "owner.token": data / "owner.token",
        "rhone.db": data / "rhone.db",
        "data dir": data,
        "other app": other_tree / "app.py",
        "venv": Path(sys.prefix) / "bin" / "python",
    }
    assert all(path.exists() for path in targets.values())
    reads = "; ".join(f"cat {p} || ls {p} || echo REFUSED-{i}" for i, p in enumerate(targets.values()))
    writes = f"touch {data}/pwned || echo REFUSED-W1; touch /usr/pwned || echo REFUSED-W2"
    before = control_plane_files(server)
    app_dir = probe_app(tmp_path, "probe", command=f"{reads}; {writes}; echo BUILD-DONE")
    probes = [["read", str(p)] for p in targets.values()]
    probes += [["list", str(data)], ["write", str(data / "pwned")], ["write", "/usr/pwned"], ["write", "/etc/pwned"]]
    probes += [["write", "/tmp/private-tmp-probe"], ["write", "/app/own-tree-probe"]]
    (app_dir / "rhone.toml").write_text(
        (app_dir / "rhone.toml").read_text() + f"\n[env]\nPROBES = {toml_str(json.dumps(probes))}\n"
    )
    deployment = deploy_json(server, app_dir)
    log = build_log(server, deployment["id"])
    # Every attempt of the build failed and says so in its log; nothing of the token reached it.
    assert "BUILD-DONE" in log
    for index in range(len(targets)):
        assert f"REFUSED-{index}" in log, log
    assert "REFUSED-W1" in log and "REFUSED-W2" in log and "Read-only file system" in log
    assert "No such file or directory" in log
    assert before["owner.token"].decode().strip() not in log
    # The running app fares no better.
    report = edge_get(server, deployment["url"], "/report").json()
    for path in targets.values():
        assert report[f"read {path}"].startswith(("FileNotFoundError", "PermissionError")), report
    assert report[f"list {data}"].startswith("FileNotFoundError")
    assert report[f"write {data / 'pwned'}"].startswith("FileNotFoundError")
    assert report["write /usr/pwned"].startswith("OSError: Read-only")
    assert report["write /etc/pwned"].startswith("OSError: Read-only") and not Path("/etc/pwned").exists()
    assert report["write /tmp/private-tmp-probe"] == "ok" and not Path("/tmp/private-tmp-probe").exists()
    assert report["write /app/own-tree-probe"] == "ok" and report["cwd"] == "/app" and report["uid"] != 0
    # No capability, and no process of the host in sight: its own pid namespace holds only its sandbox.
    assert int(report["capabilities"], 16) == 0
    assert max(report["processes"]) < 20, report["processes"]
    assert {"PATH", "HOME", "PORT", "RHONE_RUNTIME_TOKEN"} <= set(report["env"])
    assert not {"RHONE_LOCAL_DATA_DIR", "VIRTUAL_ENV", "RHONE_CONFIG_DIR"} & set(report["env"])
    # Nothing of the control plane changed.
    assert control_plane_files(server) == before
    assert not (data / "pwned").exists() and not Path("/usr/pwned").exists()


@needs_bubblewrap
def test_a_builds_background_processes_end_with_it(local_env, tmp_path: Path) -> None:
    server = local_env
    up(server, "--sandbox", "bubblewrap")
    # One left in the build's process group, one in a session of its own.
    app_dir = probe_app(tmp_path, "leaver", command="sleep 300 & (setsid sleep 301 &) ; sleep 0.2; echo started")
    deployment = deploy_json(server, app_dir)
    assert "started" in build_log(server, deployment["id"])
    leftovers = {pid: line for pid, line in processes_under(server.data_dir).items() if "sleep 30" in line}
    assert leftovers == {}


@needs_bubblewrap
def test_a_venv_link_outside_the_system_directories_is_refused_with_a_hint(local_env, tmp_path: Path) -> None:
    server = local_env
    up(server, "--sandbox", "bubblewrap")
    command = "mkdir -p .venv/bin && ln -s /opt/elsewhere/python3 .venv/bin/python"
    app_dir = probe_app(tmp_path, "badlink", command=command)
    result = server.rhone("deploy", "--json", cwd=app_dir, timeout=120)
    assert result.exit_code == 1, result.stdout
    error = result.json()["error"]
    assert error["code"] == "unsafe_path"
    assert "'.venv/bin/python' links outside the output directory (to /opt/elsewhere/python3)" in error["message"]
    assert "python3 -m venv .venv" in error["message"]
    assert db_rows(server, "SELECT COUNT(*) AS n FROM allocations")[0]["n"] == 0


@needs_bubblewrap
def test_a_build_that_fills_its_cache_gets_it_cleared(local_env, tmp_path: Path) -> None:
    server = local_env
    up(server, "--sandbox", "bubblewrap", "--build-cache-mb", "1")
    command = 'echo "BEFORE:[$(ls "$XDG_CACHE_HOME")]"; head -c 3000000 /dev/zero > "$XDG_CACHE_HOME/junk"; echo filled'
    app_dir = probe_app(tmp_path, "filler", command=command)
    first = deploy_json(server, app_dir)
    log = build_log(server, first["id"])
    assert "filled" in log and "over its limit of 1048576: cleared" in log
    evidence = building_evidence(server, first)
    assert evidence["cache"] == {"bytes": 3000000, "limit": 1048576, "cleared": True}
    caches = list((server.data_dir / "caches").iterdir())
    assert len(caches) == 1 and list(caches[0].iterdir()) == []
    # The artifact never holds the cache, and the next build starts from an empty one.
    assert "junk" not in json.dumps(first)
    second = deploy_json(server, app_dir, "--force-build")
    assert "BEFORE:[]" in build_log(server, second["id"])


@needs_bubblewrap
def test_a_build_killed_mid_way_resumes_with_its_cache(local_env, tmp_path: Path) -> None:
    server = local_env
    up(server, "--sandbox", "bubblewrap")
    command = (
        'if [ -f "$XDG_CACHE_HOME/fetched" ]; then echo CACHE-HIT; '
        'else echo FETCHING; echo data > "$XDG_CACHE_HOME/fetched"; sleep 600; fi'
    )
    app_dir = probe_app(tmp_path, "resumer", command=command)
    started = server.rhone("deploy", "--no-wait", "--json", cwd=app_dir)
    assert started.exit_code == 0, started.stderr
    op = started.json()
    assert wait_until(lambda: list((server.data_dir / "caches").glob("*/fetched")), timeout=60)
    assert wait_until(lambda: any("sleep 600" in c for c in processes_under(server.data_dir).values()), timeout=60)
    os.kill(server.pid(), signal.SIGKILL)
    # The build dies with the server that ran it (its sandbox dies with its parent).
    assert wait_until(lambda: not any("sleep 600" in c for c in processes_under(server.data_dir).values()), 60)
    restart(server)
    done = server.rhone("op", "wait", op["id"], "--json", timeout=180)
    assert done.exit_code == 0, done.stderr
    deployment = server.json("deploy", "show", op["target_id"])
    assert deployment["state"] == "preview_ready"
    assert "CACHE-HIT" in build_log(server, deployment["id"])


@needs_bubblewrap
def test_an_unchanged_source_reuses_its_artifact_and_force_build_rebuilds(local_env, tmp_path: Path) -> None:
    server = local_env
    up(server, "--sandbox", "bubblewrap")
    app_dir = hello_app(tmp_path, "reuse", command="python3 -m py_compile app.py && echo BUILT")
    first = deploy_json(server, app_dir)
    second = deploy_json(server, app_dir)
    assert second["artifact_digest"] == first["artifact_digest"]
    evidence = building_evidence(server, second)
    assert evidence["reused"] is True and evidence["reused_from"] == first["id"]
    assert build_log(server, second["id"]) == ""  # no build ran
    forced = deploy_json(server, app_dir, "--force-build")
    assert building_evidence(server, forced)["reused"] is False and "BUILT" in build_log(server, forced["id"])
    assert forced["artifact_digest"] == first["artifact_digest"]  # the same input builds the same artifact
    # Another build command is another build.
    (app_dir / "rhone.toml").write_text((app_dir / "rhone.toml").read_text().replace("echo BUILT", "echo BUILT2"))
    changed = deploy_json(server, app_dir)
    assert building_evidence(server, changed)["reused"] is False and "BUILT2" in build_log(server, changed["id"])


@needs_bubblewrap
def test_settings_roll_the_running_allocations_new_ones_first(local_env, tmp_path: Path) -> None:
    server = local_env
    up(server, "--sandbox", "bubblewrap")
    app_dir = probe_app(tmp_path, "configured", command="true", extra='\n[env]\nFROM_TOML = "default"\n')
    deployment = deploy_json(server, app_dir)
    before = edge_get(server, deployment["url"]).json()
    assert before["settings"] == {"GREETING": None, "SECRET_KEY": None, "FROM_TOML": "default"}
    first_alloc = deployment["allocations"][0]["id"]
    secret = "s3cret-from-the-environment-0042"
    result = server.rhone(
        "env", "set", "preview", "GREETING=a=b=c", "FROM_TOML=override", "--secret", "SECRET_KEY", "--json",
        cwd=app_dir, environ={"SECRET_KEY": secret},
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert secret not in result.stdout + result.stderr
    after = edge_get(server, deployment["url"]).json()
    assert after["settings"] == {"GREETING": "a=b=c", "SECRET_KEY": secret, "FROM_TOML": "override"}
    assert wait_until(lambda: drains_ended(server), timeout=30)  # the old allocation drains, then stops
    allocations = db_rows(server, "SELECT id, state FROM allocations WHERE deployment_id = ?", deployment["id"])
    assert {a["id"]: a["state"] for a in allocations}[first_alloc] == "stopped"
    assert sum(a["state"] == "ready" for a in allocations) == 1
    shown = server.json("env", "config", "preview", cwd=app_dir)
    assert {i["name"]: i["value"] for i in shown["items"]} == {
        "FROM_TOML": "override",
        "GREETING": "a=b=c",
        "SECRET_KEY": None,
    }
    human = server.rhone("env", "config", "preview", cwd=app_dir)
    assert "********" in human.stdout and secret not in human.stdout
    assert secret not in (server.data_dir / "rhone-local.log").read_text()
    # A required setting that the environment lacks refuses the deploy before anything is built.
    (app_dir / "rhone.toml").write_text((app_dir / "rhone.toml").read_text() + 'required = ["DATABASE_NAME"]\n')
    deployments_before = len(server.json("deploy", "ls", cwd=app_dir))
    refused = server.rhone("deploy", "--json", cwd=app_dir)
    assert refused.exit_code == 6, refused.stdout
    assert refused.json()["error"]["code"] == "setting_missing"
    assert len(server.json("deploy", "ls", cwd=app_dir)) == deployments_before


def test_without_a_sandbox_rhone_local_up_says_what_is_exposed(local_env) -> None:
    server = local_env
    result = server.rhone(
        "local", "up", "--port", str(server.port), "--edge-port", str(server.edge_port), "--sandbox", "none", "--json"
    )
    assert result.exit_code == 0, result.stderr
    server.started.append(result.json()["pid"])
    assert result.json()["sandbox"] == {"mode": "none", "reason": "turned off (--sandbox none)", "read_only_paths": []}
    assert "WITHOUT a sandbox" in result.stderr and "owner.token" in result.stderr
    human = server.rhone("local", "status")
    assert "sandbox: none" in human.stdout and "disk:" in human.stdout


def test_retention_keeps_every_rollback_target(local_env, tmp_path: Path) -> None:
    """Promote, deploy 30 times, gc, roll back: the first owner comes back; deployments nothing keeps lose their
    files and can no longer be promoted."""
    server = local_env
    # Blobs younger than the upload grace period are never removed; here they need not wait an hour.
    up(server, "--sandbox", "auto", environ={"RHONE_LOCAL_UPLOAD_GRACE": "0"})
    app_dir = hello_app(tmp_path, "kept", command=None)
    first = deploy_json(server, app_dir, "--promote")["deployment"]
    ids = []
    for n in range(30):
        (app_dir / "version.txt").write_text(f"{n}\n")
        ids.append(deploy_json(server, app_dir)["id"])
    second_owner = ids[-1]
    promoted = server.rhone("promote", second_owner, "--json", cwd=app_dir)
    assert promoted.exit_code == 0, promoted.stderr
    # Retention already ran after each deploy; what is left for a manual run is what the dry run announced (once the
    # superseded previews and the previous owner have finished draining, so nothing changes in between).
    assert wait_until(lambda: drains_ended(server), timeout=30)
    dry = server.json("local", "gc", "--dry-run")
    assert dry["dry_run"] is True
    result = server.json("local", "gc")
    assert result["removed"] == dry["removed"] and result["dry_run"] is False
    assert server.json("local", "gc", "--dry-run")["total_bytes"] == 0
    # The rollback target (the first owner, 31 deployments ago) is intact and takes the route back.
    rolled = server.rhone("rollback", "--json", cwd=app_dir)
    assert rolled.exit_code == 0, rolled.stderr
    assert rolled.json()["deployment_id"] == first["id"]
    assert edge_get(server, "http://hello--production.localhost").json()["deployment"] == first["id"]
    # A deployment nothing keeps (not recent, never an owner) lost its files: promoting it is refused, exit 6.
    dropped = ids[0]
    refused = server.rhone("promote", dropped, "--json", cwd=app_dir)
    assert refused.exit_code == 6 and refused.json()["error"]["code"] == "artifact_absent", refused.stdout
    assert not (server.data_dir / "deployments" / dropped).exists()
    for kept in (first["id"], second_owner, *ids[-10:]):
        assert (server.data_dir / "deployments" / kept).exists()


def test_status_shows_disk_use_per_kind(local, tmp_path: Path) -> None:
    deploy_json(local, hello_app(tmp_path, "measured"))
    disk = local.json("local", "status")["disk"]
    assert set(disk) == {"builds", "allocations", "blobs", "caches", "database"}
    assert disk["blobs"] > 0 and disk["allocations"] > 0 and disk["database"] > 0

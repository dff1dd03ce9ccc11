"""Dynamic completion: ids and names from the API, newest first with their state, through a short timeout and a small
cache, silent when anything is missing, and never a way to inject shell code.

The completion requests are answered in process (`rhone_cli.completion.respond`, as the shells' scripts ask) against
the real API app on a loopback port; `tests/local/test_completion_shells.py` presses TAB in real bash, zsh and fish.
"""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import pytest

from rhone_cli import command_tree, completion_values
from rhone_cli.completion import respond
from rhone_cli.main import app

from .conftest import BASE, SHOP_WEB_TOML, LocalEnv, queued_deployments

APP = f"{BASE}/projects/shop/apps/web"


@pytest.fixture
def shop(local: LocalEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    local.create_app(local.create_project("shop"), "web")
    project = tmp_path / "shop"
    project.mkdir()
    (project / "rhone.toml").write_text(SHOP_WEB_TOML)
    monkeypatch.chdir(project)
    return {"dir": project, "deployments": queued_deployments(local, APP, 3)}


@pytest.fixture
def environ(local: LocalEnv, live_url: str, tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir()
    return {
        "HOME": str(home),
        "RHONE_CONFIG_DIR": str(home / "config"),
        "RHONE_CACHE_DIR": str(tmp_path / "cache"),
        "RHONE_API_URL": live_url,
        "RHONE_TOKEN": local.owner.token,
        "RHONE_COMPLETION_TIMEOUT": "10",  # the API shares this test's process; the timeout has its own test
    }


def fish(line: str, environ: dict[str, str]) -> list[str]:
    text, status = respond(
        "complete_fish",
        {**environ, "_TYPER_COMPLETE_ARGS": line, "_TYPER_COMPLETE_FISH_ACTION": "get-args"},
        command_tree.build(app),
    )
    assert status == 0
    return text.splitlines() if text else []


def test_deployment_ids_newest_first_with_their_state(shop, environ):
    offered = fish("rhone deploy show ", environ)
    assert [line.split("\t")[0] for line in offered] == shop["deployments"][::-1]
    assert all(line.split("\t")[1].startswith("queued preview") for line in offered)
    assert fish(f"rhone promote {shop['deployments'][0][:-3]}", environ)[0].startswith(shop["deployments"][0])
    assert [line.split("\t")[0] for line in fish("rhone rollback --to ", environ)] == shop["deployments"][::-1]


def test_environment_operation_app_project_and_region_names(shop, environ, local: LocalEnv):
    assert fish("rhone route history ", environ) == ["preview", "production"]
    assert fish("rhone env show pro", environ) == ["production"]
    assert fish("rhone app scale --env ", environ) == ["preview", "production"]
    ops = [line.split("\t") for line in fish("rhone op show ", environ)]
    assert ops[0][1].startswith("deploy queued") and len(ops) == 5  # 3 deploys, then the app and the project
    assert fish("rhone app show ", environ) == ["web"]
    assert fish("rhone project show ", environ) == ["shop"]
    assert fish("rhone deploy ls --app ", environ) == ["web"]
    assert fish("rhone region show ", environ) == ["local-1", "local-2"]
    assert fish("rhone workspace show ", environ) == ["local"]


def test_the_typed_flags_choose_the_app(shop, environ, local: LocalEnv):
    other = local.create_app(local.store.project(local.workspace_id, "shop"), "api")
    assert other
    assert fish("rhone deploy show -a api ", environ) == []  # api has no deployments
    assert fish("rhone route history --app api ", environ) == ["preview", "production"]


def test_a_burst_of_tabs_costs_one_request(shop, environ, live_url, monkeypatch):
    calls = []
    real_get = completion_values._get
    monkeypatch.setattr(completion_values, "_get", lambda context, url: calls.append(url) or real_get(context, url))
    for _ in range(5):
        assert len(fish("rhone deploy show ", environ)) == 3
    assert len(calls) == 1
    cache = json.loads((Path(environ["RHONE_CACHE_DIR"]) / "completion.json").read_text())
    assert environ["RHONE_TOKEN"] not in json.dumps(cache)
    assert oct((Path(environ["RHONE_CACHE_DIR"]) / "completion.json").stat().st_mode & 0o777) == "0o600"


class SilentApi:
    """Accepts connections and never answers (a hung API); counts the connections."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.connections.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        self.sock.close()
        for conn in self.connections:
            conn.close()


def test_a_slow_or_down_api_gives_nothing_quietly_and_is_asked_once(shop, environ):
    silent = SilentApi()
    try:
        slow = {**environ, "RHONE_API_URL": silent.url, "RHONE_COMPLETION_TIMEOUT": "0.2"}
        for _ in range(3):
            assert fish("rhone deploy show ", slow) == []
        assert len(silent.connections) == 1  # the failure is remembered: later TABs do not wait again
    finally:
        silent.close()
    down = {**environ, "RHONE_API_URL": "http://127.0.0.1:9", "RHONE_CACHE_DIR": environ["RHONE_CACHE_DIR"] + "2"}
    assert fish("rhone deploy show ", down) == []
    assert fish("rhone deploy ", down)[0].startswith("ls\t")  # commands still complete


def test_no_token_or_a_refused_token_offers_nothing(shop, environ):
    assert fish("rhone deploy show ", {k: v for k, v in environ.items() if k != "RHONE_TOKEN"}) == []
    assert fish("rhone deploy show ", {**environ, "RHONE_TOKEN": "rht_wrong_token_00000000"}) == []


def test_an_api_for_which_a_proxy_is_configured_is_not_asked(shop, environ):
    remote = {**environ, "RHONE_API_URL": "http://rhone.test:8470", "HTTP_PROXY": "http://127.0.0.1:9"}
    assert fish("rhone deploy show ", remote) == []


def test_hostile_values_and_descriptions_never_reach_the_shell(environ, monkeypatch, tmp_path):
    (tmp_path / "rhone.toml").write_text(SHOP_WEB_TOML)
    monkeypatch.chdir(tmp_path)
    answer = {
        "items": [
            {"id": "dep_1a2b", "state": "ready$(touch /tmp/pwned)'\"`x`", "environment": "preview", "created_at": "t"},
            {"id": "dep_1; rm -rf ~", "state": "queued"},
            {"id": "dep_2c3d\n", "state": "queued"},
        ]
    }
    monkeypatch.setattr(completion_values, "_get", lambda context, url: answer)
    zsh, _ = respond(
        "complete_zsh",
        {
            **environ,
            "RHONE_API_URL": "http://127.0.0.1:1",
            "_TYPER_COMPLETE_ARGS": "rhone deploy show ",
        },
        command_tree.build(app),
    )
    assert zsh.startswith("local -a _rhone_values=('dep_1a2b') _rhone_shown=('dep_1a2b  -- ready")
    assert "rm -rf" not in zsh and "dep_2c3d" not in zsh
    for dangerous in ("$(", "`", '"', "touch /tmp/pwned)'"):
        assert dangerous not in zsh.split("=(", 1)[1]


def test_an_https_api_is_asked_with_the_trusted_certificates(environ, tmp_path, monkeypatch):
    from tests.netservers import api_server, make_certificates

    (tmp_path / "certs").mkdir()
    certs = make_certificates(tmp_path / "certs")
    (tmp_path / "rhone.toml").write_text(SHOP_WEB_TOML)
    monkeypatch.chdir(tmp_path)
    deployments = {"items": [{"id": "dep_1a2b", "state": "preview_ready", "environment": "preview"}]}
    path = "/v1/workspaces/local/projects/shop/apps/web/deployments"
    with api_server(tls=certs.good, answers={path: deployments}) as api:
        url = f"https://127.0.0.1:{api.port}"
        trusted = fish("rhone deploy show ", {**environ, "RHONE_API_URL": url, "SSL_CERT_FILE": str(certs.ca)})
        untrusted = fish(
            "rhone deploy show ", {**environ, "RHONE_API_URL": url, "RHONE_CACHE_DIR": str(tmp_path / "c2")}
        )
    assert trusted == ["dep_1a2b\tpreview_ready preview"]
    assert untrusted == []  # an unverifiable certificate is a failure like any other: nothing offered
    assert api.requests[0].startswith(f"GET {path}?")


def test_a_chunked_answer_is_read_whole():
    assert completion_values._unchunked(b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n") == b"hello world"

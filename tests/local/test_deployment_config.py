"""A deployment's configuration meets rhone.toml's own rules on the server: raw API requests cannot smuggle in a
timeout that never ends, a command that is not a string, or a probe path that leaves the app."""

from __future__ import annotations

import copy
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from rhone_cli.config.project import BUILD_TIMEOUT_MAX, READINESS_TIMEOUT_MAX, parse
from rhone_local.domain import limits
from rhone_local.domain.manifest import digest_of
from rhone_local.runner import probe

from ._cases import EMPTY_CONFIG, EMPTY_MANIFEST
from .conftest import BASE, LocalEnv


def _with(path: str, value: Any) -> dict[str, Any]:
    """EMPTY_CONFIG with `value` at the dotted `path` (None deletes the key)."""
    config = copy.deepcopy(EMPTY_CONFIG)
    *parents, key = path.split(".")
    node = config
    for part in parents:
        node = node.setdefault(part, {})
    if value is None:
        node.pop(key, None)
    else:
        node[key] = value
    return config


BAD_CONFIGS = [
    # The issue's two requests: each one wedged or crashed a worker once accepted.
    ("process.readiness_timeout", "abc"),
    ("process.readiness_timeout", 1e308),
    ("process.readiness_timeout", 0),
    ("process.readiness_timeout", -5),
    ("process.readiness_timeout", READINESS_TIMEOUT_MAX + 1),
    ("process.readiness_timeout", 10**30),
    ("process.readiness_timeout", True),
    ("process.readiness_timeout", "60"),
    ("build.timeout", -1),
    ("build.timeout", BUILD_TIMEOUT_MAX + 1),
    ("build.timeout", 2.5),
    ("build.command", 42),
    ("build.command", ["sh", "-c", "true"]),
    ("build.command", "   "),
    ("build.output", "../../etc"),
    # Names the file system cannot hold: refused at request time, not by a failed build later.
    ("build.output", "a" * 256),
    ("build.output", "a/" * 600 + "x"),
    ("vango.state_schema", "s" * 251 + ".json"),
    ("database.migrations", "é" * 128),
    ("process.start", {"cmd": "true"}),
    ("process.start", None),
    ("process.health_path", "healthz"),
    ("process.health_path", "@evil.example/"),
    ("process.health_path", "/a b"),
    ("process.unknown", "x"),
    ("runtime.session_cookie", "a;b"),
]


def _deploy(local: LocalEnv, project: dict, app: dict, config: Any) -> Any:
    body = {"manifest": EMPTY_MANIFEST, "manifest_digest": digest_of(EMPTY_MANIFEST), "config": config}
    return local.client.post(
        f"{BASE}/projects/{project['name']}/apps/{app['name']}/deployments", json=body, headers=local.owner.headers
    )


@pytest.fixture
def target(local: LocalEnv) -> tuple[dict, dict]:
    project = local.create_project()
    return project, local.create_app(project)


@pytest.mark.parametrize("path, value", BAD_CONFIGS, ids=[f"{p}={v!r}"[:60] for p, v in BAD_CONFIGS])
def test_a_config_rhone_toml_would_refuse_is_a_422_naming_the_field_and_changes_nothing(
    local: LocalEnv, target: tuple[dict, dict], path: str, value: Any
) -> None:
    before, audit = local.snapshot(), len(local.audit_rows())
    response = _deploy(local, *target, _with(path, value))
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    locations = [".".join(problem["loc"]) for problem in error["details"]["problems"]]
    assert f"body.config.{path}" in locations, locations
    assert local.snapshot() == before
    assert len(local.audit_rows()) == audit


@pytest.mark.parametrize("missing", ["build", "process"])
def test_a_config_without_build_or_process_is_refused(local: LocalEnv, target: tuple[dict, dict], missing) -> None:
    config = {key: value for key, value in EMPTY_CONFIG.items() if key != missing}
    response = _deploy(local, *target, config)
    assert response.status_code == 422
    assert ["body", "config", missing] in [p["loc"] for p in response.json()["error"]["details"]["problems"]]
    assert local.store.count("deployments") == 0


def test_the_cli_resolved_config_is_accepted_and_stored_with_its_defaults(
    local: LocalEnv, target: tuple[dict, dict]
) -> None:
    source = (
        '[project]\nname = "shop"\n\n[app]\nname = "web"\n\n[build]\ncommand = "make"\ntimeout = 7200\n\n'
        '[process]\nstart = "./serve"\nreadiness_timeout = 3600\n\n'
        "[environments.production]\napproval_required = true\n"
    )
    config, problems = parse(source, "rhone.toml")
    assert config is not None and problems == []
    response = _deploy(local, *target, config.resolved())
    assert response.status_code == 202, response.text
    stored = local.store.deployment(response.json()["target_id"])["config"]
    assert stored["build"]["timeout"] == BUILD_TIMEOUT_MAX
    assert stored["process"] == {
        "start": "./serve",
        "health_path": "/healthz",
        "readiness_timeout": 3600,
        "readiness": "http",
        "drain_timeout": 30,
    }


def test_after_the_issues_two_requests_a_project_create_completes(local: LocalEnv, target: tuple[dict, dict]) -> None:
    for value in ("abc", 1e308):
        assert _deploy(local, *target, _with("process.readiness_timeout", value)).status_code == 422
    assert local.store.count("deployments") == 0
    project = local.create_project("after")  # runs every runnable operation to completion
    assert project["name"] == "after"
    assert all(op["state"] == "succeeded" for op in local.store.all("SELECT state FROM operations"))


@pytest.mark.parametrize(
    "value, readiness, build",
    [
        ("abc", 60, 600),
        (1e308, READINESS_TIMEOUT_MAX, BUILD_TIMEOUT_MAX),
        (float("inf"), 60, 600),
        (float("nan"), 60, 600),
        (-3, 60, 600),
        (0, 60, 600),
        (True, 60, 600),
        (None, 60, 600),
        (30, 30, 30),
    ],
)
def test_stored_configs_from_before_validation_are_bounded(value: Any, readiness: int, build: int) -> None:
    assert limits.readiness_timeout({"readiness_timeout": value}) == readiness
    assert limits.build_timeout({"build": {"timeout": value}}) == build


@pytest.fixture
def trickler() -> Iterator[tuple[int, list[int]]]:
    """An app that answers a probe one byte at a time, forever, never finishing its status line; yields its port
    and how many bytes it managed to send."""
    server = socket.create_server(("127.0.0.1", 0))
    sent = [0]
    stop = threading.Event()

    def serve() -> None:
        connection, _ = server.accept()
        with connection:
            while True:  # a byte at once, then one every 20 ms
                try:
                    connection.sendall(b"H")
                except OSError:
                    return
                sent[0] += 1
                if stop.wait(0.02):
                    return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], sent
    stop.set()
    thread.join(5)
    server.close()


def test_a_probe_has_one_deadline_however_slowly_the_app_answers(trickler: tuple[int, list[int]]) -> None:
    port, sent = trickler
    ready, last = probe(port, "/healthz", timeout=1.0)
    assert (ready, last) == (False, "TimeoutError: timed out")
    assert 0 < sent[0] < 60  # the probe gave up after a second's bytes (at most 51), not after 65536 of them


def test_a_probe_never_follows_a_redirect_or_sends_an_invalid_path() -> None:
    server = socket.create_server(("127.0.0.1", 0))

    def answer() -> None:
        connection, _ = server.accept()
        with connection:
            connection.recv(1024)
            connection.sendall(b"HTTP/1.1 302 Found\r\nLocation: http://example.com/\r\nContent-Length: 0\r\n\r\n")

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    port = server.getsockname()[1]
    assert probe(port, "/healthz") == (False, "HTTP 302")
    thread.join(5)
    server.close()
    assert probe(port, "@evil.example/") == (False, "invalid health path '@evil.example/'")

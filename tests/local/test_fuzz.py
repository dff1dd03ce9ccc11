"""Property-based fuzzing of the Rhone Local API with schemathesis, against the real app, in process.

The contract is the committed `schemas/openapi.json`, the document clients are built against (the first test checks
that it is what the app serves). For every operation in it schemathesis sends its coverage cases (boundary values,
missing or malformed parameters, undocumented methods) and up to `MAX_EXAMPLES` generated cases in each of the
positive and negative modes, through the ASGI interface of the real app on a freshly bootstrapped data directory, with
its workers running, authenticated with the bootstrap owner's token read from `owner.token`.

Every response is checked (`CHECKS`): never a 5xx; the status is one the operation documents; content type, headers
and body match what is documented for that status; schema-valid input is not refused with 400/422; `Allow` on a 405
lists the resource's methods; an operation documented as authenticated refuses a missing or invalid token.
`negative_data_rejection` is left out on purpose: FastAPI ignores unknown query parameters (by design), and the owner
token sent with every case replaces the malformed `Authorization` values the negative mode generates, so its reports
would be about the harness, not the server.

Path parameters come, 80% of the time, from resources seeded before the run (workspace `local`, project `fuzz`, app
`web` and its environments), so cases get past the 404s into the handlers; otherwise they are generated. One case is
excluded: revoking the bootstrap token itself, after which every case would be a 401.

The generated cases are counted per operation; the last fuzz test prints the counts (and records them as junit
properties) and fails if any operation that ran got no case. Runs are deterministic (`derandomize`), about 15 s.
Deeper local runs: RHONE_FUZZ_EXAMPLES=200 RHONE_FUZZ_RANDOM=1 .venv/bin/python -m pytest tests/local/test_fuzz.py
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, assume, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    ignored_auth,
    missing_required_header,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from rhone_local.notify import ChangeNotifier
from rhone_local.pipeline import build_pipeline
from rhone_local.server import WORKSPACE, bootstrap, ensure_topology, standalone_api
from rhone_local.store import Store
from rhone_local.topology import Topology
from rhone_local.workers import Workers

REPO = Path(__file__).resolve().parents[2]
OPENAPI = REPO / "schemas" / "openapi.json"
MAX_EXAMPLES = int(os.environ.get("RHONE_FUZZ_EXAMPLES") or 25)
DERANDOMIZE = not os.environ.get("RHONE_FUZZ_RANDOM")
PROJECT, APP, ENVIRONMENTS = "fuzz", "web", ("preview", "production")

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    positive_data_acceptance,
    missing_required_header,
    unsupported_method,
    allow_header_conformance,
    ignored_auth,
]

CONFIG = schemathesis.Config.from_dict(
    {
        "generation": {"mode": "all", "max-examples": MAX_EXAMPLES},
        "dictionaries": {
            "ws": {"values": [WORKSPACE]},
            "prj": {"values": [PROJECT]},
            "app": {"values": [APP]},
            "env": {"values": list(ENVIRONMENTS)},
        },
        "parameters": {
            f"path.{name}": {"dictionary": name, "probability": 0.8} for name in ("ws", "prj", "app", "env")
        },
    }
)
schema = schemathesis.openapi.from_path(OPENAPI, config=CONFIG)
# One worker runs the whole module in order when the suite runs in parallel (`--dist loadgroup`): its tests share one
# Rhone Local (`rhone_api`), and `test_fuzz_generated_cases` sums what every `test_api` before it sent.
pytestmark = pytest.mark.xdist_group("fuzz")
_current_app: list[Any] = []  # the app of the active `rhone_api` fixture


async def _forward(scope: dict, receive: Any, send: Any) -> None:
    """The ASGI app schemathesis sends every case, and every probe a check sends, to: the fixture's app."""
    assert _current_app, "no Rhone Local app: the rhone_api fixture is not active"
    await _current_app[0](scope, receive, send)


# Set before the operations are built: they take the schema's app, and so do the checks' probes.
schema.app = _forward


@dataclass
class RhoneApi:
    """A bootstrapped Rhone Local (store, workers, app) in a temporary data directory, and the case counts."""

    app: Any
    token: str
    token_id: str
    cases: Counter = field(default_factory=Counter)
    statuses: dict[str, Counter] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def get(self, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
        async def get() -> httpx.Response:
            async with _client(self.app, headers or {}) as client:
                return await client.get(path)

        return anyio.run(get)


def _client(app: Any, headers: dict[str, str]) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://rhone.test", headers=headers)


@pytest.fixture(scope="module")
def rhone_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RhoneApi]:
    data_dir = tmp_path_factory.mktemp("rhone-fuzz")
    store = Store(data_dir / "rhone.db")
    bootstrap(store, data_dir)
    ensure_topology(store)
    token = (data_dir / "owner.token").read_text().strip()
    bootstrap_token = store.one("SELECT id FROM tokens WHERE name = 'bootstrap'")
    assert bootstrap_token is not None
    notifier = ChangeNotifier()
    # Binding, service and region operations run here too (scale needs a route owner, which fuzzing never makes).
    pipeline = build_pipeline(store, data_dir, edge_port=None)
    topology = Topology(store, pipeline)
    workers = Workers(store, notifier, stage_delay=0, topology=topology)
    app = standalone_api(store, notifier)
    api = RhoneApi(app=app, token=token, token_id=bootstrap_token["id"])
    workers.start()
    _current_app.append(app)
    try:
        anyio.run(_seed, app, api.auth)
        yield api
    finally:
        _current_app.clear()
        workers.stop()
        pipeline.engines.stop_all()  # the Redis and NATS servers the fuzzed service bindings started
        store.close()


async def _seed(app: Any, auth: dict[str, str]) -> None:
    """Create project `fuzz` and app `web` (with its preview and production environments), waiting for each."""
    base = f"/v1/workspaces/{WORKSPACE}/projects"
    async with _client(app, auth) as client:
        for path, name in ((base, PROJECT), (f"{base}/{PROJECT}/apps", APP)):
            response = await client.post(path, json={"name": name})
            assert response.status_code == 202, response.text
            op = response.json()
            deadline = time.monotonic() + 10
            while not op["terminal"]:
                assert time.monotonic() < deadline, f"seed operation {op['id']} stuck in {op['state']}"
                params = {"wait": 5, "after_version": op["version"]}
                op = (await client.get(f"/v1/operations/{op['id']}", params=params)).json()
            assert op["state"] == "succeeded", op


@pytest.fixture
def operation_label(request: pytest.FixtureRequest, rhone_api: RhoneApi) -> str:
    """Register the operation under test, so that the summary also sees an operation that generated no case."""
    label = getattr(request.node, "operation_label", None) or request.node.name
    with rhone_api.lock:
        rhone_api.statuses.setdefault(label, Counter())
    return label


def test_committed_openapi_is_what_the_app_serves(rhone_api: RhoneApi) -> None:
    served = rhone_api.get("/v1/openapi.json").json()
    assert served == json.loads(OPENAPI.read_text()), "schemas/openapi.json is stale: python -m rhone_local.openapi"


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=DERANDOMIZE,  # the same cases every run: a failure is reproducible, not a flake
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_api(case: schemathesis.Case, rhone_api: RhoneApi, operation_label: str) -> None:
    assume((case.path_parameters or {}).get("token_id") != rhone_api.token_id)
    checks = CHECKS
    if operation_label.endswith("/deployments") and case.method == "POST":
        # A manifest's cross-entry rules (paths sorted, unique, normalized, no file that is also a directory) are
        # beyond JSON Schema: a schema-valid manifest may still be a documented 422 `invalid_manifest`.
        checks = [c for c in CHECKS if c is not positive_data_acceptance]
    if operation_label.endswith("/services") and case.method == "POST":
        # Which provider can serve which runtime-service kind (NATS serves no cache or session), and a kind both bound
        # and unbound, are rules beyond JSON Schema: a schema-valid request may be a documented 422.
        checks = [c for c in CHECKS if c is not positive_data_acceptance]
    if operation_label.endswith("/v1/device/token"):
        # RFC 8628 answers a well-formed poll with 400 until it succeeds (authorization_pending, slow_down,
        # invalid_grant for a code the server does not know): schema-valid is not enough to be accepted.
        checks = [c for c in CHECKS if c is not positive_data_acceptance]
    # Long-polls hold a request up to their `wait` (logs: 25 s), beyond schemathesis's default 10 s read timeout.
    response = case.call_and_validate(headers=rhone_api.auth, checks=checks, timeout=60)
    with rhone_api.lock:
        rhone_api.cases[operation_label] += 1
        rhone_api.statuses[operation_label][response.status_code] += 1


def test_fuzz_generated_cases(rhone_api: RhoneApi, record_property: Any, capsys: pytest.CaptureFixture) -> None:
    """Runs after `test_api` (definition order): print the cases sent per operation; every count must be > 0."""
    if not rhone_api.statuses:
        pytest.skip("no fuzz case ran in this session (select the whole module)")
    total = sum(rhone_api.cases.values())
    lines = [
        f"schemathesis {schemathesis.__version__}: {total} generated cases sent over {len(rhone_api.statuses)} "
        f"operations (coverage cases + up to {MAX_EXAMPLES} per generation mode; derandomize={DERANDOMIZE})"
    ]
    for label in sorted(rhone_api.statuses):
        statuses = " ".join(f"{code}×{n}" for code, n in sorted(rhone_api.statuses[label].items()))
        lines.append(f"  {rhone_api.cases[label]:>5}  {label}  [{statuses}]")
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    record_property("fuzz_cases_total", total)
    for label in sorted(rhone_api.statuses):
        record_property(f"fuzz_cases[{label}]", rhone_api.cases[label])
    assert total > 0
    assert [label for label in rhone_api.statuses if rhone_api.cases[label] == 0] == [], "operations without cases"
    # The bootstrap token survived the run, so the cases were really authenticated.
    assert rhone_api.get("/v1/whoami", rhone_api.auth).status_code == 200


# -- inputs the generator does not produce: lone surrogates (its JSON is valid UTF-8) and past bugs --------------------
APPS = f"/v1/workspaces/{WORKSPACE}/projects/{PROJECT}/apps"


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        # `user_id` was the one unconstrained string: "\ud800" reached SQLite and failed there (500).
        ("POST", f"/v1/workspaces/{WORKSPACE}/tokens", {"name": "t", "user_id": "\ud800"}, 422),
        # Environment names given with an app were not validated: a lone surrogate answered 500 after the operation
        # was committed, and its stored params then made GET .../operations a 500 for good ...
        ("POST", APPS, {"name": "edge-one", "environments": {"\ud800": {}}}, 422),
        # ... and any other string became an environment name ("Bad Name!"), unlike `POST .../environments`.
        ("POST", APPS, {"name": "edge-two", "environments": {"Bad Name!": {}}}, 422),
        ("POST", APPS, {"name": "edge-three", "environments": {"staging": {"frozen": True}}}, 202),
        ("POST", f"/v1/workspaces/{WORKSPACE}/members", {"email": "\ud800@example.test", "role": "viewer"}, 422),
    ],
    ids=["token-user-id-surrogate", "app-env-surrogate", "app-env-bad-name", "app-env-good-name", "email-surrogate"],
)
def test_edge_inputs(rhone_api: RhoneApi, method: str, path: str, body: dict, status: int) -> None:
    operation = schema[path.replace(f"/{WORKSPACE}/", "/{ws}/").replace(f"/{PROJECT}/", "/{prj}/")][method]
    parameters = {"ws": WORKSPACE, "prj": PROJECT}
    case = operation.Case(
        path_parameters={k: v for k, v in parameters.items() if "{" + k + "}" in operation.path},
        body=body,
        media_type="application/json",
    )
    response = case.call_and_validate(headers=rhone_api.auth, checks=CHECKS)
    assert response.status_code == status, response.text
    assert rhone_api.get(f"/v1/workspaces/{WORKSPACE}/operations", rhone_api.auth).status_code == 200


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        (f"/v1/workspaces/{WORKSPACE}/projects", "GET, POST"),
        (f"/v1/workspaces/{WORKSPACE}/tokens/tok_x", "DELETE"),
        ("/v1/health", "GET"),
    ],
)
def test_405_lists_every_method_of_the_resource(rhone_api: RhoneApi, path: str, allowed: str) -> None:
    """Starlette's 405 named only the first matching route's methods (`Allow: GET` on GET+POST collections)."""

    async def put() -> httpx.Response:
        async with _client(rhone_api.app, rhone_api.auth) as client:
            return await client.put(path, json={})

    response = anyio.run(put)
    assert response.status_code == 405
    assert response.headers["allow"] == allowed

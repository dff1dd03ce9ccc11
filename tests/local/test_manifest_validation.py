"""The server never trusts a client's manifest: every rule is re-checked, and oversized fields are refused."""

from __future__ import annotations

import pytest

from rhone_local.domain import manifest as manifests
from rhone_local.domain.canonical import canonical_bytes
from rhone_local.domain.errors import DomainError

from .conftest import BASE, LocalEnv

HEX = "a" * 64


def entry(path: str, size: int = 1, mode: str = "644", sha256: str = HEX) -> dict:
    return {"path": path, "size": size, "mode": mode, "sha256": sha256}


@pytest.mark.parametrize(
    "files, problem",
    [
        ([entry("../etc/passwd")], "not a normalized relative path"),
        ([entry("/etc/passwd")], "not a normalized relative path"),
        ([entry("a//b")], "not a normalized relative path"),
        ([entry("a/./b")], "not a normalized relative path"),
        ([entry("a\\b")], "not a normalized relative path"),
        ([entry("C:/x")], "not a normalized relative path"),
        ([entry("a\x01b")], "not a normalized relative path"),
        ([entry("b"), entry("a")], "not sorted"),
        ([entry("a"), entry("a")], "duplicate"),
        ([entry("a"), entry("a/b")], "both a file and a directory"),
        ([entry("x" * 1025)], "at most 1024"),
        ([entry("a", size=-1)], "size"),
        ([entry("a", size=3 * 1024**3)], "size"),
        ([entry("a", mode="777")], "mode"),
        ([entry("a", sha256="A" * 64)], "sha256"),
        ([entry("a", sha256="a" * 63)], "sha256"),
    ],
)
def test_bad_manifests_are_refused_with_the_reason(files: list[dict], problem: str) -> None:
    with pytest.raises(DomainError) as refused:
        manifests.validate({"version": 1, "files": files})
    assert refused.value.code == "invalid_manifest"
    assert problem in refused.value.message


def test_too_many_files_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(manifests, "MAX_FILES", 3)
    files = [entry(f"f{i}") for i in range(4)]
    with pytest.raises(DomainError, match="too many files"):
        manifests.validate({"version": 1, "files": files})


def test_the_digest_is_the_sha256_of_the_canonical_json() -> None:
    import hashlib

    document = {"version": 1, "files": [entry("a b/ü.txt", 3, "755")]}
    canonical = ('{"files":[{"mode":"755","path":"a b/ü.txt","sha256":"' + HEX + '","size":3}],"version":1}').encode()
    assert canonical_bytes(document) == canonical
    assert manifests.digest_of(document) == "sha256:" + hashlib.sha256(canonical).hexdigest()


def test_every_digest_is_taken_over_the_same_canonical_bytes() -> None:
    """One canonical JSON (domain/canonical.py): the manifest digest, the idempotency fingerprint and the route
    snapshot checksum hash the same bytes, and the CLI's manifest builder produces them too. Non-ASCII text is
    UTF-8, never \\u-escaped (a fingerprint over escaped text would differ from the manifest's bytes)."""
    import hashlib

    from rhone_cli.artifacts.manifest import canonical_bytes as cli_canonical_bytes
    from rhone_local.domain.routing import Owner, checksum
    from rhone_local.operations.unit_of_work import body_hash

    document = {"z": [1, {"é": "ü", "a": None}], "a": "b/ü.txt"}
    expected = '{"a":"b/ü.txt","z":[1,{"a":null,"é":"ü"}]}'.encode()
    assert canonical_bytes(document) == cli_canonical_bytes(document) == expected
    assert manifests.digest_of(document) == "sha256:" + hashlib.sha256(expected).hexdigest()
    assert body_hash(document) == hashlib.sha256(expected).hexdigest()
    owners = {"wéb--production": Owner("dep_1", "sha256:" + HEX, 3)}
    snapshot = {
        "seq": 7,
        "owners": {"wéb--production": {"deployment_id": "dep_1", "artifact_digest": "sha256:" + HEX, "epoch": 3}},
    }
    assert checksum(7, owners) == "sha256:" + hashlib.sha256(canonical_bytes(snapshot)).hexdigest()


@pytest.mark.parametrize(
    "field, value",
    [("path", "p" * 5000), ("size", 2**40), ("sha256", "z" * 64), ("mode", "4755")],
)
def test_oversized_or_malformed_fields_are_a_422_and_create_nothing(local: LocalEnv, field: str, value) -> None:
    project = local.create_project()
    app = local.create_app(project)
    bad = {**entry("app.py"), field: value}
    body = {
        "manifest": {"version": 1, "files": [bad]},
        "manifest_digest": "sha256:" + HEX,
        "config": {"build": {}, "process": {"start": "true"}},
    }
    before = local.store.count("deployments")
    response = local.client.post(
        f"{BASE}/projects/{project['name']}/apps/{app['name']}/deployments", json=body, headers=local.owner.headers
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_request"
    assert local.store.count("deployments") == before


def test_oversized_names_are_refused(local: LocalEnv) -> None:
    response = local.client.post(f"{BASE}/projects", json={"name": "a" * 41}, headers=local.owner.headers)
    assert response.status_code == 422
    assert local.store.count("operations") == 0

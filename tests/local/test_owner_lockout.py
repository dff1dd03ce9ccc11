"""An owner cannot lock every owner out of a workspace (issue 12, item 8), and a locked-out Rhone Local owner recovers
through the data directory.

The attack: the owner revoked their own last token, and nothing could issue another.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import httpx
import pytest

from rhone_local import server
from rhone_local.domain.access import hash_token

from .conftest import BASE, LocalEnv, auth


def revoke(local: LocalEnv, token_id: str, headers: dict[str, str] | None = None):
    return local.client.delete(f"{BASE}/tokens/{token_id}", headers=headers or local.owner.headers)


def owner_token_id(local: LocalEnv) -> str:
    principal = local.store.principal_for_token(hash_token(local.owner.token))
    assert principal is not None
    return principal.token_id


def assert_refused_last_owner_token(local: LocalEnv, token_id: str, headers: dict[str, str]) -> None:
    before, audit_before = local.snapshot(), local.store.count("audit")
    response = revoke(local, token_id, headers)
    assert response.status_code == 409, response.text
    error = response.json()["error"]
    assert error["code"] == "last_owner_token"
    assert token_id in error["message"]
    assert "rhone local recover-owner" in error["details"]["hint"]
    assert local.snapshot() == before  # the token is not revoked; nothing else changed
    assert local.store.count("audit") == audit_before + 1
    [record] = local.audit_for(response.headers["X-Request-Id"])
    assert (record["action"], record["result"], record["detail"]) == (
        "token.revoke",
        "failed",
        {"code": "last_owner_token"},
    )


def test_the_last_owner_cannot_revoke_their_last_token(local: LocalEnv) -> None:
    bootstrap_token = owner_token_id(local)
    assert_refused_last_owner_token(local, bootstrap_token, local.owner.headers)
    assert local.client.get("/v1/whoami", headers=local.owner.headers).status_code == 200

    # With a second owner token, the first may go; then the second is the last.
    second = local.issue_token(local.owner.id, "second")
    assert revoke(local, bootstrap_token).status_code == 200
    assert local.client.get("/v1/whoami", headers=local.owner.headers).status_code == 401
    local.owner.token = second["secret"]  # the owner's working token from now on
    assert_refused_last_owner_token(local, second["id"], auth(second["secret"]))

    # Tokens that cannot act as an owner do not count: an admin's, and an owner's expired one.
    local.make_user("admin")
    expired = local.issue_token(local.owner.id, "expired")
    with local.store.write() as c:
        c.execute("UPDATE tokens SET expires_at = '2000-01-01T00:00:00.000Z' WHERE id = ?", (expired["id"],))
    assert_refused_last_owner_token(local, second["id"], auth(second["secret"]))


def test_another_owner_with_a_valid_token_lets_the_first_go(local: LocalEnv) -> None:
    # There is no API to make a second owner but the owner's invite.
    other = local.make_user("owner")
    assert revoke(local, owner_token_id(local)).status_code == 200
    local.owner = other  # the remaining owner reads the audit log from now on
    assert other.token_id is not None
    assert_refused_last_owner_token(local, other.token_id, other.headers)


def test_two_concurrent_revocations_of_the_last_two_owner_tokens_leave_one(local: LocalEnv, live_url: str) -> None:
    second = local.issue_token(local.owner.id, "second")
    tokens = {owner_token_id(local): local.owner.token, second["id"]: second["secret"]}
    barrier = threading.Barrier(2)
    statuses: dict[str, tuple[int, str | None]] = {}

    def revoke_own(token_id: str) -> None:
        barrier.wait()
        response = httpx.delete(f"{live_url}{BASE}/tokens/{token_id}", headers=auth(tokens[token_id]), timeout=30)
        statuses[token_id] = (response.status_code, response.json().get("error", {}).get("code"))

    threads = [threading.Thread(target=revoke_own, args=(token_id,)) for token_id in tokens]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(statuses.values(), key=repr) == sorted([(200, None), (409, "last_owner_token")], key=repr)
    assert len(local.store.owner_tokens(local.store.conn, local.workspace_id)) == 1


def lock_out(local: LocalEnv) -> None:
    """The way an owner still gets locked out: their only owner token expires."""
    with local.store.write() as c:
        c.execute("UPDATE tokens SET expires_at = '2000-01-01T00:00:00.000Z' WHERE subject_id = ?", (local.owner.id,))
    assert local.client.get("/v1/whoami", headers=local.owner.headers).status_code == 401


def test_a_locked_out_owner_recovers_through_the_data_directory(local: LocalEnv, capsys) -> None:
    lock_out(local)
    old_file = (local.data_dir / "owner.token").read_text()
    tokens_before = local.store.count("tokens")
    assert server.main(["recover-owner", "--data-dir", str(local.data_dir)]) == 0
    doc = json.loads(capsys.readouterr().out)
    secret = (local.data_dir / "owner.token").read_text().strip()
    assert secret != old_file.strip() and secret not in json.dumps(doc)
    assert (local.data_dir / "owner.token").stat().st_mode & 0o777 == 0o600
    assert local.store.count("tokens") == tokens_before + 1
    who = local.client.get(BASE, headers=auth(secret))
    assert (who.status_code, who.json()["role"]) == (200, "owner")
    local.owner.token = secret
    [record] = [r for r in local.audit_rows() if r["action"] == "token.recover"]
    assert (record["actor_id"], record["target"], record["result"]) == (local.owner.id, doc["token_id"], "allowed")


def test_recovery_refuses_a_data_directory_without_a_workspace(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as refused:
        server.main(["recover-owner", "--data-dir", str(tmp_path)])
    assert "does not exist or is empty" in str(refused.value.code)
    assert not (tmp_path / "owner.token").exists() and not (tmp_path / "rhone.db").exists()


@pytest.mark.slow
def test_rhone_local_recover_owner(local: LocalEnv, rhone) -> None:
    lock_out(local)
    result = rhone("local", "recover-owner", "--data-dir", str(local.data_dir), "--json")
    assert result.exit_code == 0, result.stderr
    doc = result.json()
    assert (doc["workspace"], doc["profile_updated"]) == ("local", False)
    assert "rhone local up" in result.stderr
    secret = (local.data_dir / "owner.token").read_text().strip()
    assert local.client.get(BASE, headers=auth(secret)).json()["role"] == "owner"

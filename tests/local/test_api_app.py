"""The `api_app` fixture (tests/conftest.py): the real API app and workers in process, for tests of clients."""

from __future__ import annotations

from fastapi.testclient import TestClient


def test_api_app_serves_the_api_and_drives_operations_synchronously(api_app) -> None:
    headers = {"Authorization": f"Bearer {api_app.owner_token}"}
    with TestClient(api_app.app) as client:
        accepted = client.post("/v1/workspaces/local/projects", json={"name": "shop"}, headers=headers)
        assert accepted.status_code == 202, accepted.text
        assert accepted.json()["outcome"] == "running"
        assert api_app.run_operations() == [accepted.json()["id"]]
        assert api_app.run_operations() == []  # nothing runnable is left
        done = client.get(f"/v1/operations/{accepted.json()['id']}", headers=headers).json()
        assert (done["state"], done["outcome"]) == ("succeeded", "succeeded")
        projects = client.get("/v1/workspaces/local/projects", headers=headers).json()["items"]
    assert [p["name"] for p in projects] == ["shop"]
    assert (api_app.data_dir / "rhone.db").is_file()

"""`rhone local down` in the middle of a deploy: nothing keeps running, and the deploy resumes, never fails for it."""

from __future__ import annotations

from tests.e2e.helpers import hello_app, linked, processes_under, wait_until


def test_stopping_while_a_preview_starts_leaves_no_process_and_the_deploy_resumes(local, tmp_path):
    # The app sleeps before it listens, so the shutdown lands while the readiness probe is under way.
    app_dir = linked(local, hello_app(tmp_path, start="sleep 8 && exec python3 app.py", readiness_timeout=30))
    started = local.rhone("deploy", "--no-wait", "--json", cwd=app_dir)
    assert started.exit_code == 0, started.stderr
    op_id = started.json()["id"]
    assert wait_until(lambda: local.json("op", "show", op_id)["state"] == "validating", timeout=30)
    # The allocation's process is up (it sleeps 8 s before it listens): not ready yet.
    assert wait_until(lambda: processes_under(local.data_dir), timeout=30), "the preview's process should be starting"

    down = local.rhone("local", "down", "--json")
    assert down.exit_code == 0 and down.json()["forced"] is False  # a clean stop, well within its grace period
    assert processes_under(local.data_dir) == {}, "an allocation process outlived the shutdown"

    assert local.up().exit_code == 0
    waited = local.rhone("op", "wait", op_id, "--wait-timeout", "60", "--json")
    assert waited.exit_code == 0, waited.stdout
    states = [s["state"] for s in waited.json()["stages"]]
    assert states == ["queued", "cloning", "building", "validating", "preview_ready"], states

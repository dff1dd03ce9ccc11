"""`rhone local down` in the middle of a deploy: nothing keeps running, and the deploy resumes, never fails for it."""

from __future__ import annotations

import signal
import subprocess
import sys

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


def _stand_in_server(data_dir, *, exits_after_sigterm: float | None) -> subprocess.Popen:
    """A process `rhone local down` takes for the server of `data_dir` (its command line names `rhone_local serve
    --data-dir DIR`, and the pid file names it) that ignores SIGTERM, or takes `exits_after_sigterm` seconds to
    stop: a server still draining or handing its instances over."""
    data_dir.mkdir(parents=True, exist_ok=True)
    on_term = (
        "signal.SIG_IGN"
        if exits_after_sigterm is None
        else f"lambda *_: (time.sleep({exits_after_sigterm}), sys.exit(0))"
    )
    code = (
        f"import signal, sys, time; signal.signal(signal.SIGTERM, {on_term}); print('up', flush=True); time.sleep(120)"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code, "rhone_local", "serve", "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE,
        text=True,
        restore_signals=True,
    )
    assert process.stdout.readline() == "up\n"  # its SIGTERM handler is in place
    (data_dir / "rhone-local.pid").write_text(f"{process.pid}\n")
    return process


def test_local_down_waits_its_timeout_for_a_clean_stop_then_kills(local_env):
    slow = _stand_in_server(local_env.data_dir, exits_after_sigterm=2)
    try:
        down = local_env.rhone("local", "down", "--timeout", "20", "--json")
        assert down.exit_code == 0, down.stderr
        assert down.json()["forced"] is False  # two seconds of stopping fit in twenty
        assert "was killed" not in down.stderr, down.stderr
        assert slow.wait(timeout=10) == 0  # it ended by its own hand, not by SIGKILL
    finally:
        slow.kill()
        slow.wait()

    stuck = _stand_in_server(local_env.data_dir, exits_after_sigterm=None)
    try:
        down = local_env.rhone("local", "down", "--timeout", "1", "--json")
        assert down.exit_code == 0, down.stderr
        assert down.json()["forced"] is True
        # Said on stderr, even with --json: what a kill leaves running, and what takes care of it.
        assert "did not stop within 1s and was killed (SIGKILL)" in down.stderr, down.stderr
        assert "the next `rhone local up` adopts or stops them" in down.stderr
        assert stuck.wait(timeout=10) == -signal.SIGKILL
        assert not (local_env.data_dir / "rhone-local.pid").exists()
    finally:
        stuck.kill()
        stuck.wait()

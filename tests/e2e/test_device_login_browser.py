"""`rhone login --device` approved and denied in a real headless Chromium: the real `rhone` against a real Rhone Local
(`rhone local up`), the approval page driven as a person would — open the address the terminal printed, check the
code, give a token, press a button.

Needs Debian's chromium and chromium-driver (`.ci/run` installs them) and selenium (dev extra); skipped, naming
what is missing, otherwise. Chromium runs with the flags this machine needs (no sandbox as root, no background
networking) and a fresh profile directory.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import RHONE_BIN
from tests.e2e.helpers import CHROME_FLAGS


@pytest.fixture
def browser(tmp_path: Path):
    webdriver = pytest.importorskip("selenium.webdriver")
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not chromedriver:
        pytest.skip("chromium and chromium-driver are not installed (.ci/run installs them)")
    os.environ.setdefault("SE_OFFLINE", "true")  # never let selenium look for a driver to download
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROME_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def _start_login(local) -> tuple[subprocess.Popen, str, str]:
    """`rhone login --device` in the background; returns it with the address and code it printed."""
    proc = subprocess.Popen(
        [
            str(RHONE_BIN),
            "login",
            "--device",
            "--no-browser",
            "--profile",
            "hosted",
            "--api-url",
            local.api_url,
            "--json",
        ],
        cwd=local.cwd,
        env=local.environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    first, second = proc.stderr.readline(), proc.stderr.readline()
    url = re.search(r"open (\S+)", first)
    code = re.search(r"shows the code ([A-Z]{4}-[A-Z]{4})", second)
    assert url and code, (first, second)
    return proc, url.group(1), code.group(1)


def _finish(proc: subprocess.Popen) -> tuple[int, dict]:
    stdout, _ = proc.communicate(timeout=60)
    return proc.returncode, json.loads(stdout)


def _act_on_page(browser, url: str, code: str, token: str, button: str) -> str:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url)
    assert browser.find_element(By.ID, "user_code").get_attribute("value") == code  # the code the terminal shows
    browser.find_element(By.ID, "token").send_keys(token)
    browser.find_element(By.ID, button).click()
    WebDriverWait(browser, 30).until(expected_conditions.presence_of_element_located((By.ID, "result")))
    return browser.find_element(By.ID, "result").text


def test_approving_in_a_browser_logs_the_terminal_in(local, browser):
    proc, url, code = _start_login(local)
    try:
        assert url.startswith(f"{local.api_url}/device?code=")
        assert _act_on_page(browser, url, code, local.owner_token(), "approve") == "Login approved"
        status, doc = _finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()

    assert status == 0, doc
    assert doc["profile"] == "hosted" and doc["expires_at"] and doc["identity"]["kind"] == "user"
    whoami = local.json("whoami", "--profile", "hosted")
    assert whoami["identity"]["id"] == doc["identity"]["id"]
    assert local.owner_token() not in json.dumps(whoami)


def test_denying_in_a_browser_is_exit_3_for_the_terminal(local, browser):
    proc, url, code = _start_login(local)
    try:
        assert _act_on_page(browser, url, code, local.owner_token(), "deny") == "Login denied"
        status, doc = _finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()

    assert status == 3
    assert doc["error"]["code"] == "access_denied"
    assert local.rhone("whoami", "--profile", "hosted").exit_code == 3  # nothing was stored for that profile

"""Where tokens are stored and read: keyring, the 0600 file fallback, env and flag precedence, and secrecy."""

from __future__ import annotations

import json
import os
import stat
import textwrap
import threading
from pathlib import Path

import pytest

from rhone_cli.config import credentials as credentials_module

TOKEN = "rht_secret_4f9a1c2e8b7d"

FAKE_KEYRING = textwrap.dedent(
    """
    import json, os
    from keyring.backend import KeyringBackend

    class FileRing(KeyringBackend):
        priority = 1

        def _load(self):
            try:
                with open(os.environ["FAKERING_PATH"]) as f:
                    return json.load(f)
            except FileNotFoundError:
                return {}

        def get_password(self, service, username):
            return self._load().get(f"{service}/{username}")

        def set_password(self, service, username, password):
            data = self._load()
            data[f"{service}/{username}"] = password
            with open(os.environ["FAKERING_PATH"], "w") as f:
                json.dump(data, f)

        def delete_password(self, service, username):
            data = self._load()
            data.pop(f"{service}/{username}")
            with open(os.environ["FAKERING_PATH"], "w") as f:
                json.dump(data, f)
    """
)


def _credentials_file(environ: dict[str, str]) -> Path:
    return Path(environ["RHONE_CONFIG_DIR"]) / "credentials.toml"


def test_no_keyring_falls_back_to_a_0600_file_with_one_warning(rhone_subprocess, base_environ):
    result = rhone_subprocess(
        "login", "--api-url", "http://127.0.0.1:9", "--with-token", "--no-verify", stdin=TOKEN + "\n"
    )
    assert result.exit_code == 0, result.stderr
    path = _credentials_file(base_environ)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert TOKEN in path.read_text()
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, result.stderr
    assert str(path) in warnings[0] and "keyring" in warnings[0]
    assert TOKEN not in result.stdout + result.stderr
    config = (Path(base_environ["RHONE_CONFIG_DIR"]) / "config.toml").read_text()
    assert 'credential_store = "file"' in config and TOKEN not in config


def test_file_store_is_reused_without_probing_keyring_or_warning_again(rhone, base_environ):
    assert rhone("login", "--api-url", "http://x.test", "--with-token", "--no-verify", stdin=TOKEN).exit_code == 0
    # `login --status` style read without network: resolve() must use the file and stay silent.
    import io

    from rhone_cli.config.credentials import Credentials
    from rhone_cli.environment import Environment
    from rhone_cli.output import Output

    err = io.StringIO()
    env = Environment(stderr=err, environ=base_environ)
    creds = Credentials(env, Output(env))
    credential = creds.resolve(creds.profiles.get("default"))
    assert (credential.token, credential.source) == (TOKEN, "file")
    assert err.getvalue() == ""
    assert TOKEN in env.secrets


def test_working_keyring_is_used_and_no_file_is_written(rhone_subprocess, base_environ, tmp_path):
    (tmp_path / "fakering.py").write_text(FAKE_KEYRING)
    ring = tmp_path / "ring.json"
    environ = {
        "PYTHON_KEYRING_BACKEND": "fakering.FileRing",
        "PYTHONPATH": str(tmp_path),
        "FAKERING_PATH": str(ring),
    }
    result = rhone_subprocess(
        "login",
        "--api-url",
        "http://127.0.0.1:9",
        "--with-token",
        "--no-verify",
        "--json",
        stdin=TOKEN,
        environ=environ,
    )
    assert result.exit_code == 0, result.stderr
    assert result.json()["credential_store"] == "keyring"
    assert json.loads(ring.read_text()) == {"rhone/default": TOKEN}
    assert not _credentials_file(base_environ).exists()
    assert "warning" not in result.stderr
    # logout removes it from the keyring
    result = rhone_subprocess("logout", "--json", environ=environ)
    assert result.exit_code == 0, result.stderr
    assert result.json() == {"profile": "default", "removed_from": ["keyring"]}
    assert json.loads(ring.read_text()) == {}


def test_ci_never_uses_the_keyring(rhone_subprocess, base_environ, tmp_path):
    (tmp_path / "fakering.py").write_text(FAKE_KEYRING)
    ring = tmp_path / "ring.json"
    environ = {
        "PYTHON_KEYRING_BACKEND": "fakering.FileRing",
        "PYTHONPATH": str(tmp_path),
        "FAKERING_PATH": str(ring),
        "CI": "true",
    }
    result = rhone_subprocess("login", "--with-token", "--no-verify", stdin=TOKEN, environ=environ)
    assert result.exit_code == 0, result.stderr
    assert not ring.exists()
    assert TOKEN in _credentials_file(base_environ).read_text()


def test_a_hanging_keyring_times_out_and_falls_back(rhone, base_environ, monkeypatch):
    import keyring

    monkeypatch.setattr(credentials_module, "KEYRING_TIMEOUT_SECONDS", 0.2)
    entered, hung, returned = threading.Event(), threading.Event(), threading.Event()

    def hanging_backend(*_: object) -> None:  # answers only once the test is over
        entered.set()
        hung.wait(120)
        returned.set()

    monkeypatch.setattr(keyring, "set_password", hanging_backend)
    try:
        result = rhone("login", "--with-token", "--no-verify", stdin=TOKEN)
        # login asked the backend and came back while the backend still hung: it did not wait for it
        assert entered.is_set() and not returned.is_set()
    finally:
        hung.set()
    assert result.exit_code == 0, result.stderr
    assert "did not answer within 0.2s" in result.stderr  # the bound set above, not the default
    assert TOKEN in _credentials_file(base_environ).read_text()


def test_insecure_storage_chooses_the_file_explicitly(rhone, base_environ):
    result = rhone("login", "--with-token", "--no-verify", "--insecure-storage", stdin=TOKEN)
    assert result.exit_code == 0
    assert "warning" not in result.stderr
    assert stat.S_IMODE(_credentials_file(base_environ).stat().st_mode) == 0o600


@pytest.mark.parametrize("bad", ["", "   \n", "two words", "tab\there"])
def test_bad_tokens_are_refused_and_nothing_is_stored(rhone, base_environ, bad):
    result = rhone("login", "--with-token", "--no-verify", stdin=bad)
    assert result.exit_code == 2
    assert "token" in result.stderr
    assert not _credentials_file(base_environ).exists()


def test_login_without_token_source_and_no_tty_names_the_flag(rhone, base_environ):
    result = rhone("login", "--no-verify", tty=False)
    assert result.exit_code == 2
    assert "--with-token" in result.stderr
    assert not _credentials_file(base_environ).exists()


def test_profiles_keep_separate_tokens(rhone, base_environ):
    assert rhone("--profile", "a", "login", "--with-token", "--no-verify", stdin="tok-aaaa").exit_code == 0
    assert rhone("login", "--profile", "b", "--with-token", "--no-verify", stdin="tok-bbbb").exit_code == 0
    text = _credentials_file(base_environ).read_text()
    assert "tok-aaaa" in text and "tok-bbbb" in text
    assert rhone("--profile", "a", "logout").exit_code == 0
    text = _credentials_file(base_environ).read_text()
    assert "tok-aaaa" not in text and "tok-bbbb" in text


def test_token_values_are_masked_in_any_error(rhone):
    # The flag's value shows up in nothing rhone prints, even when an error message would contain it.
    result = rhone("--token", TOKEN, "--api-url", f"http://{TOKEN}.invalid:1", "whoami", "--request-timeout", "2")
    assert result.exit_code == 8
    assert TOKEN not in result.stdout + result.stderr
    assert "********" in result.stderr


def test_credentials_file_never_readable_by_others_even_with_permissive_umask(rhone, base_environ):
    old = os.umask(0)
    try:
        assert rhone("login", "--with-token", "--no-verify", stdin=TOKEN).exit_code == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(_credentials_file(base_environ).stat().st_mode) == 0o600

"""`rhone env set|unset`: bad input is an exit 2 that sends nothing (the API URL here is unreachable, so any request
would be an exit 8), `A=B=C` splits at the first `=`, and secret values come only from $NAME, a file or stdin."""

from __future__ import annotations

import pytest

from rhone_cli.services.settings import parse_assignments

NOWHERE = {"RHONE_API_URL": "http://127.0.0.1:9", "RHONE_TOKEN": "rht_test-token-not-used"}
TARGET = ("--workspace", "local", "--project", "shop", "--app", "web")


def test_the_first_equals_sign_splits() -> None:
    assert parse_assignments(["A=B=C", "EMPTY=", "URL=postgres://u@h/db?x=1"]) == {
        "A": "B=C",
        "EMPTY": "",
        "URL": "postgres://u@h/db?x=1",
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["1A=x"], "a setting's name"),
        (["A-B=x"], "a setting's name"),
        (["PORT=1"], "set by the platform"),
        (["RHONE_X=1"], "set by the platform"),
        (["Rhone_x=1"], "set by the platform"),
        (["JUSTANAME"], "is not NAME=VALUE"),
        (["A=1", "A=2"], "given twice"),
        ([f"A={'x' * (4 * 1024 * 1024)}"], "at most 32768 bytes"),
        ([f"K{i}=v" for i in range(10_000)], "at most 200 settings"),
        ([], "at least one"),
    ],
)
def test_bad_settings_are_refused_before_any_request(rhone, args: list[str], message: str) -> None:
    result = rhone("env", "set", "preview", *args, *TARGET, environ=NOWHERE)
    assert result.exit_code == 2, (result.exit_code, result.stderr[-500:])
    assert message in result.stderr


def test_a_literal_secret_is_refused_and_never_echoed(rhone) -> None:
    result = rhone("env", "set", "preview", "--secret", "SECRET_KEY=hunter2-literal", *TARGET, environ=NOWHERE)
    assert result.exit_code == 2
    assert "not accepted on the command line" in result.stderr and "hunter2-literal" not in result.stderr


def test_secret_names_follow_the_settings_rules(rhone) -> None:
    result = rhone("env", "set", "preview", "--secret", "lower_ok", *TARGET, environ=NOWHERE)
    assert result.exit_code == 2 and "environment variable lower_ok is not set" in result.stderr
    result = rhone("env", "set", "preview", "--secret", "PATH", *TARGET, environ=NOWHERE)
    assert result.exit_code == 2 and "set by the platform" in result.stderr


def test_unset_checks_names_too(rhone) -> None:
    result = rhone("env", "unset", "preview", "1BAD", *TARGET, environ=NOWHERE)
    assert result.exit_code == 2 and "a setting's name" in result.stderr


def test_rhone_toml_env_is_validated_offline(rhone, tmp_path) -> None:
    (tmp_path / "rhone.toml").write_text(
        '[project]\nname = "shop"\n[app]\nname = "web"\n[process]\nstart = "x"\n'
        '[env]\nrequired = ["SECRET_KEY", "9LIVES"]\nHOME = "/root"\nGREETING = "hi"\n'
    )
    result = rhone("config", "validate", "--json", cwd=tmp_path)
    assert result.exit_code == 2
    problems = {p["key"]: p["message"] for p in result.json()["problems"]}
    assert set(problems) == {"env.required[1]", "env.HOME"}

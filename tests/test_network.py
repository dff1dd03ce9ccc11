"""Networks done right: loopback never through a proxy; HTTP(S)_PROXY/ALL_PROXY/NO_PROXY honoured; SOCKS through the
optional extra or a clear refusal; the system trust store plus a CA bundle (`--ca-bundle`, REQUESTS_CA_BUNDLE, …);
TLS failures are `tls_error`, named and never retried.

Real sockets on loopback throughout (tests/netservers.py): an API stand-in, an HTTP forward proxy, a SOCKS5 proxy
and TLS servers with certificates made for the test. Remote-looking names (`rhone.test`) only ever reach a proxy,
which maps them to loopback.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from rhone_cli import network
from rhone_cli.errors import ExitCode, RhoneError
from rhone_cli.http import ApiClient
from tests.netservers import WHOAMI, api_server, http_proxy, make_certificates, refusing_port, socks5_proxy

TOKEN = "rht_network_secret_5e6f7a8b"


@pytest.fixture(autouse=True)
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    recorded: list[float] = []
    monkeypatch.setitem(ApiClient.__init__.__kwdefaults__, "sleep", recorded.append)
    return recorded


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory):
    return make_certificates(tmp_path_factory.mktemp("certs"))


def whoami(rhone, api_url: str, *extra: str, environ: dict | None = None):
    return rhone(
        "whoami", "--json", *extra, environ={"RHONE_API_URL": api_url, "RHONE_TOKEN": TOKEN, **(environ or {})}
    )


# -- proxies -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_loopback_never_goes_through_a_proxy(rhone, host):
    with api_server() as api, refusing_port() as dead:
        proxy = f"http://127.0.0.1:{dead}"
        environ = {"HTTP_PROXY": proxy, "http_proxy": proxy, "ALL_PROXY": proxy, "NO_PROXY": "example.com"}
        result = whoami(rhone, f"http://{host}:{api.port}", environ=environ)

    assert result.exit_code == 0, result.stdout + result.stderr
    assert result.json()["identity"] == WHOAMI
    assert api.requests == ["GET /v1/whoami"]


def test_http_proxy_carries_requests_to_remote_hosts(rhone):
    with api_server() as api, http_proxy() as proxy:
        result = whoami(
            rhone, f"http://rhone.test:{api.port}", environ={"HTTP_PROXY": f"http://127.0.0.1:{proxy.port}"}
        )

    assert result.exit_code == 0, result.stdout + result.stderr
    assert proxy.requests == [f"GET http://rhone.test:{api.port}/v1/whoami"]
    assert api.requests == ["GET /v1/whoami"]


def test_socks_proxy_with_the_extra_installed(rhone):
    if importlib.util.find_spec("socksio") is None:
        pytest.fail("the dev extras install socksio (rhone[socks]); this test needs it")
    with api_server() as api, socks5_proxy() as proxy:
        result = whoami(
            rhone, f"http://rhone.test:{api.port}", environ={"ALL_PROXY": f"socks5://127.0.0.1:{proxy.port}"}
        )

    assert result.exit_code == 0, result.stdout + result.stderr
    assert proxy.requests == [f"CONNECT rhone.test:{api.port}"]
    assert api.requests == ["GET /v1/whoami"]


def test_a_socks_proxy_without_the_extra_is_refused_clearly(rhone, monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "socksio" else real_find_spec(name, *a)
    )
    with socks5_proxy() as proxy:
        result = whoami(rhone, "http://rhone.test:8470", environ={"ALL_PROXY": f"socks5://127.0.0.1:{proxy.port}"})

    assert result.exit_code == ExitCode.USAGE
    error = result.json()["error"]
    assert error["code"] == "socks_unsupported"
    assert f"ALL_PROXY=socks5://127.0.0.1:{proxy.port} is a SOCKS proxy" in error["message"]
    assert "pip install 'rhone[socks]'" in error["hint"]
    assert "ImportError" not in result.stdout + result.stderr
    assert proxy.requests == []


def test_a_proxy_that_refuses_is_named_with_its_variable_and_password_masked(rhone, sleeps):
    with refusing_port() as dead:
        environ = {"HTTPS_PROXY": f"http://user:hunter2pw@127.0.0.1:{dead}"}
        result = whoami(rhone, "https://rhone.test", environ=environ)

    assert result.exit_code == ExitCode.UNREACHABLE
    error = result.json()["error"]
    assert error["code"] == "api_unreachable"
    assert f"through the proxy http://user:********@127.0.0.1:{dead} (from HTTPS_PROXY)" in error["message"]
    assert "NO_PROXY" in error["hint"]
    assert "hunter2pw" not in result.stdout + result.stderr
    assert len(sleeps) == 4  # a refusing proxy may come back: retried like any unreachable server


@pytest.mark.parametrize("value", ["ftp://proxy.example:21", "http://", "socks4://127.0.0.1:1080", "http://p:99999"])
def test_a_proxy_url_rhone_cannot_use_is_a_usage_error(rhone, value):
    result = whoami(rhone, "https://rhone.test", environ={"HTTPS_PROXY": value})
    assert result.exit_code == ExitCode.USAGE
    assert result.json()["error"]["code"] == "invalid_proxy"
    assert "HTTPS_PROXY=" in result.json()["error"]["message"]


@pytest.mark.parametrize(
    ("url", "environ", "expected"),
    [
        ("https://api.example.com", {"HTTPS_PROXY": "http://p:3128"}, "http://p:3128"),
        (
            "https://api.example.com",
            {"https_proxy": "http://lower:1", "HTTPS_PROXY": "http://upper:1"},
            "http://lower:1",
        ),
        ("http://api.example.com", {"HTTPS_PROXY": "http://p:3128"}, None),
        ("http://api.example.com", {"HTTP_PROXY": "p:3128"}, "http://p:3128"),
        ("https://api.example.com", {"ALL_PROXY": "socks5h://s:1080"}, "socks5h://s:1080"),
        ("https://api.example.com", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "example.com"}, None),
        ("https://api.example.com", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": ".example.com"}, None),
        ("https://api.example.com", {"HTTPS_PROXY": "http://p:1", "no_proxy": "*"}, None),
        ("https://api.example.com", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "ample.com"}, "http://p:1"),
        ("https://api.example.com:8443", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "example.com:443"}, "http://p:1"),
        ("https://api.example.com:8443", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "example.com:8443"}, None),
        ("https://10.1.2.3", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "10.0.0.0/8"}, None),
        ("https://10.1.2.3", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "10.1.2.4"}, "http://p:1"),
        ("http://127.0.0.1:8470", {"HTTP_PROXY": "http://p:1", "ALL_PROXY": "http://p:1"}, None),
        ("http://127.1.2.3:8470", {"HTTP_PROXY": "http://p:1"}, None),
        ("http://[::1]:8470", {"HTTP_PROXY": "http://p:1"}, None),
        ("http://hello--production.localhost:8471", {"HTTP_PROXY": "http://p:1"}, None),
    ],
)
def test_which_proxy_a_url_uses(url, environ, expected):
    found = network.proxy_for(url, environ)
    assert (found.url if found else None) == expected


# -- certificates ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("server", "problem"),
    [
        ("self_signed", "self-signed certificate"),
        ("expired", "certificate has expired"),
        ("wrong_host", "IP address mismatch"),
    ],
)
def test_certificate_failures_are_tls_error_named_and_not_retried(rhone, certs, sleeps, server, problem):
    with api_server(tls=getattr(certs, server)) as api:
        result = whoami(rhone, f"https://127.0.0.1:{api.port}", "--ca-bundle", str(certs.ca))

    assert result.exit_code == ExitCode.UNREACHABLE
    error = result.json()["error"]
    assert error["code"] == "tls_error"
    assert error["message"].startswith(f"TLS certificate verification failed for https://127.0.0.1:{api.port}: ")
    assert problem in error["message"]
    assert "--ca-bundle" in error["hint"]
    assert "is the server running" not in result.stdout + result.stderr
    assert error["retryable"] is False
    assert api.connections == 1 and sleeps == []  # one attempt, no retry
    assert api.requests == []


def test_an_unknown_ca_fails_without_a_bundle(rhone, certs):
    with api_server(tls=certs.good) as api:
        result = whoami(rhone, f"https://127.0.0.1:{api.port}")
    assert result.exit_code == ExitCode.UNREACHABLE
    assert result.json()["error"]["code"] == "tls_error"
    assert "unable to get local issuer certificate" in result.json()["error"]["message"]


@pytest.mark.parametrize(
    "how", ["--ca-bundle", "RHONE_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR"]
)
def test_a_private_ca_is_trusted_when_named(rhone, certs, tmp_path, how):
    extra: tuple[str, ...] = ()
    environ: dict[str, str] = {}
    if how == "--ca-bundle":
        extra = ("--ca-bundle", str(certs.ca))
    elif how == "SSL_CERT_DIR":
        import ssl
        import subprocess

        directory = tmp_path / "certs"
        directory.mkdir()
        subject_hash = subprocess.run(
            ["openssl", "x509", "-hash", "-noout", "-in", str(certs.ca)], capture_output=True, text=True, check=True
        ).stdout.strip()
        (directory / f"{subject_hash}.0").write_text(Path(certs.ca).read_text())
        environ = {"SSL_CERT_DIR": str(directory)}
        assert ssl  # the directory layout is OpenSSL's (c_rehash)
    else:
        environ = {how: str(certs.ca)}
    with api_server(tls=certs.good) as api:
        result = whoami(rhone, f"https://127.0.0.1:{api.port}", *extra, environ=environ)

    assert result.exit_code == 0, result.stdout + result.stderr
    assert api.requests == ["GET /v1/whoami"]


def test_the_explicit_bundle_wins_over_the_variables(rhone, certs, tmp_path):
    missing = tmp_path / "missing.pem"
    with api_server(tls=certs.good) as api:
        result = whoami(
            rhone,
            f"https://127.0.0.1:{api.port}",
            "--ca-bundle",
            str(certs.ca),
            environ={"SSL_CERT_FILE": str(missing)},
        )
    assert result.exit_code == 0, result.stdout + result.stderr


@pytest.mark.parametrize("how", ["--ca-bundle", "REQUESTS_CA_BUNDLE"])
def test_an_unusable_bundle_is_a_usage_error_naming_it(rhone, tmp_path, how):
    bundle = tmp_path / "not-a-bundle.pem"
    bundle.write_text("this is not PEM\n")
    extra = ("--ca-bundle", str(bundle)) if how == "--ca-bundle" else ()
    environ = {} if how == "--ca-bundle" else {how: str(bundle)}
    result = whoami(rhone, "https://rhone.test", *extra, environ=environ)

    assert result.exit_code == ExitCode.USAGE
    error = result.json()["error"]
    assert error["code"] == "invalid_ca_bundle"
    assert f"cannot use the CA certificates in {bundle} (from {how})" in error["message"]


def test_tls_failure_finds_the_certificate_problem_in_the_cause_chain():
    import ssl

    inner = ssl.SSLCertVerificationError(1, "verify failed")
    inner.verify_message = "certificate has expired"
    outer = RhoneError("wrapped")
    outer.__cause__ = inner
    assert network.tls_failure(outer) == "certificate has expired"
    assert network.tls_failure(ValueError("no")) is None

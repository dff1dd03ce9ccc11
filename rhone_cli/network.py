"""How rhone reaches the API: which proxy, if any, and which certificates it trusts.

- Loopback (127.0.0.0/8, ::1, `localhost`, `*.localhost`) is never sent through a proxy: Rhone Local answers there,
  and a proxy configured for the internet cannot reach this machine's loopback anyway.
- Otherwise `https_proxy`/`HTTPS_PROXY` (for https URLs), `http_proxy`/`HTTP_PROXY` (for http URLs), then
  `all_proxy`/`ALL_PROXY`, unless `no_proxy`/`NO_PROXY` lists the host (`*`, a domain and its subdomains, an IP
  address or a CIDR range, each optionally with `:port`). SOCKS proxies (`socks5://`, `socks5h://`) need the optional
  `socksio` package (`pip install 'rhone[socks]'`); without it they are refused with that hint, never an ImportError.
- Certificates: the operating system's trust store (truststore), plus, when one is named, a CA bundle: `--ca-bundle`
  (`RHONE_CA_BUNDLE`), else `REQUESTS_CA_BUNDLE`, `CURL_CA_BUNDLE` or `SSL_CERT_FILE` (and the directory
  `SSL_CERT_DIR`), added to the system's CAs.

The settings are read from the run's `Environment` (never `os.environ` behind its back), so tests can set them.
Standard library only at import time; truststore and ssl load when a TLS connection is configured.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from rhone_cli.errors import ExitCode, RhoneError

CA_BUNDLE_VARIABLES = ("RHONE_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE")
PROXY_SCHEMES = ("http", "https", "socks5", "socks5h")


@dataclass(frozen=True)
class Proxy:
    url: str
    variable: str  # where it came from, for messages

    @property
    def shown(self) -> str:
        """The proxy URL with any password masked."""
        parts = urlsplit(self.url)
        if parts.password is None:
            return self.url
        netloc = f"{parts.username}:********@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))


def is_loopback(host: str) -> bool:
    host = host.strip("[]").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    import ipaddress  # ~10 ms: only for hosts that are not named localhost

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _variable(environ: Mapping[str, str], name: str) -> tuple[str, str] | None:
    for variable in (name.lower(), name.upper()):
        value = environ.get(variable, "").strip()
        if value:
            return variable, value
    return None


def _bypassed(host: str, port: int | None, no_proxy: str) -> bool:
    host = host.strip("[]").rstrip(".").lower()
    for raw in no_proxy.split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        entry_host, entry_port = entry, None
        if entry.startswith("[") and "]" in entry:  # [::1]:8080
            entry_host, _, rest = entry[1:].partition("]")
            entry_port = rest.removeprefix(":") or None
        elif entry.count(":") == 1:
            entry_host, entry_port = entry.split(":")
        if entry_port is not None and str(port) != entry_port:
            continue
        if _host_matches(host, entry_host):
            return True
    return False


def _host_matches(host: str, entry: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(host) in ipaddress.ip_network(entry, strict=False)
    except ValueError:
        pass
    entry = entry.lstrip("*").lstrip(".")
    return bool(entry) and (host == entry or host.endswith("." + entry))


def proxy_for(url: str, environ: Mapping[str, str]) -> Proxy | None:
    """The proxy a request to `url` goes through, or None for a direct connection."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if is_loopback(host):
        return None
    no_proxy = _variable(environ, "no_proxy")
    if no_proxy and _bypassed(host, parts.port or (443 if parts.scheme == "https" else 80), no_proxy[1]):
        return None
    found = _variable(environ, f"{parts.scheme}_proxy") or _variable(environ, "all_proxy")
    if found is None:
        return None
    variable, value = found
    if "://" not in value:
        value = "http://" + value  # curl's reading of `proxy.example:3128`
    proxy = Proxy(value, variable)
    _check_proxy(proxy)
    return proxy


def _check_proxy(proxy: Proxy) -> None:
    try:
        parts = urlsplit(proxy.url)
        valid = parts.scheme in PROXY_SCHEMES and bool(parts.hostname)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number from 0 to 65535
    except ValueError:
        valid = False
    if not valid:
        raise RhoneError(
            f"{proxy.variable}={proxy.shown} is not a proxy URL rhone can use",
            code="invalid_proxy",
            exit_code=ExitCode.USAGE,
            hint=f"use http://HOST:PORT, https://…, socks5://… or socks5h://…; or unset {proxy.variable}",
        )
    if parts.scheme.startswith("socks"):
        import importlib.util

        if importlib.util.find_spec("socksio") is None:
            raise RhoneError(
                f"{proxy.variable}={proxy.shown} is a SOCKS proxy, and this installation of rhone has no SOCKS support",
                code="socks_unsupported",
                exit_code=ExitCode.USAGE,
                hint="install it with `pip install 'rhone[socks]'` (the socksio package), or unset "
                f"{proxy.variable} or list the host in NO_PROXY",
            )


def ca_bundle(explicit: str | None, environ: Mapping[str, str]) -> tuple[str, str] | None:
    """(path, where it came from) of the CA bundle to trust besides the system's, when one is named."""
    if explicit:
        return explicit, "--ca-bundle"
    for variable in CA_BUNDLE_VARIABLES:
        if environ.get(variable):
            return environ[variable], variable
    return None


def ssl_context(explicit_bundle: str | None, environ: Mapping[str, str]) -> Any:
    """The TLS settings for an https API or proxy: the OS trust store, plus a named CA bundle or directory."""
    import ssl

    bundle = ca_bundle(explicit_bundle, environ)
    directory = environ.get("SSL_CERT_DIR") or None
    if bundle is None and directory is None:
        import truststore

        return truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # A named bundle is added to the system's CAs with plain OpenSSL verification, which honours it on every platform.
    context = ssl.create_default_context()
    try:
        context.load_verify_locations(cafile=bundle[0] if bundle else None, capath=directory)
    except (OSError, ssl.SSLError) as error:
        source, path = (bundle[1], bundle[0]) if bundle else ("SSL_CERT_DIR", directory)
        raise RhoneError(
            f"cannot use the CA certificates in {path} (from {source}): {getattr(error, 'strerror', None) or error}",
            code="invalid_ca_bundle",
            exit_code=ExitCode.USAGE,
            hint="point it at a PEM file of CA certificates (or unset the variable to use the system's)",
        ) from None
    return context


def tls_failure(error: BaseException) -> str | None:
    """The certificate problem behind a failed connection (e.g. "certificate has expired"), if it was TLS."""
    import ssl

    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, ssl.SSLCertVerificationError):
            return cause.verify_message or str(cause)
        if isinstance(cause, ssl.SSLError):
            return cause.reason or str(cause)
        cause = cause.__cause__ or cause.__context__
    return None

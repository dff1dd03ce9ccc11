"""One run of `rhone`: the environment and output, plus what a command may need, built on first use.

Commands receive an `Invocation` and ask it for the active profile, a token or the API. Nothing is read, imported or
probed until a command asks, which keeps `--help` and completion fast and lets tests swap any piece: `main()` takes a
`client_factory` (like the GitHub CLI's injected HTTP client), so a test runs any command against any transport — an
in-process Rhone Local, a recorder, a stub.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING, Any

from rhone_cli.config.profiles import Profile
from rhone_cli.environment import Environment
from rhone_cli.output import Output

if TYPE_CHECKING:
    from rhone_cli.api import Api
    from rhone_cli.config.credentials import Credential, Credentials
    from rhone_cli.http import ApiClient

# Makes the HTTP client for an API URL and token: `(api_url, token, **settings) -> ApiClient`, where `settings` are
# ApiClient's keyword arguments (timeout, log, transport, proxy, verify, on_token_expired…).
ClientFactory = Callable[..., "ApiClient"]


def http_client(api_url: str, token: str | None, **settings: Any) -> ApiClient:
    """The default client factory: rhone's HTTP client on real sockets (or the Environment's transport)."""
    from rhone_cli.http import ApiClient

    return ApiClient(api_url, token, **settings)


def _check_api_url(url: str) -> None:
    """A malformed URL is a usage error (exit 2), not an unreachable server (exit 8)."""
    from urllib.parse import urlsplit

    from rhone_cli.errors import ExitCode, RhoneError

    try:
        parts = urlsplit(url)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number from 0 to 65535
    except ValueError:  # "http://[::1" (an unclosed IPv6 bracket), "http://host:99999"
        valid = False
    if not valid or any(ord(char) <= 32 or ord(char) == 127 for char in url):
        raise RhoneError(
            f"the API URL {url!r} is not an http(s) URL",
            code="invalid_api_url",
            exit_code=ExitCode.USAGE,
            hint="use a full URL such as http://127.0.0.1:8470 (--api-url, RHONE_API_URL or the profile)",
        )


class Invocation:
    def __init__(self, env: Environment, out: Output | None = None, *, client_factory: ClientFactory | None = None):
        self.env = env
        self.out = out or Output(env)
        self.client_factory = client_factory or http_client
        self._client: ApiClient | None = None
        self.operations: list[str] = []  # ids of the operations this run started or resumed, in order

    @cached_property
    def credentials(self) -> Credentials:
        from rhone_cli.config.credentials import Credentials

        return Credentials(self.env, self.out)

    @property
    def profile_name(self) -> str:
        return (
            self.env.options.profile
            or self.env.environ.get("RHONE_PROFILE")
            or self.credentials.profiles.current_name()
        )

    @cached_property
    def profile(self) -> Profile:
        profile = self.credentials.profiles.get(self.profile_name)
        api_url = self.env.options.api_url or self.env.environ.get("RHONE_API_URL")
        if api_url:
            profile.api_url = api_url
        _check_api_url(profile.api_url)
        return profile

    def credential(self, *, required: bool = True) -> Credential:
        if required:
            return self.credentials.require(self.profile)
        return self.credentials.resolve(self.profile)

    def client(self) -> ApiClient:
        """The API client of this run, with the profile's token — refreshed first when it is about to expire, and
        again (once) if the server says it expired."""
        if self._client is None:
            from rhone_cli import token_refresh

            credential = token_refresh.fresh_credential(self, self.credential())

            def refreshed() -> str | None:
                renewed = token_refresh.refresh(self) if credential.source in ("keyring", "file") else None
                return renewed.token if renewed else None

            self._client = self.new_client(self.profile.api_url, credential.token, on_token_expired=refreshed)
        return self._client

    def api(self) -> Api:
        """The API's endpoints over this run's client (see `client`)."""
        return self.api_for(self.client())

    def api_for(self, client: ApiClient) -> Api:
        """The API's endpoints over another client (a token being checked, or none), keyed like every request."""
        from rhone_cli.api import Api

        return Api(client, self.env.environ)

    def new_client(self, api_url: str, token: str | None, **settings: object) -> ApiClient:
        """A client for `api_url` with this run's timeout, request log, proxy, trusted certificates and network
        (`settings` override them), made by the client factory."""
        from rhone_cli import network

        environ = self.env.environ
        proxy = network.proxy_for(api_url, environ)
        if api_url.startswith("https:") or (proxy is not None and proxy.url.startswith("https:")):
            verify = network.ssl_context(self.env.options.ca_bundle, environ)
        else:
            verify = False  # plain http end to end: no certificate to verify (and no CA bundle to load)
        options: dict = {
            "timeout": self.env.options.request_timeout,
            "log": self.out.debug,
            "transport": self.env.http_transport,
            "proxy": proxy,
            "verify": verify,
        }
        return self.client_factory(api_url, token, **{**options, **settings})

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

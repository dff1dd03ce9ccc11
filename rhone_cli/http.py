"""The one place rhone speaks HTTP (and the only module that imports httpx).

- base URL, `--request-timeout`, `User-Agent: rhone/<version>`, bearer token;
- an `Idempotency-Key` on every POST, the same key on every retry of that request;
- retries with exponential backoff and full jitter on connection errors and on 429/502/503/504, honouring
  `Retry-After`; a POST is retried only because its key makes a replay safe;
- the uniform error body `{"error": {"code", "message", "request_id", "details"}}` becomes a `RhoneError` with the
  documented exit code, and the request id (from the body or `X-Request-Id`) is carried into every error;
- the request log (`--verbose`) never shows the Authorization header.
"""

from __future__ import annotations

import email.utils
import random
import sys
import time
import types
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rhone_cli import __version__
from rhone_cli.api_paths import check_request_path
from rhone_cli.errors import CODE_EXIT_CODES, ExitCode, RhoneError, exit_code_for_status
from rhone_cli.network import Proxy, tls_failure
from rhone_cli.outcomes import EXIT_CATEGORIES

# httpx's package imports its own command-line tool (httpx._main) whenever click is installed, which drags in click,
# rich.console, rich.progress and pygments (~30 ms on every command). rhone never uses that tool: an empty stand-in
# makes httpx's `from ._main import main` fail into its own ImportError fallback.
sys.modules.setdefault("httpx._main", types.ModuleType("httpx._main"))

import httpx  # noqa: E402 - must follow the stand-in above

RETRY_STATUSES = frozenset({429, 502, 503, 504})
# Error codes that mean "a gate said no", whatever status the server chose for them.
MAX_RETRY_AFTER_SECONDS = 60.0
USER_AGENT = f"rhone/{__version__}"


@dataclass
class ApiResponse:
    status: int
    data: Any
    headers: dict[str, str]
    request_id: str | None


def new_idempotency_key() -> str:
    return f"rhone-{uuid.uuid4()}"


def _retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class ApiClient:
    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        max_attempts: int = 5,
        backoff_base: float = 0.25,
        backoff_cap: float = 8.0,
        log: Callable[[str], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
        proxy: Proxy | None = None,
        verify: Any = True,
        on_token_expired: Callable[[], str | None] | None = None,
    ) -> None:
        """`proxy` and `verify` (an SSLContext) come from `rhone_cli.network`; the process environment is never
        consulted behind their back (`trust_env=False`), so a proxy meant for the internet never sees loopback.
        `on_token_expired` returns a new token when the server answers 401 `token_expired` (tried once per request)."""
        self.base_url = base_url.rstrip("/")
        self.max_attempts = max(1, max_attempts)
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self._log = log or (lambda message: None)
        self._sleep = sleep
        self.proxy = proxy
        self._on_token_expired = on_token_expired
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._client = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout),
            transport=transport,
            follow_redirects=False,
            proxy=proxy.url if proxy else None,
            verify=verify,
            trust_env=False,
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- verbs --------------------------------------------------------------------------------------------------
    def get(self, path: str, *, params: dict[str, Any] | None = None, timeout: float | None = None) -> ApiResponse:
        return self.request("GET", path, params=params, timeout=timeout)

    def delete(self, path: str) -> ApiResponse:
        return self.request("DELETE", path)

    def put_stream(self, path: str, chunks: Callable[[], Any], size: int) -> ApiResponse:
        """PUT `size` bytes from the iterator `chunks()` makes; each retry makes a new one (a PUT of content-addressed
        bytes is safe to repeat). An exception the iterator raises ends the request, unretried."""
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        return self.request("PUT", path, content=chunks, headers=headers)

    def post(
        self,
        path: str,
        json: Any = None,
        *,
        idempotency_key: str | None = None,
        idempotent: bool = True,
    ) -> ApiResponse:
        """POST with an Idempotency-Key (generated unless given). `idempotent=False` sends no key and never retries."""
        key = (idempotency_key or new_idempotency_key()) if idempotent else None
        return self.request("POST", path, json=json, idempotency_key=key)

    # -- core ---------------------------------------------------------------------------------------------------
    def _backoff(self, attempt: int) -> float:
        return random.uniform(0, min(self.backoff_cap, self.backoff_base * (2**attempt)))

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        timeout: float | None = None,
        content: Callable[[], Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> ApiResponse:
        check_request_path(path)
        headers = dict(headers or {})
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        # Safe to send again: reads, PUT/DELETE by definition, and a POST whose key makes the server replay it.
        retryable = method != "POST" or idempotency_key is not None
        attempts = self.max_attempts if retryable else 1
        url = f"{self.base_url}{path}"
        last_error: RhoneError | None = None
        for attempt in range(attempts):
            request_timeout = httpx.USE_CLIENT_DEFAULT if timeout is None else httpx.Timeout(timeout)
            key_note = f" idempotency-key={idempotency_key}" if idempotency_key else ""
            self._log(f"→ {method} {url}{key_note} (attempt {attempt + 1}/{attempts})")
            started = time.monotonic()
            try:
                response = self._client.request(
                    method,
                    path,
                    json=json,
                    params=params,
                    headers=headers,
                    timeout=request_timeout,
                    content=content() if content is not None else None,
                )
            except httpx.TransportError as error:
                last_error = self._transport_error(error, method, url)
                self._log(f"← {type(error).__name__}: {last_error.message}")
                if last_error.retryable and attempt + 1 < attempts:
                    self._sleep(self._backoff(attempt))
                    continue
                raise last_error from None
            elapsed_ms = (time.monotonic() - started) * 1000
            request_id = response.headers.get("x-request-id")
            self._log(f"← {response.status_code} {method} {url} in {elapsed_ms:.0f} ms request-id={request_id or '-'}")
            if response.status_code in RETRY_STATUSES and attempt + 1 < attempts:
                delay = _retry_after_seconds(response.headers.get("retry-after"))
                if delay is None:
                    delay = self._backoff(attempt)
                self._sleep(min(delay, MAX_RETRY_AFTER_SECONDS))
                continue
            if response.is_success:
                return ApiResponse(response.status_code, _json_or_none(response), dict(response.headers), request_id)
            error = self._http_error(response, method, url)
            if error.code == "token_expired" and self._renew_token():
                return self.request(
                    method, path, json=json, params=params, idempotency_key=idempotency_key, timeout=timeout,
                    content=content, headers=headers,
                )  # fmt: skip
            if response.status_code in RETRY_STATUSES and retryable:
                error.message += f" (gave up after {attempts} attempts)"
            raise error
        raise last_error or RhoneError("request failed", exit_code=ExitCode.UNREACHABLE)  # pragma: no cover

    def _renew_token(self) -> bool:
        """Swap in a refreshed token, once per client (a second expiry in one run means refreshing does not help)."""
        renew, self._on_token_expired = self._on_token_expired, None
        token = renew() if renew else None
        if token:
            self._client.headers["Authorization"] = f"Bearer {token}"
        return bool(token)

    def _transport_error(self, error: httpx.TransportError, method: str, url: str) -> RhoneError:
        problem = tls_failure(error)
        if problem is not None:
            # Retrying cannot fix a certificate, and "is the server running?" would send people the wrong way.
            return RhoneError(
                f"TLS certificate verification failed for {self.base_url}: {problem}",
                code="tls_error",
                exit_code=ExitCode.UNREACHABLE,
                retryable=False,
                hint="if the API's certificate comes from a private CA, pass --ca-bundle FILE (or set SSL_CERT_FILE or "
                "REQUESTS_CA_BUNDLE); rhone trusts the system's certificate store otherwise",
                details={"method": method, "url": url, "problem": problem},
            )
        if self.proxy is not None and isinstance(error, (httpx.ConnectError, httpx.ProxyError)):
            return RhoneError(
                f"cannot reach the Rhone API at {self.base_url} through the proxy {self.proxy.shown} "
                f"(from {self.proxy.variable}): {error}",
                code="api_unreachable",
                exit_code=ExitCode.UNREACHABLE,
                retryable=True,
                hint=f"check {self.proxy.variable}, or list the API's host in NO_PROXY to connect directly",
                details={"method": method, "url": url, "proxy": self.proxy.shown},
            )
        if isinstance(error, httpx.ConnectError):
            reason = "connection refused" if "refused" in str(error).lower() else f"cannot connect ({error})"
        elif isinstance(error, httpx.TimeoutException):
            reason = f"no answer within the request timeout ({type(error).__name__})"
        else:
            reason = f"{type(error).__name__}: {error}"
        return RhoneError(
            f"cannot reach the Rhone API at {self.base_url}: {reason}",
            code="api_unreachable",
            exit_code=ExitCode.UNREACHABLE,
            retryable=True,
            hint="is the server running (`rhone local up` for Rhone Local)? check --api-url / RHONE_API_URL",
            details={"method": method, "url": url},
        )

    def _http_error(self, response: httpx.Response, method: str, url: str) -> RhoneError:
        exit_code, fallback_code = exit_code_for_status(response.status_code)
        body = _json_or_none(response)
        payload = body.get("error") if isinstance(body, dict) else None
        if not isinstance(payload, dict):
            payload = {}
        code = str(payload.get("code") or fallback_code)
        # The server's own word first (docs/cli-contract.md): a refusal that states its exit category needs no copy of
        # the server's gate codes here; CODE_EXIT_CODES serves servers whose refusals do not state it yet.
        stated = EXIT_CATEGORIES.get(str(payload.get("exit_category")))
        exit_code = stated or CODE_EXIT_CODES.get(code, exit_code)
        message = payload.get("message") or f"{method} {url} failed with HTTP {response.status_code}"
        details = payload.get("details") if isinstance(payload.get("details"), dict) else None
        return RhoneError(
            str(message),
            code=code,
            exit_code=exit_code,
            request_id=payload.get("request_id") or response.headers.get("x-request-id"),
            operation_id=payload.get("operation_id") or (details or {}).get("operation_id"),
            retryable=response.status_code in RETRY_STATUSES,
            hint=payload.get("hint") or (details or {}).get("hint"),
            details={"status": response.status_code, **(details or {})},
        )


def _json_or_none(response: httpx.Response) -> Any:
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return None
